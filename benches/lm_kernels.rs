//! Times the kernels of the LM frame step at the real HeartMuLa-oss-3B shapes, with CUDA
//! events, on data that does not fit in L2 (weights rotate among several copies): achieved
//! bandwidth against the device-to-device copy ceiling, per matrix product and per variant
//! of the matrix-product kernel, dense bf16 and FP8 (whose output is also compared with the
//! same weights, dequantised, in f32). Every kernel's output is compared with candle's f32
//! product on the same inputs. Needs a GPU: `cargo bench --features cuda --bench lm_kernels`.

use anyhow::Result;
use candle_core::cuda_backend::cudarc::driver::sys::{
    CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Tensor};
use heartstream::lm::cuda::{
    GemvKernel, Kernels, NormWeights, RopeKv, GEMV_BF16_TO_F32_VARIANTS, GEMV_BF16_VARIANTS,
    GEMV_E4M3_TO_F32_VARIANTS, GEMV_E4M3_VARIANTS,
};
use heartstream::lm::kv_cache::KvBuffers;
use heartstream::lm::projection::Projection;
use heartstream::weights::Fp8Matrix;

/// (what, output columns, inputs, rows) of the products of one frame.
const PRODUCTS: [(&str, usize, usize, usize); 8] = [
    ("backbone q/k/v", 5120, 3072, 2),
    ("backbone output", 3072, 3072, 2),
    ("gate/up", 16384, 3072, 2),
    ("down", 3072, 8192, 2),
    ("decoder q/k/v", 6144, 3072, 2),
    ("decoder q/k/v, 2 positions", 6144, 3072, 4),
    ("projection", 3072, 3072, 2),
    ("head (f32 logits)", 8197, 3072, 2),
];
/// Weights rotate among copies totalling at least this, several times the 50 MB L2.
const ROTATION_BYTES: usize = 200 << 20;
const REPS: usize = 9;
const LAUNCHES: usize = 20;

fn main() -> Result<()> {
    let dev = Device::new_cuda(0)?;
    let kernels = Kernels::load(&dev)?;
    let copy_gbs = copy_bandwidth(&dev)?;
    println!("device-to-device copy: {copy_gbs:.0} GB/s (bytes read + written)");
    println!(
        "{:<28} {:<22} {:>9} {:>8} {:>7}",
        "product", "kernel", "µs", "GB/s", "of copy"
    );
    for (what, n, k, rows) in PRODUCTS {
        let bytes = n * k * 2;
        let copies = ROTATION_BYTES.div_ceil(bytes).max(2);
        let weights: Vec<Tensor> = (0..copies)
            .map(|_| Tensor::randn(0f32, 0.02, (n, k), &dev)?.to_dtype(DType::BF16))
            .collect::<candle_core::Result<_>>()?;
        let x = Tensor::randn(0f32, 1.0, (rows, k), &dev)?.to_dtype(DType::BF16)?;
        let (variants, out): (&[GemvKernel], _) = if what.contains("f32") {
            (&GEMV_BF16_TO_F32_VARIANTS, DType::F32)
        } else {
            (&GEMV_BF16_VARIANTS, DType::BF16)
        };
        let want = f32_product(&x, &weights[0])?;
        for &kernel in variants.iter().filter(|v| kernels.runs(v, rows, k)) {
            let us = time_us(&dev, |i| {
                kernels.gemv_with(kernel, &x, &weights[i % copies], None, out)?;
                Ok(())
            })?;
            let gbs = bytes as f64 / us / 1e3;
            let got = kernels.gemv_with(kernel, &x, &weights[0], None, out)?;
            println!(
                "{what:<28} {:<22} {us:9.2} {gbs:8.0} {:6.0}%   vs f32: {:.1e}",
                kernel.name,
                100.0 * gbs / copy_gbs,
                relative_max_diff(&got, &want)?
            );
        }
        fp8_row(&kernels, what, &weights, &x, out, copy_gbs)?;
    }
    other_kernels(&dev, &kernels)
}

