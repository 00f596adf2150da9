//! `heartstream compare-windows`: the same codes decoded with heartlib's 29.76 s windows and
//! with the streaming schedule, compared window by window (see `analysis::windows`).

use anyhow::{Context, Result};
use clap::Args;

use super::args::{CodesInputArgs, LoadedCodes};
use super::run::StreamArgs;
use crate::analysis::windows::compare_windows;

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub input: CodesInputArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Print one JSON line per window instead of the table
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let LoadedCodes { codec, frames } = args.input.load()?;
    let flow = args.stream.flow_config(&codec.config, &args.input.codec)?;
    let seed = args.input.seed;
    let rows = compare_windows(&codec, &frames, flow, seed).with_context(|| {
        format!(
            "comparing the windows of --codes {}",
            args.input.codes.display()
        )
    })?;
    let mut text = String::new();
    if args.json {
        for row in &rows {
            text += &(serde_json::to_string(row)? + "\n");
        }
        return super::write_stdout(&text, "the comparison");
    }
    text += &format!(
        "{:>6} {:>9} {:>9} {:>8} {:>10} {:>12} {:>14} {:>16}\n",
        "window",
        "from s",
        "to s",
        "latents",
        "SNR dB",
        "log-mel dB",
        "baseline SNR",
        "baseline log-mel"
    );
    for r in &rows {
        text += &format!(
            "{:>6} {:>9.2} {:>9.2} {:>8} {:>10.2} {:>12.2} {:>14.2} {:>16.2}\n",
            r.index,
            r.start_s,
            r.end_s,
            r.size,
            r.snr_db,
            r.log_mel_db,
            r.baseline_snr_db,
            r.baseline_log_mel_db
        );
    }
    super::write_stdout(&text, "the comparison")?;
    eprintln!(
        "streaming vs heartlib's windows; baseline: heartlib's windows vs themselves with seed {} \
         (two decodes from different noise)",
        seed + 1
    );
    Ok(())
}
