//! `heartstream play`: generate and play at once, with the terminal UI.

use std::time::Duration;

use anyhow::Result;
use clap::Args;

use super::generate::summary;
use super::run::{stop_on_ctrl_c, RunArgs};
use crate::audio::{Playback, PlaybackOptions, Sink};
use crate::pipeline::{supervise, Outcome, RunControl};
use crate::tui::Display;

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

pub fn run(mut args: PlayArgs) -> Result<()> {
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
    let seed = args.run.song.sampling.fix_seed();
    let playback = match Playback::start(PlaybackOptions {
        preroll_seconds: args.preroll,
        buffer_seconds: args.buffer,
    }) {
        Ok(playing) => Some(playing),
        Err(e) => {
            without_device(&mut args.run, seed, &e);
            None
        }
    };
    let session = args.run.prepare()?;
    let mut sinks = Vec::new();
    let playback = match playback {
        Some((playback, device_sink)) => {
            sinks.push(Box::new(device_sink) as Box<dyn Sink>);
            eprintln!(
                "loaded {} in {:.1} s (seed {seed}); playing on {} at {} Hz",
                session.info.model,
                session.load_seconds(),
                playback.device_name,
                playback.device_rate
            );
            Some(playback)
        }
        None => {
            eprintln!(
                "loaded {} in {:.1} s (seed {seed})",
                session.info.model,
                session.load_seconds()
            );
            None
        }
    };
    let control = RunControl::new();
    stop_on_ctrl_c(&control)?;
    sinks.extend(args.run.output.sinks()?);
    let pipeline = session.start(sinks, control)?;
    if let Some(p) = &playback {
        pipeline.metrics().set_playback_level(p.level());
    }
    let display = match playback {
        Some(_) => Display::for_stderr(),
        None => Display::Lines,
    };
    supervise(
        &pipeline,
        playback.as_ref(),
        display.watcher(&session.info)?.as_mut(),
    )?;
    let report = pipeline.join()?;
    let Some(playback) = playback else {
        eprintln!("{}", summary(&report));
        return Ok(());
    };
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

/// With no audio output (a server, a container), the song still gets made: into the
/// `--out` file if one was given, else into `heartstream-SEED.wav` here, and the user is
/// told where and how to listen.
fn without_device(run: &mut RunArgs, seed: u64, error: &anyhow::Error) {
    let out = run
        .output
        .out
        .get_or_insert_with(|| format!("heartstream-{seed}.wav").into())
        .clone();
    eprintln!(
        "no audio output here ({error:#}); writing the song to {} instead. To listen as it \
         is made elsewhere: heartstream generate --stream-to stdout | aplay -f S16_LE -c 2 -r 48000",
        out.display()
    );
}