/// The FP8 product on the same shape (weights quantised from the bf16 copies), for each
/// variant of the kernel: time, and the largest difference from the dense kernel on the
/// dequantised weights, relative to the output's largest magnitude.
fn fp8_row(
    kernels: &Kernels,
    what: &str,
    weights: &[Tensor],
    x: &Tensor,
    out: DType,
    copy_gbs: f64,
) -> Result<()> {
    let dev = x.device();
    let fp8: Vec<Fp8Matrix> = weights
        .iter()
        .map(|w| Ok(Fp8Matrix::quantize_tensor(w, dev)?))
        .collect::<Result<_>>()?;
    let (n, k) = weights[0].dims2()?;
    let rows = x.dim(0)?;
    let want = f32_product(x, &fp8[0].dequantize(DType::F32)?)?;
    let variants: &[GemvKernel] = if out == DType::F32 {
        &GEMV_E4M3_TO_F32_VARIANTS
    } else {
        &GEMV_E4M3_VARIANTS
    };
    for &kernel in variants.iter().filter(|v| kernels.runs(v, rows, k)) {
        let us = time_us(dev, |i| {
            kernels.gemv_fp8_with(kernel, x, &fp8[i % fp8.len()], None, out)?;
            Ok(())
        })?;
        let gbs = Fp8Matrix::bytes(n, k) as f64 / us / 1e3;
        let got = kernels.gemv_fp8_with(kernel, x, &fp8[0], None, out)?;
        println!(
            "{what:<28} {:<22} {us:9.2} {gbs:8.0} {:6.0}%   vs f32 on the same weights: {:.1e}",
            kernel.name,
            100.0 * gbs / copy_gbs,
            relative_max_diff(&got, &want)?
        );
    }
    Ok(())
}

/// `x · wᵀ` by candle in f32: the reference every kernel is compared with.
fn f32_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.to_dtype(DType::F32)?
        .matmul(&w.to_dtype(DType::F32)?.t()?)?)
}

/// The largest difference between `got` and `want`, relative to `want`'s largest magnitude.
fn relative_max_diff(got: &Tensor, want: &Tensor) -> Result<f32> {
    let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
    let diff = (got.to_dtype(DType::F32)? - want)?.abs()?.max_all()?;
    Ok(diff.to_scalar::<f32>()? / scale)
}

