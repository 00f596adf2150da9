//! `heartstream decode`: codes JSON → WAV through HeartCodec, offline (heartlib's
//! `detokenize`), reporting how long the codec took.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::args::{CodesInputArgs, LoadedCodes};
use crate::audio::{interleave, Sink, WavSink};
use crate::codec::{detokenize, CodeFrames, DetokenizeParams, GaussianNoise, Join};
use crate::files::OutputFile;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum JoinArg {
    /// heartlib's: each window decoded alone, linear cross-fade over the overlap
    Reference,
    /// heartstream's streaming decode of the continuous latent stream (no cross-fade)
    Streaming,
}

#[derive(Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub input: CodesInputArgs,
    /// How windows are joined into one waveform
    #[arg(long, value_enum, default_value = "reference")]
    pub join: JoinArg,
    /// Output WAV (48 kHz stereo, 32-bit float)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run(args: DecodeArgs) -> Result<()> {
    let params = DetokenizeParams {
        solver: args.input.codec.solver()?,
        ..DetokenizeParams::default()
    };
    OutputFile::check(&args.out, "--out")?;
    let LoadedCodes { codec, frames } = args.input.load()?;
    let codes = CodeFrames::from_frames(&frames, &codec.config)
        .with_context(|| format!("--codes {}", args.input.codes.display()))?;
    let join = match args.join {
        JoinArg::Reference => Join::Reference,
        JoinArg::Streaming => Join::Streaming,
    };
    // Captured before the clock starts, as a streaming run does while loading.
    codec
        .flow
        .prepare_windows(&params.window_shapes(&codec.config), &params.solver)?;
    codec.scalar.prepare_decode()?;
    let start = Instant::now();
    let out = detokenize(
        &codec,
        &codes,
        &params,
        &mut GaussianNoise::new(args.input.seed),
        join,
    )?;
    let seconds = start.elapsed().as_secs_f64();
    let samples = interleave(&out.audio)?;
    let mut wav = WavSink::create(&args.out, "--out")?;
    wav.write(&samples)?;
    wav.finish()?;
    let audio_seconds = (samples.len() / 2) as f64 * codec.config.rates().seconds_per_sample();
    eprintln!(
        "{audio_seconds:.2} s of audio decoded in {seconds:.2} s (real-time factor {:.3}) → {}",
        seconds / audio_seconds,
        args.out.display()
    );
    Ok(())
}
