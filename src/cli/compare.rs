//! `heartstream compare-windows`: the same codes decoded with heartlib's 29.76 s windows and
//! with the streaming schedule, compared window by window (see `analysis::windows`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::args::{CodecArgs, ModelArgs};
use super::run::StreamArgs;
use crate::analysis::windows::compare_windows;
use crate::codec::CodeSanitizer;
use crate::models::load_codec;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Codes JSON written by `heartstream codes`
    #[arg(long, value_name = "FILE")]
    pub codes: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub codec: CodecArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    /// Seed of the flow-matching noise (the baseline uses seed + 1)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON line per window instead of the table
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: CompareArgs) -> Result<()> {
    let device = args.model.device()?;
    let choice = args.model.choice(&device, args.seed);
    let (codec, _) = load_codec(&choice, &device, args.model.codec_precision(&device))?;
    let flow = args.stream.flow_config(&codec.config, &args.codec)?;
    let mut frames = crate::codes_file::read(&args.codes, codec.config.num_quantizers)?;
    let mut sanitizer = CodeSanitizer::new(codec.config.codebook_size, codec.config.num_quantizers);
    frames.iter_mut().for_each(|f| sanitizer.clean(f));
    let rows = compare_windows(&codec, &frames, flow, args.seed)
        .with_context(|| format!("comparing the windows of --codes {}", args.codes.display()))?;
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
        args.seed + 1
    );
    Ok(())
}