/// The step's other kernels, each at its largest shape in a frame.
fn other_kernels(dev: &Device, k: &Kernels) -> Result<()> {
    let bf16 = |shape: &[usize]| -> Result<Tensor> {
        Ok(Tensor::randn(0f32, 1.0, shape, dev)?.to_dtype(DType::BF16)?)
    };
    println!("{:<44} {:>9}", "kernel", "µs");
    let row = |what: &str, us: f64| println!("{what:<44} {us:9.2}");
    // Backbone attention after a 380-token prompt and 250 frames, and after 4 minutes, over
    // bf16 and FP8 caches.
    for cap in [630usize, 3380] {
        let (q, kc, vc) = (
            bf16(&[2, 24, 1, 128])?,
            bf16(&[2, 8, cap, 128])?,
            bf16(&[2, 8, cap, 128])?,
        );
        let pos = Tensor::new(&[cap as u32 - 1], dev)?;
        row(
            &format!("backbone attention over {cap} positions"),
            time_us(dev, |_| {
                k.attention(&q, KvBuffers::dense(&kc, &vc), &pos)?;
                Ok(())
            })?,
        );
        let ((k_codes, k_exps), (v_codes, v_exps)) = (k.kv_quantize(&kc)?, k.kv_quantize(&vc)?);
        let fp8 = KvBuffers {
            k: &k_codes,
            v: &v_codes,
            exponents: Some((&k_exps, &v_exps)),
        };
        row(
            &format!("backbone attention over {cap} positions, FP8"),
            time_us(dev, |_| {
                k.attention(&q, fp8, &pos)?;
                Ok(())
            })?,
        );
    }
    let (q, kc, vc) = (
        bf16(&[2, 8, 2, 384])?,
        bf16(&[2, 4, 8, 384])?,
        bf16(&[2, 4, 8, 384])?,
    );
    let pos = Tensor::new(&[0u32], dev)?;
    row(
        "decoder attention, 2 positions",
        time_us(dev, |_| {
            k.attention(&q, KvBuffers::dense(&kc, &vc), &pos)?;
            Ok(())
        })?,
    );
    let logits = Tensor::randn(0f32, 3.0, (2, 8197), dev)?;
    let state = Tensor::new(&[0u32, 0], dev)?;
    let frame = Tensor::zeros(8, DType::U32, dev)?;
    row(
        "sample (top-k 50, guidance)",
        time_us(dev, |_| {
            k.sample(&logits, 1.5, 1.0, 50, 1, &state, 0, &frame)?;
            Ok(())
        })?,
    );
    let (x, scale) = (bf16(&[2, 1, 3072])?, bf16(&[3072])?);
    row(
        "rms norm (candle)",
        time_us(dev, |_| {
            candle_nn::ops::rms_norm(&x, &scale, 1e-5)?;
            Ok(())
        })?,
    );
    let gu = bf16(&[2, 1, 16384])?;
    row(
        "silu·up",
        time_us(dev, |_| {
            k.silu_mul(&gu, 8192)?;
            Ok(())
        })?,
    );
    let qkv = bf16(&[2, 1, 5120])?;
    let (cos, sin) = (
        Tensor::zeros((8192, 64), DType::F32, dev)?,
        Tensor::zeros((8192, 64), DType::F32, dev)?,
    );
    let (kc, vc) = (bf16(&[2, 8, 630, 128])?, bf16(&[2, 8, 630, 128])?);
    let pos = Tensor::new(&[100u32], dev)?;
    let rope = RopeKv {
        cos: &cos,
        sin: &sin,
        pos: &pos,
        cache: KvBuffers::dense(&kc, &vc),
        heads: 24,
        kv_heads: 8,
    };
    row(
        "rope + kv write",
        time_us(dev, |_| {
            k.rope_kv(&qkv, &rope)?;
            Ok(())
        })?,
    );
    // The backbone's q/k/v product with its norm, then RoPE: two kernels, and the same
    // with RoPE in the product's epilogue.
    let x = bf16(&[2, 1, 3072])?;
    let w = Projection::Dense(bf16(&[5120, 3072])?);
    let norm = NormWeights {
        scale: &scale,
        eps: 1e-5,
    };
    row(
        "q/k/v product, then rope + kv write",
        time_us(dev, |_| {
            let qkv = k.project_normed(&x, &norm, &w, DType::BF16)?;
            k.rope_kv(&qkv, &rope)?;
            Ok(())
        })?,
    );
    row(
        "q/k/v product with rope + kv write",
        time_us(dev, |_| {
            k.project_rope(&x, &norm, &w, &rope)?;
            Ok(())
        })?,
    );
    Ok(())
}

/// Microseconds per call of `f`: LAUNCHES calls are captured into one CUDA graph (as the
/// frame step runs) and the median replay is divided by LAUNCHES, so host launch costs stay
/// out of the figure. `f(i)` gets the call index, to rotate its inputs.
fn time_us(dev: &Device, mut f: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let Device::Cuda(cuda) = dev else {
        anyhow::bail!("needs a CUDA device");
    };
    let stream = cuda.cuda_stream();
    let _cache = cuda.enable_cuda_graph_htod_cache();
    for i in 0..LAUNCHES {
        f(i)?;
    }
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .w()?;
    let captured = (0..LAUNCHES).try_for_each(&mut f);
    let graph = stream.end_capture(CUgraphInstantiate_flags(0)).w()?;
    captured?;
    let graph = graph.ok_or_else(|| anyhow::anyhow!("empty graph"))?;
    graph.launch().w()?;
    let mut times = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let start = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        graph.launch().w()?;
        let end = stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        times.push(start.elapsed_ms(&end).w()? as f64 * 1e3 / LAUNCHES as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[REPS / 2])
}

/// The ceiling: a large device-to-device copy, counting bytes read plus bytes written.
fn copy_bandwidth(dev: &Device) -> Result<f64> {
    let Device::Cuda(cuda) = dev else {
        anyhow::bail!("needs a CUDA device");
    };
    let n = 1usize << 30;
    let src = cuda.alloc_zeros::<u8>(n)?;
    let mut dst = cuda.alloc_zeros::<u8>(n)?;
    let us = time_us(dev, |_| {
        cuda.memcpy_dtod(&src, &mut dst)?;
        Ok(())
    })?;
    Ok((2 * n) as f64 / us / 1e3)
}
