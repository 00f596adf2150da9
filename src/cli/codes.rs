//! `heartstream codes`: the LM alone, writing the generated frames to a JSON file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::args::{SongArgs, FRAMES_PER_SECOND};
use crate::lm::{FrameGenerator, GenerationOptions, Prompt};
use crate::models::load_lm;
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

pub fn run(args: CodesArgs) -> Result<()> {
    let SongArgs {
        model,
        prompt,
        sampling,
    } = &args.song;
    let device = model.device()?;
    let seed = sampling.seed();
    let max_frames = sampling.max_frames()?;
    let params = sampling.params(seed)?;
    let choice = model.choice(&device, seed);
    let lm = load_lm(&choice, &device, model.lm_dtype(&device))?;
    eprintln!(
        "loaded {} on {} in {:.1} s (seed {seed})",
        choice.describe(),
        crate::device::describe(&device),
        lm.load_seconds
    );

    let prompt = Prompt::from_text(&prompt.tags()?, &prompt.lyrics()?, &lm.tokenizer, &lm.gen)?;
    let options = GenerationOptions {
        sampling: params,
        max_frames,
        stop_at_eos: !sampling.ignore_eos,
    };
    let mut generator = if args.host_steps {
        FrameGenerator::new_traced(lm.model.clone(), lm.gen, prompt, options)?
    } else {
        FrameGenerator::new(lm.model.clone(), lm.gen, prompt, options)?
    };
    let start = Instant::now();
    let mut frames = Vec::new();
    let mut frame_ms = Vec::new();
    let mut last = start;
    while let Some(frame) = generator.next_frame()? {
        frames.push(frame);
        let now = Instant::now();
        frame_ms.push((now - last).as_secs_f64() * 1e3);
        last = now;
    }
    let seconds = start.elapsed().as_secs_f64();
    crate::codes_file::write(&args.out, &frames)?;
    let audio = frames.len() as f64 / FRAMES_PER_SECOND;
    eprintln!(
        "{} frames ({audio:.2} s of audio) in {seconds:.2} s: {:.2} frames/s, real-time factor {:.3} → {}",
        frames.len(),
        frames.len() as f64 / seconds,
        seconds / audio,
        args.out.display()
    );
    if let Some(steady) = FrameTimes::steady_state(&frame_ms) {
        eprintln!(
            "first frame (prompt) {:.1} ms; later frames {:.2} ms mean, {:.2} p50, {:.2} p90",
            frame_ms[0], steady.mean, steady.p50, steady.p90
        );
    }
    Ok(())
}
