//! Times the codec at full size on random weights (HeartCodec-oss dimensions): each
//! window shape of the streaming schedule solved eagerly and with its Euler step captured
//! as a CUDA graph, on a normal- and a high-priority stream, and the ScalarModel decoding
//! chunks in f32 and bf16 (with its error against f32). One table on stdout.
//! Needs a GPU: `cargo bench --features cuda --bench codec`.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use heartstream::codec::{
    CodeFrames, CodecConfig, CodecPrecision, FlowStreamConfig, GaussianNoise, HeartCodec,
    SolverParams, LATENTS_PER_CODE,
};

const REPS: usize = 5;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Milliseconds of `f` (synchronised), median of REPS after one warm-up run.
fn time_ms(device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    device.synchronize()?;
    let mut times = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let started = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(times))
}

fn codec(precision: CodecPrecision) -> Result<HeartCodec> {
    let device = Device::new_cuda_with_stream(0)?;
    HeartCodec::synthetic(CodecConfig::default(), 1, &device, precision)
}

fn codes(codec: &HeartCodec, frames: usize) -> Result<CodeFrames> {
    let n = codec.config.num_quantizers;
    let size = codec.config.codebook_size as u32;
    let rows: Vec<Vec<u32>> = (0..frames)
        .map(|f| {
            (0..n)
                .map(|q| (f as u32 * 7919 + q as u32 * 104_729) % size)
                .collect()
        })
        .collect();
    Ok(CodeFrames::from_frames(&rows, &codec.config)?)
}

/// One window of `size` latents with `prefix` in-context latents, solved.
fn solve(codec: &HeartCodec, size: usize, prefix: usize, params: &SolverParams) -> Result<()> {
    let dim = codec.flow.latent_dim();
    let device = codec.flow.device();
    let tail = Tensor::randn(0f32, 1.0, (prefix.max(1), dim), device)?;
    let window = codes(codec, size / LATENTS_PER_CODE)?;
    codec.flow.inference_codes(
        &window,
        &tail,
        size,
        prefix,
        params,
        &mut GaussianNoise::new(3),
    )?;
    Ok(())
}

fn flow_table(params: SolverParams) -> Result<()> {
    let shapes = FlowStreamConfig::streaming(&CodecConfig::default()).window_shapes();
    let eager = codec(CodecPrecision::with_flow(DType::BF16))?;
    let graphed = codec(CodecPrecision::with_flow(DType::BF16))?;
    let started = Instant::now();
    graphed.flow.prepare_windows(&shapes, &params)?;
    println!(
        "{} steps: {} window shapes captured in {:.0} ms",
        params.num_steps,
        shapes.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let priority = heartstream::gpu::raise_priority(graphed.flow.device())?;
    println!("flow stream priority {priority:?}");
    println!(
        "{:>8} {:>7} {:>12} {:>12} {:>12}",
        "latents", "prefix", "eager ms", "graph ms", "TFLOP/s"
    );
    for &(size, prefix) in &shapes {
        let e = time_ms(eager.flow.device(), || solve(&eager, size, prefix, &params))?;
        let g = time_ms(graphed.flow.device(), || {
            solve(&graphed, size, prefix, &params)
        })?;
        // 2 FLOP per parameter per latent per CFG row per step (the attention aside).
        let flop = 2.0 * 1.487e9 * size as f64 * 2.0 * params.num_steps as f64;
        println!(
            "{size:>8} {prefix:>7} {e:>12.1} {g:>12.1} {:>12.0}",
            flop / g / 1e9
        );
    }
    Ok(())
}

fn decoder_table() -> Result<()> {
    let f32_codec = codec(CodecPrecision::uniform(DType::F32))?;
    let bf16_codec = codec(CodecPrecision {
        flow: DType::BF16,
        scalar: DType::BF16,
    })?;
    let device = f32_codec.scalar.device().clone();
    println!(
        "{:>8} {:>12} {:>12} {:>14}",
        "latents", "f32 ms", "bf16 ms", "bf16 rel. err"
    );
    for chunk in [25, 100, 250] {
        let latents = Tensor::randn(0f32, 1.0, (chunk, f32_codec.scalar.latent_dim()), &device)?;
        let decode = |c: &HeartCodec| -> Result<Tensor> {
            let mut stream = c.scalar.stream();
            let a = stream.push(&latents)?;
            let b = stream.finish()?;
            Ok(Tensor::cat(&[a, b], 1)?)
        };
        let t32 = time_ms(&device, || decode(&f32_codec).map(drop))?;
        let t16 = time_ms(&device, || decode(&bf16_codec).map(drop))?;
        let (a, b) = (decode(&f32_codec)?, decode(&bf16_codec)?);
        let err = ((&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?
            / a.sqr()?.sum_all()?.to_scalar::<f32>()?)
        .sqrt();
        println!("{chunk:>8} {t32:>12.2} {t16:>12.2} {err:>14.2e}");
    }
    Ok(())
}

fn main() -> Result<()> {
    for steps in [10, 5] {
        flow_table(SolverParams {
            num_steps: steps,
            guidance_scale: 1.25,
        })?;
    }
    decoder_table()
}
