//! Synthetic weights made on the GPU (`synthetic.cu`): the same hash and roundings as the
//! host's, so the values are identical, without making billions of them on a few host cores
//! and copying them over (8–10 s of the full-size start-up). Every tensor's first and last
//! values are checked against the host's; a difference turns GPU generation off for the
//! process, with a warning, and the host makes them instead.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, DType, Result, Tensor};

use super::synthetic::Draw;

/// Values compared with the host's at each end of every tensor.
const CHECKED: usize = 1024;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// The tensor made on `dev`, or `None` where the host must make it (another dtype, or GPU
/// generation turned off).
pub(super) fn tensor(
    draw: &Draw,
    shape: &[usize],
    dtype: DType,
    dev: &CudaDevice,
) -> Result<Option<Tensor>> {
    if DISABLED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let made = match dtype {
        DType::F32 => fill::<f32>(draw, shape, dev, "synthetic_f32")?,
        DType::BF16 => fill::<half::bf16>(draw, shape, dev, "synthetic_bf16")?,
        _ => return Ok(None),
    };
    let Some(t) = made else { return Ok(None) };
    if let Some(i) = first_difference(draw, &t)? {
        DISABLED.store(true, Ordering::Relaxed);
        tracing::warn!(
            "synthetic weights made on the GPU differ from the host's at element {i}; \
             making them on the host from now on"
        );
        return Ok(None);
    }
    Ok(Some(t))
}

fn fill<T: CudaDType + candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
    draw: &Draw,
    shape: &[usize],
    dev: &CudaDevice,
    kernel: &str,
) -> Result<Option<Tensor>> {
    let n: usize = shape.iter().product();
    if n == 0 {
        return Ok(None);
    }
    let Some(ptx) = super::kernels::ptx(dev)? else {
        DISABLED.store(true, Ordering::Relaxed);
        return Ok(None);
    };
    let func = dev.get_or_load_custom_func(kernel, super::kernels::MODULE, ptx)?;
    // SAFETY: the kernel writes every one of the n elements.
    let mut out: CudaSlice<T> = unsafe { dev.alloc::<T>(n)? };
    let (count, key, center, half_width) = (n as u64, draw.key, draw.center, draw.half_width);
    let mut launch = func.builder();
    launch.arg(&mut out);
    launch.arg(&count);
    launch.arg(&key);
    launch.arg(&center);
    launch.arg(&half_width);
    const THREADS: usize = 256;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(THREADS).clamp(1, 8192) as u32, 1, 1),
        block_dim: (THREADS as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's (T*, u64, u64, float, float).
    unsafe { launch.launch(cfg) }.w()?;
    Ok(Some(crate::gpu::tensor_of(out, dev, shape)))
}

/// The first of the checked elements (each end of the tensor) that is not the host's value.
fn first_difference(draw: &Draw, t: &Tensor) -> Result<Option<usize>> {
    let n = t.elem_count();
    let ends = [(0, CHECKED.min(n)), (n.saturating_sub(CHECKED), n)];
    for (from, to) in ends {
        let got = super::kernels::elements_to_host(t, from..to)?;
        for (j, g) in got.iter().enumerate() {
            let want = draw.value(from + j);
            let want = match t.dtype() {
                DType::BF16 => half::bf16::from_f32(want).to_f32(),
                _ => want,
            };
            if g.to_bits() != want.to_bits() {
                return Ok(Some(from + j));
            }
        }
    }
    Ok(None)
}
