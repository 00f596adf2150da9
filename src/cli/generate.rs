//! `heartstream generate`: the streaming pipeline into a WAV file and/or a pipe.

use anyhow::{bail, Result};
use clap::Args;

use super::run::{stop_on_ctrl_c, RunArgs};
use crate::pipeline::{supervise, Outcome, RunControl, RunReport};
use crate::tui::Display;

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

pub fn run(mut args: GenerateArgs) -> Result<()> {
    if !args.run.output.any() {
        bail!("nothing to write: give --out FILE.wav and/or --stream-to stdout (or use `play`)");
    }
    let session = args.run.prepare()?;
    eprintln!(
        "loaded {} in {:.1} s (seed {})",
        session.info.model,
        session.load_seconds(),
        session.info.seed
    );
    let control = RunControl::new();
    stop_on_ctrl_c(&control)?;
    let pipeline = session.start(args.run.output.sinks()?, control)?;
    supervise(
        &pipeline,
        None,
        Display::Lines.watcher(&session.info)?.as_mut(),
    )?;
    let report = pipeline.join()?;
    eprintln!("{}", summary(&report));
    Ok(())
}

/// The closing line of a run.
pub fn summary(report: &RunReport) -> String {
    let audio = report.audio_seconds();
    let how = match (report.outcome, &report.decode.output_closed) {
        (Outcome::OutputClosed, Some(what)) => what.clone(),
        (Outcome::OutputClosed, None) => "output closed".into(),
        (Outcome::Completed, _) => "done".into(),
        (Outcome::Stopped, _) => "stopped".into(),
    };
    let mut line = format!(
        "{how}: {} frames, {audio:.2} s of audio in {:.2} s",
        report.lm.frame_ms.len(),
        report.wall_seconds,
    );
    if audio > 0.0 {
        line += &format!(" (real-time factor {:.3})", report.wall_seconds / audio);
    }
    if let Some(t) = report.ttfa_seconds {
        line += &format!(", first audio after {:.0} ms", t * 1e3);
    }
    if report.lm.replaced_codes > 0 {
        line += &format!(
            ", {} special codes held at the previous code",
            report.lm.replaced_codes
        );
    }
    line
}
