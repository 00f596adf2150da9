//! The estimator's attention as one op over the qkv projection's output: RoPE on q and k,
//! softmax(q·kᵀ/√d) with f32 statistics, times v, written as `(batch, frames, heads·d)`.
//! On CUDA in bf16 it is `attention.cu` on tensor cores (no score matrix in memory, no
//! permuted copies); on the CPU the same arithmetic in Rust, rounded where the kernel
//! rounds, which the tests compare with candle's unfused ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use crate::codec::host::{host_f32, host_storage};

/// `qkv` `(batch, frames, 3·heads·head_dim)` as the projection writes it (q, k, v, each
/// head-major), `cos`/`sin` `(frames, head_dim / 2)`: the heads' outputs side by side,
/// `(batch, frames, heads·head_dim)`.
pub fn fused_attention(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
    qkv.contiguous()?.apply_op3_no_bwd(
        &cos.contiguous()?,
        &sin.contiguous()?,
        &FusedAttention { heads },
    )
}

/// Whether the estimator runs [`fused_attention`] rather than candle's ops: where its other
/// fused kernels run and the kernel has the head width.
pub(super) fn fused_attention_runs(x: &Tensor, head_dim: usize) -> bool {
    super::fused_ops::fused_kernels_run(x) && matches!(head_dim, 64 | 128)
}

#[derive(Debug, Clone, Copy)]
struct FusedAttention {
    heads: usize,
}

/// The sizes the op loops over, checked against its inputs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    batch: usize,
    frames: usize,
    heads: usize,
    head_dim: usize,
}

impl FusedAttention {
    fn sizes(&self, qkv: &Shape, cos: &Shape, sin: &Shape) -> Result<Sizes> {
        let (batch, frames, width) = qkv.dims3()?;
        let heads = self.heads;
        let head_dim = width / (3 * heads.max(1));
        let half = head_dim / 2;
        if heads == 0 || width != 3 * heads * head_dim || head_dim % 2 != 0 {
            candle_core::bail!("fused attention: qkv {qkv:?} is not (batch, frames, 3·{heads}·d)");
        }
        if cos.dims() != [frames, half] || sin.dims() != [frames, half] {
            candle_core::bail!(
                "fused attention: RoPE tables {cos:?}/{sin:?}, expected ({frames}, {half})"
            );
        }
        // The kernels' grids hold batch·heads (and batch) in their second dimension.
        if batch * heads > 65_535 {
            candle_core::bail!("fused attention: {batch} rows of {heads} heads, at most 65,535");
        }
        Ok(Sizes {
            batch,
            frames,
            heads,
            head_dim,
        })
    }

    /// The op on host values: each rotated q/k element and each probability fed to the
    /// product rounded with `round`, statistics and sums in f32.
    fn compute(s: Sizes, qkv: &[f32], cos: &[f32], sin: &[f32], round: fn(f32) -> f32) -> Vec<f32> {
        let Sizes {
            batch,
            frames,
            heads,
            head_dim: d,
        } = s;
        let width = heads * d;
        let scale = 1.0 / (d as f32).sqrt();
        let mut out = vec![0f32; batch * frames * width];
        let rotated = |b: usize, part: usize, h: usize| -> Vec<f32> {
            let mut r = vec![0f32; frames * d];
            for t in 0..frames {
                let at = (b * frames + t) * 3 * width + part * width + h * d;
                for i in 0..d / 2 {
                    let (x0, x1) = (qkv[at + 2 * i], qkv[at + 2 * i + 1]);
                    let (c, sn) = (cos[t * d / 2 + i], sin[t * d / 2 + i]);
                    r[t * d + 2 * i] = round(round(x0 * c) - round(x1 * sn));
                    r[t * d + 2 * i + 1] = round(round(x0 * sn) + round(x1 * c));
                }
            }
            r
        };
        for b in 0..batch {
            for h in 0..heads {
                let (q, k) = (rotated(b, 0, h), rotated(b, 1, h));
                let v =
                    |u: usize, j: usize| qkv[(b * frames + u) * 3 * width + 2 * width + h * d + j];
                for t in 0..frames {
                    let scores: Vec<f32> = (0..frames)
                        .map(|u| (0..d).map(|j| q[t * d + j] * k[u * d + j]).sum::<f32>() * scale)
                        .collect();
                    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let p: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = p.iter().sum();
                    let row = &mut out[(b * frames + t) * width + h * d..][..d];
                    for (j, o) in row.iter_mut().enumerate() {
                        let acc: f32 = (0..frames).map(|u| round(p[u]) * v(u, j)).sum();
                        *o = acc / sum;
                    }
                }
            }
        }
        out
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "dit_fused_attention"
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
        let sizes = self.sizes(l1.shape(), l2.shape(), l3.shape())?;
        let (qkv, cos, sin) = (host_f32(s1, l1)?, host_f32(s2, l2)?, host_f32(s3, l3)?);
        let shape = Shape::from((sizes.batch, sizes.frames, sizes.heads * sizes.head_dim));
        let round: fn(f32) -> f32 = match s1.dtype() {
            DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
            _ => |x| x,
        };
        let out = Self::compute(sizes, &qkv, &cos, &sin, round);
        Ok((host_storage(out, s1.dtype())?, shape))
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
        let sizes = self.sizes(l1.shape(), l2.shape(), l3.shape())?;
        let out = cuda::launch(sizes, (s1, l1), (s2, l2), (s3, l3))?;
        let shape = Shape::from((sizes.batch, sizes.frames, sizes.heads * sizes.head_dim));
        Ok((out, shape))
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaStorage, WrapErr};
    use candle_core::{DType, Layout, Result};

