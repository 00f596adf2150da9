//! The LM's frame step alone (no codec beside it): full-size random weights, CFG batch of 2,
//! top-k 50, the captured GPU step as the engine runs it. Prints the prompt's time and the
//! frames' p50 / mean / p90 milliseconds, per precision, one line each.
//!
//! `cargo bench --features cuda --bench lm_frame -- [bf16|fp8]... [--frames N] [--kv fp8]`
//! (`--kv fp8`: the backbone's KV cache in FP8, as `--kv-precision fp8`).
//!
//! With `HEARTSTREAM_PROFILE_FRAME=i`, frame i (after the step is captured) runs between
//! `cuProfilerStart` and `cuProfilerStop`, so that a profiler started with its collection
//! off (`ncu --profile-from-start off`) sees exactly one frame's kernels.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::{DType, Device};
use heartstream::lm::{
    FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, KvPrecision, LmConfig,
    MatrixPrecision, Prompt, SamplingParams,
};

const SEED: u64 = 1;

fn main() -> Result<()> {
    let mut precisions = Vec::new();
    let mut frames = 250;
    let mut kv = KvPrecision::Dense;
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "bf16" => precisions.push(MatrixPrecision::Dense),
            "fp8" => precisions.push(MatrixPrecision::Fp8),
            "--frames" => frames = args.next().context("--frames needs a count")?.parse()?,
            "--kv" => {
                kv = match args.next().as_deref() {
                    Some("fp8") => KvPrecision::Fp8,
                    Some("bf16") => KvPrecision::Dense,
                    other => bail!("--kv takes bf16 or fp8, got {other:?}"),
                }
            }
            other => bail!("unknown argument {other:?} (expected bf16, fp8, --frames N, --kv K)"),
        }
    }
    if precisions.is_empty() {
        precisions = vec![MatrixPrecision::Dense, MatrixPrecision::Fp8];
    }
    let profiled: Option<usize> = match std::env::var("HEARTSTREAM_PROFILE_FRAME") {
        Ok(v) => Some(v.parse().context("HEARTSTREAM_PROFILE_FRAME")?),
        Err(_) => None,
    };
    let device = Device::new_cuda(0)?;
    for precision in precisions {
        run(&device, precision, kv, frames, profiled)?;
    }
    Ok(())
}

fn run(
    device: &Device,
    precision: MatrixPrecision,
    kv: KvPrecision,
    frames: usize,
    profiled: Option<usize>,
) -> Result<()> {
    let gen = GenConfig::default();
    let model = Arc::new(HeartMuLa::synthetic(
        LmConfig::oss_3b(),
        SEED,
        device,
        DType::BF16,
        precision,
    )?);
    // ~300 prompt positions, as a verse and a chorus of lyrics give.
    let lyrics: Vec<u32> = (0..280).map(|i| 1000 + (i * 37) % 5000).collect();
    let prompt = Prompt::from_ids(vec![500, 501, 502, 503, 504, 505], lyrics, &gen);
    let options = GenerationOptions {
        sampling: SamplingParams {
            temperature: 1.0,
            topk: 50,
            cfg_scale: 1.5,
            seed: SEED,
        },
        max_frames: frames,
        stop_at_eos: false,
        kv,
    };
    let mut generator = FrameGenerator::new(model, gen, prompt, options)?;
    let mut ms = Vec::with_capacity(frames);
    for i in 0..frames {
        let profile = profiled == Some(i);
        if profile {
            device.synchronize()?;
            unsafe { sys::cuProfilerStart() }.result()?;
        }
        let start = Instant::now();
        if generator.next_frame()?.is_none() {
            break;
        }
        ms.push(start.elapsed().as_secs_f64() * 1e3);
        if profile {
            unsafe { sys::cuProfilerStop() }.result()?;
        }
    }
    // Frame 0 reads the prompt; frame 1 runs eagerly and is captured.
    let prompt_ms = ms[0];
    let mut steady = ms[2.min(ms.len())..].to_vec();
    steady.sort_by(f64::total_cmp);
    let at = |q: f64| steady[((steady.len() - 1) as f64 * q) as usize];
    let mean = steady.iter().sum::<f64>() / steady.len() as f64;
    println!(
        "{precision:?} (KV {kv:?}): prompt {prompt_ms:.1} ms; {} frames: p50 {:.3} ms, mean {mean:.3}, p90 {:.3}",
        steady.len(),
        at(0.5),
        at(0.9)
    );
    Ok(())
}
