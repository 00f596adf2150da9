//! The estimator blocks' chains of small ops as single ops: RMSNorm with the adaLN
//! modulation, the gated residual, SwiGLU. On CUDA in bf16 they are `adaln.cu` (f32 inside,
//! rounded once, where candle's ops round after each of up to ten kernels); on the CPU the
//! same arithmetic in Rust, which the tests compare with candle's ops. f32 runs keep candle's
//! ops (the fixture parity holds them to the reference's rounding).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::codec::host::{host_f32, host_storage};

/// Whether the estimator runs its fused kernels (CUDA, bf16) rather than candle's ops;
/// `HEARTSTREAM_FUSED_ESTIMATOR=0` keeps the ops, to measure what the kernels buy.
/// The kernels read 8 values (16 bytes) at a time: widths must be multiples of 16 (the
/// stacked SwiGLU input holds two halves).
pub(super) fn fused_kernels_run(x: &Tensor) -> bool {
    x.device().is_cuda()
        && x.dtype() == DType::BF16
        && x.dims().last().is_some_and(|w| w % 16 == 0)
        && switched_on()
}

/// `HEARTSTREAM_FUSED_ESTIMATOR`, read once: the blocks ask on every eager step.
fn switched_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("HEARTSTREAM_FUSED_ESTIMATOR").map_or(true, |v| v != "0"))
}

/// The widest row `rms_modulate`'s kernel holds in a warp's registers (`adaln.cu`).
pub(super) const MAX_NORM_WIDTH: usize = 4096;

/// `RMSNorm(x) · weight · (1 + scale) + shift` for `x` `(batch, frames, dim)`, shift and
/// scale being parts `part` and `part + 1` of `m` `(1 or batch, 6, dim)`.
pub fn rms_modulate(x: &Tensor, weight: &Tensor, m: &Tensor, part: usize) -> Result<Tensor> {
    let op = Op::RmsModulate { part, eps: EPS };
    x.contiguous()?
        .apply_op3_no_bwd(&weight.contiguous()?, &m.contiguous()?, &op)
}

/// `x + h · gate`, the gate being part `part` of `m` `(1 or batch, 6, dim)`.
pub fn gated_add(x: &Tensor, h: &Tensor, m: &Tensor, part: usize) -> Result<Tensor> {
    let op = Op::GatedAdd { part };
    x.contiguous()?
        .apply_op3_no_bwd(&h.contiguous()?, &m.contiguous()?, &op)
}

/// `silu(gate) · up` from the stacked projection `(batch, frames, 2·hidden)`.
pub fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    let (b, t, width) = gate_up.dims3()?;
    let rows = gate_up.contiguous()?.reshape((b * t, width))?;
    rows.apply_op1_no_bwd(&Op::SwiGlu)?
        .reshape((b, t, width / 2))
}

/// heartlib's RMSNorm epsilon.
const EPS: f32 = 1e-6;

#[derive(Debug, Clone, Copy)]
enum Op {
    RmsModulate { part: usize, eps: f32 },
    GatedAdd { part: usize },
    SwiGlu,
}

/// Rows and width of the main input, and how the modulation's rows map onto them.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    rows: usize,
    dim: usize,
    frames: usize,
    m_rows: usize,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::RmsModulate { .. } => "rms_modulate",
            Op::GatedAdd { .. } => "gated_add",
            Op::SwiGlu => "swiglu",
        }
    }

    fn sizes(&self, shapes: &[&Shape]) -> Result<(Sizes, Shape)> {
        let bad = |what: &str| {
            candle_core::Error::Msg(format!("{}: {what} (inputs {shapes:?})", self.name()))
        };
        if let Op::SwiGlu = self {
            let (rows, width) = shapes[0].dims2()?;
            if width % 16 != 0 || rows * width > i32::MAX as usize {
                return Err(bad("gate and up stacked: a width that is a multiple of 16"));
            }
            let sizes = Sizes {
                rows,
                dim: width / 2,
                frames: rows,
                m_rows: 1,
            };
            return Ok((sizes, Shape::from((rows, width / 2))));
        }
        let (batch, frames, dim) = shapes[0].dims3()?;
        let (m_rows, six, m_dim) = shapes[2].dims3()?;
        let second_ok = match *self {
            Op::RmsModulate { part, .. } => shapes[1].dims() == [dim] && part + 1 < 6,
            Op::GatedAdd { part } => shapes[1] == shapes[0] && part < 6,
            Op::SwiGlu => false, // sized above
        };
        if !second_ok || six != 6 || m_dim != dim || !(m_rows == 1 || m_rows == batch) {
            return Err(bad("x (batch, frames, dim), m (1 or batch, 6, dim)"));
        }
        let norm_fits = !matches!(self, Op::RmsModulate { .. }) || dim <= MAX_NORM_WIDTH;
        if dim % 8 != 0 || !norm_fits || batch * frames * dim > i32::MAX as usize {
            return Err(bad("dim a multiple of 8 (at most 4096 for the norm)"));
        }
        let sizes = Sizes {
            rows: batch * frames,
            dim,
            frames,
            m_rows,
        };
        Ok((sizes, shapes[0].clone()))
    }

    /// The op on host values, in f32; the caller rounds the result to the dtype.
    fn compute(&self, s: Sizes, inputs: &[Vec<f32>]) -> Vec<f32> {
        let Sizes {
            rows,
            dim,
            frames,
            m_rows,
        } = s;
        let m_part = |row: usize, part: usize| {
            let at = (if m_rows == 1 { 0 } else { row / frames } * 6 + part) * dim;
            &inputs[2][at..at + dim]
        };
        let mut out = Vec::with_capacity(rows * dim);
        for row in 0..rows {
            match *self {
                Op::RmsModulate { part, eps } => {
                    let x = &inputs[0][row * dim..][..dim];
                    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
                    let inv = 1.0 / (mean_square + eps).sqrt();
                    let (shift, scale) = (m_part(row, part), m_part(row, part + 1));
                    out.extend(
                        (0..dim).map(|i| x[i] * inv * inputs[1][i] * (1.0 + scale[i]) + shift[i]),
                    );
                }
                Op::GatedAdd { part } => {
                    let gate = m_part(row, part);
                    let at = row * dim;
                    out.extend((0..dim).map(|i| inputs[0][at + i] + inputs[1][at + i] * gate[i]));
                }
                Op::SwiGlu => {
                    let gu = &inputs[0][row * 2 * dim..][..2 * dim];
                    out.extend((0..dim).map(|j| gu[j] / (1.0 + (-gu[j]).exp()) * gu[dim + j]));
                }
            }
        }
        out
    }

    fn cpu(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let shapes: Vec<&Shape> = inputs.iter().map(|(_, l)| l.shape()).collect();
        let (sizes, shape) = self.sizes(&shapes)?;
        let values = inputs
            .iter()
            .map(|(s, l)| host_f32(s, l))
            .collect::<Result<Vec<_>>>()?;
        let out = host_storage(self.compute(sizes, &values), inputs[0].0.dtype())?;
        Ok((out, shape))
    }
}

