//! `heartstream play`: generate and play at once, with the terminal UI.

use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;

use super::generate::summary;
use super::run::{stop_on_ctrl_c, RunArgs};
use crate::audio::{Playback, PlaybackOptions, Sink};
use crate::pipeline::{Outcome, RunControl};
use crate::tui::{watch, Display};

#[derive(Args, Debug)]
pub struct PlayArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Seconds of audio buffered before playback starts (and after an underrun)
    #[arg(
        long,
        default_value_t = 0.5,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub preroll: f64,
    /// Seconds of audio the playback buffer holds; generation waits when it is full
    #[arg(
        long,
        default_value_t = 30.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub buffer: f64,
}

const NO_DEVICE_ADVICE: &str = "Without an audio device, stream or write instead:\n  \
heartstream generate --stream-to stdout | aplay -f S16_LE -c 2 -r 48000\n  \
heartstream generate --stream-to stdout | sox -t raw -r 48000 -e signed -b 16 -c 2 - song.flac\n  \
heartstream generate --out song.wav";

pub fn run(args: PlayArgs) -> Result<()> {
    for (flag, v) in [("--preroll", args.preroll), ("--buffer", args.buffer)] {
        anyhow::ensure!(
            v.is_finite() && v >= 0.0,
            "{flag} {v} is invalid: expected seconds ≥ 0"
        );
    }
    anyhow::ensure!(
        args.buffer > args.preroll,
        "--buffer {} must exceed --preroll {}",
        args.buffer,
        args.preroll
    );
    let mut sinks = args.run.output.sinks()?;
    let (playback, device_sink) = Playback::start(PlaybackOptions {
        preroll_seconds: args.preroll,
        buffer_seconds: args.buffer,
    })
    .map_err(|e| anyhow!("cannot play audio here ({e:#}).\n{NO_DEVICE_ADVICE}"))?;
    sinks.push(Box::new(device_sink) as Box<dyn Sink>);
    let session = args.run.prepare()?;
    eprintln!(
        "loaded {} in {:.1} s; playing on {} at {} Hz",
        session.info.model, session.load_seconds, playback.device_name, playback.device_rate
    );
    let control = RunControl::new();
    stop_on_ctrl_c(&control)?;
    let pipeline = session.start(sinks, control)?;
    pipeline.metrics().set_playback_level(playback.level());
    watch(
        &pipeline,
        &session.info,
        Some(&playback),
        Display::for_stderr(),
        &mut || {},
    )?;
    let report = pipeline.join()?;
    if report.outcome == Outcome::Completed {
        playback.drain(Duration::from_secs(5))?;
    }
    let stats = playback.stats();
    eprintln!(
        "{}; played {:.2} s, {} underruns",
        summary(&report),
        stats.played_seconds,
        stats.underruns
    );
    Ok(())
}
