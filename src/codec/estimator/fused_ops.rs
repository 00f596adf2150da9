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

/// The widest row the norm kernels take: a block of `MAX_NORM_THREADS` (512) threads, 8 values
/// each (`adaln.cu`).
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

/// The norm that reads a gated residual: its weight, modulation `(1 or batch, 6, dim)` and the
/// part of that modulation where its shift is (its scale follows).
#[derive(Debug, Clone)]
pub struct NormAfter<'a> {
    pub weight: &'a Tensor,
    pub m: &'a Tensor,
    pub part: usize,
}

/// `sum = x + h · gate` (part `gate_part` of `m`) and `rms_modulate(sum, …norm)`: the gated
/// residual and the norm that reads it, one pass over the rows on CUDA in bf16 (the values
/// of the two ops, bit for bit); elsewhere the two ops.
pub fn gated_add_rms_modulate(
    x: &Tensor,
    h: &Tensor,
    m: &Tensor,
    gate_part: usize,
    norm: NormAfter<'_>,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if fused_kernels_run(x) && x.dim(2)? <= MAX_NORM_WIDTH {
        let op = ResidualNorm {
            weight: norm.weight.contiguous()?,
            m_norm: norm.m.contiguous()?,
            gate_part,
            norm_part: norm.part,
        };
        let both = x
            .contiguous()?
            .apply_op3_no_bwd(&h.contiguous()?, &m.contiguous()?, &op)?;
        return Ok((both.get(0)?, both.get(1)?));
    }
    let sum = gated_add(x, h, m, gate_part)?;
    let normed = rms_modulate(&sum, norm.weight, norm.m, norm.part)?;
    Ok((sum, normed))
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

/// [`gated_add_rms_modulate`]'s kernel: inputs x, h and the gate's modulation; the norm's
/// weight and modulation ride along. Output `(2, batch, frames, dim)`: the sum, the norm.
#[cfg(feature = "cuda")]
struct ResidualNorm {
    weight: Tensor,
    m_norm: Tensor,
    gate_part: usize,
    norm_part: usize,
}

#[cfg(feature = "cuda")]
impl ResidualNorm {
    /// The sizes of both ops, which must agree, and the output shape.
    fn sizes(&self, shapes: &[&Shape]) -> Result<(Sizes, Shape)> {
        let gate = Op::GatedAdd {
            part: self.gate_part,
        };
        let (sizes, shape) = gate.sizes(shapes)?;
        let norm = Op::RmsModulate {
            part: self.norm_part,
            eps: EPS,
        };
        let norm_shapes = [shapes[0], self.weight.shape(), self.m_norm.shape()];
        let (norm_sizes, _) = norm.sizes(&norm_shapes)?;
        if norm_sizes.m_rows != sizes.m_rows {
            candle_core::bail!(
                "gated_add_rms_modulate: modulations of {} and {} rows",
                sizes.m_rows,
                norm_sizes.m_rows
            );
        }
        let mut dims = vec![2];
        dims.extend_from_slice(shape.dims());
        Ok((sizes, Shape::from(dims)))
    }
}

#[cfg(feature = "cuda")]
impl CustomOp3 for ResidualNorm {
    fn name(&self) -> &'static str {
        "gated_add_rms_modulate"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "gated_add_rms_modulate runs its kernel on CUDA only (the host runs the two ops)"
        )
    }

    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda([(s1, l1), (s2, l2), (s3, l3)])
    }
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
    use candle_core::{CustomOp3, DType, Layout, Result, Shape, Storage};

    use super::{Op, ResidualNorm, EPS};

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
            let views = inputs
                .iter()
                .map(|&(st, l)| bf16_view(st, l, self.name()))
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
                    rows(s.rows, s.dim)
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

    /// The bf16 elements of a contiguous input.
    fn bf16_view<'a>(
        storage: &'a CudaStorage,
        layout: &Layout,
        op: &str,
    ) -> Result<CudaView<'a, half::bf16>> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{op}: contiguous inputs only");
        };
        if storage.dtype() != DType::BF16 {
            candle_core::bail!("{op}: the CUDA kernel takes bf16 (f32 runs candle's ops)");
        }
        Ok(storage.as_cuda_slice::<half::bf16>()?.slice(start..end))
    }

    impl ResidualNorm {
        pub(super) fn cuda(
            &self,
            inputs: [(&CudaStorage, &Layout); 3],
        ) -> Result<(CudaStorage, Shape)> {
            let shapes = inputs.map(|(_, l)| l.shape());
            let (s, shape) = self.sizes(&shapes)?;
            let name = self.name();
            let [x, h, m] = inputs.map(|(st, l)| bf16_view(st, l, name));
            let (x, h, m) = (x?, h?, m?);
            let (w_storage, w_layout) = self.weight.storage_and_layout();
            let (n_storage, n_layout) = self.m_norm.storage_and_layout();
            let (Storage::Cuda(w_storage), Storage::Cuda(n_storage)) = (&*w_storage, &*n_storage)
            else {
                candle_core::bail!("{name}: the norm's weight and modulation must be on the GPU");
            };
            let weight = bf16_view(w_storage, w_layout, name)?;
            let m_norm = bf16_view(n_storage, n_layout, name)?;
            let dev = inputs[0].0.device();
            let func = dev.get_or_load_custom_func(
                &format!("{name}_bf16"),
                MODULE.name(),
                MODULE.ptx(dev)?,
            )?;
            // SAFETY: the kernel writes both halves, every element.
            let mut out: CudaSlice<half::bf16> =
                unsafe { dev.alloc::<half::bf16>(shape.elem_count())? };
            let (rows, dim, frames, m_rows) = (
                s.rows as i32,
                s.dim as i32,
                s.frames as i32,
                s.m_rows as i32,
            );
            let (gate_part, norm_part) = (self.gate_part as i32, self.norm_part as i32);
            let mut b = func.builder();
            b.arg(&x)
                .arg(&h)
                .arg(&m)
                .arg(&weight)
                .arg(&m_norm)
                .arg(&mut out);
            b.arg(&rows).arg(&dim).arg(&frames).arg(&m_rows);
            b.arg(&gate_part).arg(&norm_part).arg(&EPS);
            // SAFETY: gated_add_rms_modulate_bf16's arguments in order; both ops' sizes checked
            // by `ResidualNorm::sizes` (the parts read are within the modulations' six).
            unsafe { b.launch(self::rows(s.rows, s.dim)) }.w()?;
            Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
        }
    }

    /// A block per row of `dim` values, a thread per 8 of them, whole warps.
    fn rows(rows: usize, dim: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: ((dim / 8).next_multiple_of(32) as u32, 1, 1),
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
