//! Times the codec at full size on random weights (HeartCodec-oss dimensions): each
//! window shape of the streaming schedule solved eagerly and with its Euler step captured
//! as a CUDA graph (and captured with the blocks' matrices in FP8, `--flow-precision fp8`),
//! on a normal- and a high-priority stream, and the ScalarModel's steady
//! steps eager and captured, in f32, TF32 and bf16 (with their error against f32 eager).
//! One table on stdout.
//! Needs a GPU: `cargo bench --features cuda --bench codec`.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use heartstream::codec::{
    CodeFrames, CodecConfig, CodecPrecision, FlowStreamConfig, GaussianNoise, HeartCodec,
    SolverParams, LATENTS_PER_CODE,
};
use heartstream::weights::MatrixPrecision;

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

/// The window shapes' times: captured in bf16; with `all`, eager and with FP8 matrices too.
fn flow_table(params: SolverParams, all: bool) -> Result<()> {
    let shapes = FlowStreamConfig::streaming(&CodecConfig::default()).window_shapes();
    let graphed = codec(CodecPrecision::with_flow(DType::BF16))?;
    let others = match all {
        true => Some((
            codec(CodecPrecision::with_flow(DType::BF16))?,
            codec(CodecPrecision {
                flow_matrices: MatrixPrecision::Fp8,
                ..CodecPrecision::with_flow(DType::BF16)
            })?,
        )),
        false => None,
    };
    if let Some((_, fp8)) = &others {
        fp8.flow.prepare_windows(&shapes, &params)?;
    }
    let started = Instant::now();
    graphed.flow.prepare_windows(&shapes, &params)?;
    println!(
        "{} steps: {} window shapes captured in {:.0} ms",
        params.num_steps,
        shapes.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let priority = heartstream::gpu::raise_priority(graphed.flow.device())?;
    if let Some((_, fp8)) = &others {
        heartstream::gpu::raise_priority(fp8.flow.device())?;
    }
    println!("flow stream priority {priority:?}");
    println!(
        "{:>8} {:>7} {:>12} {:>12} {:>12} {:>12}",
        "latents", "prefix", "eager ms", "graph ms", "TFLOP/s", "fp8 graph ms"
    );
    let timed =
        |c: &HeartCodec, size, prefix| time_ms(c.flow.device(), || solve(c, size, prefix, &params));
    for &(size, prefix) in &shapes {
        let g = timed(&graphed, size, prefix)?;
        let (e, f) = match &others {
            Some((eager, fp8)) => (timed(eager, size, prefix)?, timed(fp8, size, prefix)?),
            None => (f64::NAN, f64::NAN),
        };
        // 2 FLOP per parameter per latent per CFG row per step (the attention aside).
        let flop = 2.0 * 1.487e9 * size as f64 * 2.0 * params.num_steps as f64;
        println!(
            "{size:>8} {prefix:>7} {e:>12.1} {g:>12.1} {:>12.0} {f:>12.1}",
            flop / g / 1e9
        );
    }
    Ok(())
}

/// A decoder variant of the table: the codec's ScalarModel in one dtype, with or without
/// its step captured, with or without TF32 products.
struct Decoder {
    name: &'static str,
    codec: HeartCodec,
    captured: bool,
    tf32: bool,
}

impl Decoder {
    fn new(name: &'static str, scalar: DType, captured: bool, tf32: bool) -> Result<Self> {
        let codec = codec(CodecPrecision {
            flow: DType::BF16,
            flow_matrices: MatrixPrecision::Dense,
            scalar,
            tf32: false, // switched per measurement, below
        })?;
        Ok(Self {
            name,
            codec,
            captured,
            tf32,
        })
    }

    /// Milliseconds per steady step of `latents` (look-ahead filled) and the audio of
    /// `STEPS` such steps.
    fn steady_steps(&self, latents: &Tensor) -> Result<(f64, Tensor)> {
        const STEPS: usize = 8;
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(self.tf32);
        let scalar = &self.codec.scalar;
        let n = latents.dim(0)?;
        if self.captured {
            scalar.prepare_steps(n)?;
        }
        let mut stream = scalar.stream()?;
        anyhow::ensure!(stream.step_latents() == self.captured.then_some(n));
        stream.push(latents)?;
        stream.push(latents)?;
        let device = scalar.device();
        device.synchronize()?;
        let started = Instant::now();
        let audio = (0..STEPS)
            .map(|_| stream.push(latents))
            .collect::<Result<Vec<_>>>()?;
        device.synchronize()?;
        let ms = started.elapsed().as_secs_f64() * 1e3 / STEPS as f64;
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(false);
        Ok((ms, Tensor::cat(&audio, 1)?))
    }
}

/// Relative RMS difference of `b` from `a`.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    let err = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?;
    Ok((err / a.sqr()?.sum_all()?.to_scalar::<f32>()?).sqrt())
}

