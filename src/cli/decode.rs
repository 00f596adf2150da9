//! `heartstream decode`: codes JSON → WAV through HeartCodec, offline (heartlib's
//! `detokenize`), reporting how long the codec took.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::args::{CodecArgs, ModelArgs};
use crate::audio::{interleave, Sink, WavSink};
use crate::codec::{detokenize, CodeFrames, CodeSanitizer, DetokenizeParams, GaussianNoise, Join};
use crate::files::OutputFile;
use crate::models::load_codec;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum JoinArg {
    /// heartlib's: each window decoded alone, linear cross-fade over the overlap
    Reference,
    /// heartstream's streaming decode of the continuous latent stream (no cross-fade)
    Streaming,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    /// Codes JSON written by `heartstream codes`
    #[arg(long, value_name = "FILE")]
    pub codes: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub codec: CodecArgs,
    /// How windows are joined into one waveform
    #[arg(long, value_enum, default_value = "reference")]
    pub join: JoinArg,
    /// Seed of the flow-matching noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output WAV (48 kHz stereo, 32-bit float)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: DecodeArgs) -> Result<()> {
    let params = DetokenizeParams {
        solver: args.codec.solver()?,
        ..DetokenizeParams::default()
    };
    OutputFile::check(&args.out, "--out")?;
    let device = args.model.device()?;
    let choice = args.model.choice(&device, args.seed);
    let (codec, load_seconds) = load_codec(&choice, &device, args.model.codec_precision(&device))?;
    eprintln!(
        "loaded the codec of {} in {load_seconds:.1} s (seed {})",
        choice.describe(),
        args.seed
    );
    let mut frames = crate::codes_file::read(&args.codes, codec.config.num_quantizers)?;
    // As in the streaming pipeline: special ids (EOS, with `codes --ignore-eos`) hold the
    // previous code of their codebook.
    let mut sanitizer = CodeSanitizer::new(codec.config.codebook_size, codec.config.num_quantizers);
    frames.iter_mut().for_each(|f| sanitizer.clean(f));
    if sanitizer.replaced > 0 {
        eprintln!(
            "{} special codes (≥ codebook size {}) held at the previous code of their codebook",
            sanitizer.replaced, codec.config.codebook_size
        );
    }
    let codes = CodeFrames::from_frames(&frames, &codec.config)
        .with_context(|| format!("--codes {}", args.codes.display()))?;
    let join = match args.join {
        JoinArg::Reference => Join::Reference,
        JoinArg::Streaming => Join::Streaming,
    };
    // Captured before the clock starts, as a streaming run does while loading.
    codec
        .flow
        .prepare_windows(&params.window_shapes(&codec.config), &params.solver)?;
    let start = Instant::now();
    let out = detokenize(
        &codec,
        &codes,
        &params,
        &mut GaussianNoise::new(args.seed),
        join,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let samples = interleave(&out.audio)?;
    let mut wav = WavSink::create(&args.out, "--out")?;
    wav.write(&samples)?;
    wav.finish()?;
    let audio_seconds = samples.len() as f64 / 2.0 / codec.config.sample_rate as f64;
    eprintln!(
        "{audio_seconds:.2} s of audio decoded in {seconds:.2} s (real-time factor {:.3}) → {}",
        seconds / audio_seconds,
        args.out.display()
    );
    Ok(())
}