impl CustomOp1 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu(&[(s1, l1)])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s1, l1)])
    }
}

impl CustomOp3 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(&[(s1, l1), (s2, l2), (s3, l3)])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s1, l1), (s2, l2), (s3, l3)])
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::{DType, Layout, Result, Shape};

    use super::Op;

    const SOURCE: &str = concat!(include_str!("bf16.cuh"), include_str!("adaln.cu"));
    static MODULE: crate::gpu::KernelModule =
        crate::gpu::KernelModule::new("heartstream_adaln", SOURCE);

    impl Op {
        pub(super) fn cuda(
            &self,
            inputs: &[(&CudaStorage, &Layout)],
        ) -> Result<(CudaStorage, Shape)> {
            let shapes: Vec<&Shape> = inputs.iter().map(|(_, l)| l.shape()).collect();
            let (s, shape) = self.sizes(&shapes)?;
            if inputs.iter().any(|(st, _)| st.dtype() != DType::BF16) {
                candle_core::bail!(
                    "{}: the CUDA kernel takes bf16 (f32 runs candle's ops)",
                    self.name()
                );
            }
            let views = inputs
                .iter()
                .map(|(st, l)| -> Result<CudaView<'_, half::bf16>> {
                    let Some((start, end)) = l.contiguous_offsets() else {
                        candle_core::bail!("{}: contiguous inputs only", self.name());
                    };
                    Ok(st.as_cuda_slice::<half::bf16>()?.slice(start..end))
                })
                .collect::<Result<Vec<_>>>()?;
            let dev = inputs[0].0.device();
            let func = dev.get_or_load_custom_func(
                &format!("{}_bf16", self.name()),
                MODULE.name(),
                MODULE.ptx(dev)?,
            )?;
            let total = shape.elem_count();
            // SAFETY: every kernel writes each of its `total` outputs.
            let mut out: CudaSlice<half::bf16> = unsafe { dev.alloc::<half::bf16>(total)? };
            let (dim, frames, m_rows) = (s.dim as i32, s.frames as i32, s.m_rows as i32);
            let (rows_arg, eights) = (s.rows as i32, (total / 8) as i32);
            let mut b = func.builder();
            for v in &views {
                b.arg(v);
            }
            b.arg(&mut out);
            let (part, eps) = match *self {
                Op::RmsModulate { part, eps } => (part as i32, eps),
                Op::GatedAdd { part } => (part as i32, 0.0),
                Op::SwiGlu => (0, 0.0),
            };
            let config = match *self {
                Op::RmsModulate { .. } => {
                    b.arg(&rows_arg).arg(&dim).arg(&frames).arg(&m_rows);
                    b.arg(&part).arg(&eps);
                    rows(s.rows)
                }
                Op::GatedAdd { .. } => {
                    b.arg(&eights)
                        .arg(&dim)
                        .arg(&frames)
                        .arg(&m_rows)
                        .arg(&part);
                    grid_stride(total / 8)
                }
                Op::SwiGlu => {
                    b.arg(&eights).arg(&dim);
                    grid_stride(total / 8)
                }
            };
            // SAFETY: the argument lists of adaln.cu's kernels, in order; sizes checked by
            // `Op::sizes` (the modulation parts read are within its six).
            unsafe { b.launch(config) }.w()?;
            drop(views);
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
        }
    }

    /// A warp per row, four rows per block.
    fn rows(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows.div_ceil(4) as u32, 1, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Grid-stride loops: a thread per 8 values, up to 8,192 blocks of 256.
    fn grid_stride(total: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (total.div_ceil(256).clamp(1, 8192) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    #[cfg(test)]
    mod tests {
        /// NVRTC needs no GPU: the kernels must compile for Hopper anywhere.
        #[test]
        fn adaln_kernels_compile_with_nvrtc() {
            let ptx = crate::gpu::compile("sm_90", super::SOURCE.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            for name in ["rms_modulate", "gated_add", "swiglu"] {
                assert!(
                    ptx.contains(&format!(".entry {name}_bf16(")),
                    "no kernel {name}"
                );
            }
        }
    }
}