/// Steady ScalarModel steps (look-ahead filled, as in a stream) of 25, 32 and 100 latents:
/// f32 eager (the reference's arithmetic), f32 with the step captured, TF32 products, bf16;
/// each with its error against f32 eager on the same latents.
fn decoder_table() -> Result<()> {
    let variants = [
        Decoder::new("f32 eager", DType::F32, false, false)?,
        Decoder::new("f32 captured", DType::F32, true, false)?,
        Decoder::new("tf32 eager", DType::F32, false, true)?,
        Decoder::new("tf32 captured", DType::F32, true, true)?,
        Decoder::new("bf16 captured", DType::BF16, true, false)?,
    ];
    let device = variants[0].codec.scalar.device().clone();
    let width = variants[0].codec.scalar.latent_dim();
    println!(
        "{:>8} {:>14} {:>10} {:>10} {:>12}",
        "latents", "decoder", "ms/step", "RTF", "rel. err"
    );
    for chunk in [25, 32, 100] {
        let latents = Tensor::randn(0f32, 1.0, (chunk, width), &device)?;
        let audio_s = chunk as f64 * variants[0].codec.config.rates().seconds_per_latent();
        let mut reference = None;
        for v in &variants {
            let (ms, audio) = v.steady_steps(&latents)?;
            let reference = reference.get_or_insert(audio.clone());
            let err = rel_err(reference, &audio)?;
            println!(
                "{chunk:>8} {:>14} {ms:>10.2} {:>10.4} {err:>12.2e}",
                v.name,
                ms / 1e3 / audio_s
            );
        }
    }
    Ok(())
}

/// What `codec profile [LATENTS]` runs, for a kernel profiler to break down: one eager Euler
/// step of a streaming window (default the largest, 744 latents; its context as the schedule
/// gives it) and two eager decoder steps of 25 latents.
fn profile(latents: Option<&str>) -> Result<()> {
    let shapes = FlowStreamConfig::streaming(&CodecConfig::default()).window_shapes();
    let size = latents.map_or(Ok(744), str::parse)?;
    let Some(&(size, prefix)) = shapes.iter().find(|(s, _)| *s == size) else {
        anyhow::bail!("no streaming window of {size} latents: the shapes are {shapes:?}");
    };
    let c = codec(CodecPrecision::with_flow(DType::BF16))?;
    let one_step = SolverParams {
        num_steps: 1,
        guidance_scale: 1.25,
    };
    solve(&c, size, prefix, &one_step)?;
    let latents = Tensor::randn(0f32, 1.0, (25, c.scalar.latent_dim()), c.scalar.device())?;
    let mut stream = c.scalar.stream()?;
    stream.push(&latents)?;
    stream.push(&latents)?;
    Ok(c.scalar.device().synchronize()?)
}

/// `codec` (every table), `codec windows` (the captured windows at 10 steps: to compare
/// kernels quickly) or `codec profile [LATENTS]`.
fn main() -> Result<()> {
    let params = |num_steps| SolverParams {
        num_steps,
        guidance_scale: 1.25,
    };
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("profile") => profile(args.get(2).map(String::as_str)),
        Some("windows") => flow_table(params(10), false),
        _ => {
            flow_table(params(10), true)?;
            flow_table(params(5), true)?;
            decoder_table()
        }
    }
}
