//! `heartstream codes`: the LM alone, writing the generated frames to a JSON file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::args::SongArgs;
use super::run::PROMPT_POSITIONS;
use crate::codec::CodecPrecision;
use crate::files::OutputFile;
use crate::lm::{FrameGenerator, Prompt};
use crate::memory::{KvSize, MemoryEstimate};
use crate::models::{codec_config, lm_config, load_lm};
use crate::stats::FrameTimes;

#[derive(Args, Debug)]
pub struct CodesArgs {
    #[command(flatten)]
    pub song: SongArgs,
    /// Where to write the frames (JSON: frames × codebooks tokens)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Run every frame on the host's schedule instead of the GPU's captured step (slower;
    /// for checking the GPU step against plain candle ops)
    #[arg(long, hide = true)]
    pub host_steps: bool,
}

pub fn run(mut args: CodesArgs) -> Result<()> {
    // A bad --out fails before the model loads; the file is written only at the end.
    OutputFile::check(&args.out, "--out")?;
    let SongArgs {
        model,
        prompt,
        sampling,
    } = &mut args.song;
    let device = model.device()?;
    let seed = sampling.fix_seed();
    let choice = model.choice(&device, seed);
    let codec = codec_config(&choice)?;
    let rates = codec.rates();
    let mut options = sampling.generation(&choice, rates)?;
    let dtype = model.lm_dtype(&device);
    // Only the LM loads: the estimate is checked without the codec's weights.
    let estimate = |matrices| {
        let kv = KvSize {
            rows: options.sampling.batch(),
            positions: options.max_frames + PROMPT_POSITIONS,
            precision: model.kv_precision(matrices),
        };
        let lm = lm_config(&choice)?;
        MemoryEstimate::of(
            &lm,
            dtype,
            matrices,
            kv,
            &codec,
            CodecPrecision::with_flow(dtype),
        )
        .check(&device, true)
    };
    let matrices = model.lm_matrices(|m| estimate(m).is_ok());
    estimate(matrices)?;
    options.kv = model.kv_precision(matrices);
    let lm = load_lm(&choice, &device, dtype, matrices)?;
    eprintln!(
        "loaded {} on {} in {:.1} s (seed {seed})",
        choice.describe(),
        crate::device::describe(&device),
        lm.load_seconds
    );

    let prompt = Prompt::from_text(&prompt.tags()?, &prompt.lyrics()?, &lm.tokenizer, &lm.gen)?;
    let mut generator = if args.host_steps {
        FrameGenerator::new_traced(lm.model.clone(), lm.gen, prompt, options)?
    } else {
        FrameGenerator::new(lm.model.clone(), lm.gen, prompt, options)?
    };
    // Ctrl-C (or SIGTERM) ends the song early; the frames made so far are still written.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Release))
        .context("cannot install the Ctrl-C/SIGTERM handler")?;
    let start = Instant::now();
    let mut frames = Vec::new();
    let mut frame_ms = Vec::new();
    let mut last = start;
    while !stop.load(Ordering::Acquire) {
        let Some(frame) = generator.next_frame()? else {
            break;
        };
        frames.push(frame);
        let now = Instant::now();
        frame_ms.push((now - last).as_secs_f64() * 1e3);
        last = now;
    }
    let seconds = start.elapsed().as_secs_f64();
    if frames.is_empty() {
        anyhow::bail!(
            "stopped before the first frame: {} was not written",
            args.out.display()
        );
    }
    let out = OutputFile::create(&args.out, "--out")?;
    let target = out.target().to_path_buf();
    crate::codes_file::write(out, rates.frames_per_second(), &frames)?;
    let audio = frames.len() as f64 * rates.seconds_per_frame();
    eprintln!(
        "{} frames ({audio:.2} s of audio) in {seconds:.2} s: {:.2} frames/s, real-time factor {:.3} → {}",
        frames.len(),
        frames.len() as f64 / seconds,
        seconds / audio.max(1e-9),
        target.display()
    );
    if let Some(steady) = FrameTimes::steady_state(&frame_ms) {
        eprintln!(
            "first frame (prompt) {:.1} ms; later frames {:.2} ms mean, {:.2} p50, {:.2} p90",
            frame_ms[0], steady.mean, steady.p50, steady.p90
        );
    }
    Ok(())
}