    use super::Sizes;

    const SOURCE: &str = concat!(include_str!("bf16.cuh"), include_str!("attention.cu"));
    static MODULE: crate::gpu::KernelModule =
        crate::gpu::KernelModule::new("heartstream_dit_attention", SOURCE);

    fn view<'a>((storage, layout): (&'a CudaStorage, &Layout)) -> Result<CudaView<'a, half::bf16>> {
        match layout.contiguous_offsets() {
            // The kernel reads 8 elements (16 bytes) at a time from aligned addresses.
            Some((start, end)) if start % 8 == 0 => {
                Ok(storage.as_cuda_slice::<half::bf16>()?.slice(start..end))
            }
            _ => candle_core::bail!(
                "fused attention needs contiguous inputs at offsets of 8 elements"
            ),
        }
    }

    pub(super) fn launch(
        s: Sizes,
        qkv: (&CudaStorage, &Layout),
        cos: (&CudaStorage, &Layout),
        sin: (&CudaStorage, &Layout),
    ) -> Result<CudaStorage> {
        if [qkv.0, cos.0, sin.0]
            .iter()
            .any(|st| st.dtype() != DType::BF16)
        {
            candle_core::bail!("the fused attention kernel takes bf16 (f32 runs candle's ops)");
        }
        if !matches!(s.head_dim, 64 | 128) {
            candle_core::bail!(
                "the fused attention kernel has head widths 64 and 128, not {}",
                s.head_dim
            );
        }
        let dev = qkv.0.device();
        let func = |name: &str| -> Result<_> {
            let kernel = format!("{name}_d{}", s.head_dim);
            dev.get_or_load_custom_func(&kernel, MODULE.name(), MODULE.ptx(dev)?)
        };
        let (q, c, sn) = (view(qkv)?, view(cos)?, view(sin)?);
        let rows = s.batch * s.frames * s.heads;
        let (frames, heads) = (s.frames as i32, s.heads as i32);
        // SAFETY: q and k rotated once, (batch, frames, 2, heads, head_dim): the rotation
        // writes every element.
        let mut qk: CudaSlice<half::bf16> =
            unsafe { dev.alloc::<half::bf16>(rows * 2 * s.head_dim)? };
        const ROPE_THREADS: usize = 128;
        let frame_vectors = 2 * s.heads * s.head_dim / 8;
        let rope = func("dit_rope_qk")?;
        let mut b = rope.builder();
        b.arg(&q).arg(&c).arg(&sn).arg(&mut qk);
        b.arg(&frames).arg(&heads);
        let config = LaunchConfig {
            grid_dim: (
                s.frames as u32,
                frame_vectors.div_ceil(ROPE_THREADS) as u32,
                s.batch as u32,
            ),
            block_dim: (ROPE_THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const bf16* ×3, bf16*, int, int), sizes checked by `FusedAttention::sizes`;
        // head_dim is 64 or 128 (the kernels).
        unsafe { b.launch(config) }.w()?;

        // SAFETY: every output element is written (every frame of every head).
        let mut out: CudaSlice<half::bf16> = unsafe { dev.alloc::<half::bf16>(rows * s.head_dim)? };
        let scale_log2 = std::f32::consts::LOG2_E / (s.head_dim as f32).sqrt();
        let attention = func("dit_attention")?;
        let mut b = attention.builder();
        b.arg(&qk).arg(&q).arg(&mut out);
        b.arg(&frames).arg(&heads).arg(&scale_log2);
        let tiling = Tiling::of(s.head_dim);
        let config = LaunchConfig {
            grid_dim: (
                s.frames.div_ceil(tiling.queries_per_block()) as u32,
                (s.batch * s.heads) as u32,
                1,
            ),
            block_dim: (32 * tiling.warps as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: (const bf16*, const bf16*, bf16*, int, int, float), as above.
        unsafe { b.launch(config) }.w()?;
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }

    /// How `dit_attention_d{head_dim}` divides a window's queries (DIT_ATTENTION in
    /// attention.cu): slices of 16 query rows a warp, warps a block.
    struct Tiling {
        slices: usize,
        warps: usize,
    }

    impl Tiling {
        fn of(head_dim: usize) -> Self {
            let slices = if head_dim == 64 { 2 } else { 1 };
            Self { slices, warps: 4 }
        }

        fn queries_per_block(&self) -> usize {
            16 * self.slices * self.warps
        }
    }

    #[cfg(test)]
    mod tests {
        /// NVRTC needs no GPU: both head widths must compile for Hopper anywhere.
        #[test]
        fn attention_kernels_compile_with_nvrtc() {
            let ptx = crate::gpu::compile("sm_90", super::SOURCE.to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            for d in [64, 128] {
                assert!(
                    ptx.contains(&format!(".entry dit_attention_d{d}(")),
                    "no kernel d{d}"
                );
            }
            assert!(
                ptx.contains("mma.sync.aligned.m16n8k16"),
                "no tensor-core product"
            );
        }
    }
}
