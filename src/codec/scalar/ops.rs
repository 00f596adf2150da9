//! The streaming convolutions' own ops around the matrix products: a conv's column matrix
//! read straight from its history and the new frames (no concatenated copy, and laid out
//! so that `weight @ columns` is already `(batch, out, frames)`), the epilogue (bias, PReLU,
//! residual) in one pass where candle took five, and the transposed conv's overlap-add.
//! On CUDA they are kernels of `conv.cu`; on the CPU the same arithmetic in Rust (f32,
//! rounded in the same order), which the tests compare with candle's own ops.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use crate::codec::host::{host_f32, host_storage};

/// `(batch, channels · k, n)`: column `t` holds the `k` frames output `t` reads, row
/// `c·k + j` frame `t + j·dilation` of channel `c`, the frames being `history` `(batch,
/// channels, dilation · (k − 1))` followed by `x` `(batch, channels, n)`.
pub(super) fn stream_columns(
    history: &Tensor,
    x: &Tensor,
    k: usize,
    dilation: usize,
) -> Result<Tensor> {
    history
        .contiguous()?
        .apply_op2_no_bwd(&x.contiguous()?, &Op::Columns { k, dilation })
}

/// `prelu(y + bias) (+ residual)` with `y` `(batch, channels, n)` and `bias` `(channels)`; a
/// slope of 1 is no activation.
pub(super) fn bias_act(
    y: &Tensor,
    bias: &Tensor,
    slope: f32,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    let (y, bias) = (y.contiguous()?, bias.contiguous()?);
    let op = Op::BiasAct { slope };
    match residual {
        Some(r) => y.apply_op3_no_bwd(&bias, &r.contiguous()?, &op),
        None => y.apply_op2_no_bwd(&bias, &op),
    }
}

/// The causal ConvTranspose1d's output `(batch, channels, n · stride)` from every frame's
/// full kernel response `(batch, channels · 2·stride, n + 1)` (frame 0 the previous
/// chunk's last): each output takes the first half of its frame's response plus the second
/// half of the frame before, then the bias.
pub(super) fn overlap_add(response: &Tensor, bias: &Tensor, stride: usize) -> Result<Tensor> {
    response
        .contiguous()?
        .apply_op2_no_bwd(&bias.contiguous()?, &Op::OverlapAdd { stride })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Columns { k: usize, dilation: usize },
    BiasAct { slope: f32 },
    OverlapAdd { stride: usize },
}

/// The sizes a kernel loops over, checked against the inputs.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    channels: usize,
    /// Frames of the op's main input (`x`, `y`; the response's minus one).
    n: usize,
    /// History frames (`Columns` only).
    span: usize,
}

impl Op {
    fn name(&self) -> &'static str {
        match self {
            Op::Columns { .. } => "stream_columns",
            Op::BiasAct { .. } => "bias_act",
            Op::OverlapAdd { .. } => "overlap_add",
        }
    }

    /// Checks the shapes of `inputs` and returns the loop sizes and the output shape.
    fn sizes(&self, inputs: &[&Shape]) -> Result<(Sizes, Shape)> {
        let bad = |what: &str| {
            candle_core::Error::Msg(format!("{}: {what} (inputs {inputs:?})", self.name()))
        };
        match *self {
            Op::Columns { k, dilation } => {
                let (batch, channels, span) = inputs[0].dims3()?;
                let (b, c, n) = inputs[1].dims3()?;
                if (b, c) != (batch, channels) || span != dilation * (k - 1) || n == 0 {
                    return Err(bad(
                        "history and frames must agree, span = dilation·(k − 1)",
                    ));
                }
                let sizes = Sizes { channels, n, span };
                Ok((sizes, Shape::from((batch, channels * k, n))))
            }
            Op::BiasAct { .. } => {
                let (_, channels, n) = inputs[0].dims3()?;
                let residual_ok = inputs.get(2).is_none_or(|r| *r == inputs[0]);
                if inputs[1].dims() != [channels] || !residual_ok {
                    return Err(bad("bias must be (channels), residual like y"));
                }
                let sizes = Sizes {
                    channels,
                    n,
                    span: 0,
                };
                Ok((sizes, inputs[0].clone()))
            }
            Op::OverlapAdd { stride } => {
                let (batch, rows, frames) = inputs[0].dims3()?;
                let channels = inputs[1].dims1()?;
                if rows != channels * 2 * stride || frames == 0 {
                    return Err(bad("the response must have channels·2·stride rows"));
                }
                let n = frames - 1;
                let sizes = Sizes {
                    channels,
                    n,
                    span: 0,
                };
                Ok((sizes, Shape::from((batch, channels, n * stride))))
            }
        }
    }

    /// The op on host values (f32, each operation rounded like the kernel's).
    fn compute(&self, s: Sizes, inputs: &[Vec<f32>], out: &mut [f32]) {
        let Sizes {
            channels, n, span, ..
        } = s;
        match *self {
            Op::Columns { k, dilation } => {
                let (history, x) = (&inputs[0], &inputs[1]);
                for (i, v) in out.iter_mut().enumerate() {
                    let (t, row) = (i % n, i / n);
                    let (j, bc) = (row % k, row / k);
                    let f = t + j * dilation;
                    *v = if f < span {
                        history[bc * span + f]
                    } else {
                        x[bc * n + f - span]
                    };
                }
            }
            Op::BiasAct { slope } => {
                let (y, bias) = (&inputs[0], &inputs[1]);
                for (i, v) in out.iter_mut().enumerate() {
                    let mut a = y[i] + bias[(i / n) % channels];
                    if a <= 0.0 {
                        a *= slope;
                    }
                    *v = match inputs.get(2) {
                        Some(r) => a + r[i],
                        None => a,
                    };
                }
            }
            Op::OverlapAdd { stride } => {
                let (r, bias) = (&inputs[0], &inputs[1]);
                let samples = n * stride;
                for (i, v) in out.iter_mut().enumerate() {
                    let (sample, bo) = (i % samples, i / samples);
                    let (t, q) = (sample / stride, sample % stride);
                    let rows = bo * 2 * stride;
                    let own = r[(rows + q) * (n + 1) + t + 1];
                    let carried = r[(rows + stride + q) * (n + 1) + t];
                    *v = (own + carried) + bias[bo % channels];
                }
            }
        }
    }

    fn cpu(&self, inputs: &[(&CpuStorage, &Layout)]) -> Result<(CpuStorage, Shape)> {
        let shapes: Vec<&Shape> = inputs.iter().map(|(_, l)| l.shape()).collect();
        let (sizes, shape) = self.sizes(&shapes)?;
        let values = inputs
            .iter()
            .map(|(s, l)| host_f32(s, l))
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![0f32; shape.elem_count()];
        self.compute(sizes, &values, &mut out);
        Ok((host_storage(out, inputs[0].0.dtype())?, shape))
    }
}

impl CustomOp2 for Op {
    fn name(&self) -> &'static str {
        Op::name(self)
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.cpu(&[(s1, l1), (s2, l2)])
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        self.cuda(&[(s1, l1), (s2, l2)])
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
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::{CudaStorage, DType, Layout, Result, Shape};

    use super::{Op, Sizes};

    static MODULE: crate::gpu::KernelModule =
        crate::gpu::KernelModule::new("heartstream_scalar", include_str!("conv.cu"));

    impl Op {
        pub(super) fn cuda(
            &self,
            inputs: &[(&CudaStorage, &Layout)],
        ) -> Result<(CudaStorage, Shape)> {
            let shapes: Vec<&Shape> = inputs.iter().map(|(_, l)| l.shape()).collect();
            let (sizes, shape) = self.sizes(&shapes)?;
            let storage = inputs[0].0;
            let out = match storage.dtype() {
                DType::F32 => self.launch::<f32>("f32", sizes, &shape, inputs)?,
                DType::BF16 => self.launch::<half::bf16>("bf16", sizes, &shape, inputs)?,
                other => candle_core::bail!("{}: {other:?} is not supported", self.name()),
            };
            Ok((out, shape))
        }

        fn launch<T: CudaDType + DeviceRepr>(
            &self,
            suffix: &str,
            s: Sizes,
            shape: &Shape,
            inputs: &[(&CudaStorage, &Layout)],
        ) -> Result<CudaStorage> {
            let dev = inputs[0].0.device();
            let views = inputs
                .iter()
                .map(|(st, l)| -> Result<CudaView<'_, T>> {
                    let Some((start, end)) = l.contiguous_offsets() else {
                        candle_core::bail!("the decoder's ops need contiguous inputs");
                    };
                    Ok(st.as_cuda_slice::<T>()?.slice(start..end))
                })
                .collect::<Result<Vec<_>>>()?;
            let total = shape.elem_count();
            let func = dev.get_or_load_custom_func(
                &format!("{}_{suffix}", self.name_in_module()),
                MODULE.name(),
                MODULE.ptx(dev)?,
            )?;
            // SAFETY: every kernel writes each of its `total` outputs.
            let mut out: CudaSlice<T> = unsafe { dev.alloc::<T>(total)? };
            let (total_arg, channels, n) = (total as i64, s.channels as i32, s.n as i32);
            let null = 0u64;
            let mut b = func.builder();
            match *self {
                Op::Columns { k, dilation } => {
                    let (span, k, dilation) = (s.span as i32, k as i32, dilation as i32);
                    b.arg(&views[0])
                        .arg(&views[1])
                        .arg(&mut out)
                        .arg(&total_arg);
                    b.arg(&channels).arg(&span).arg(&n).arg(&k).arg(&dilation);
                    // SAFETY: (const T*, const T*, T*, long, int ×5), sizes checked above.
                    unsafe { b.launch(config(total)) }.w()?;
                }
                Op::BiasAct { slope } => {
                    b.arg(&views[0]).arg(&views[1]);
                    match views.get(2) {
                        Some(residual) => b.arg(residual),
                        None => b.arg(&null),
                    };
                    b.arg(&mut out)
                        .arg(&total_arg)
                        .arg(&channels)
                        .arg(&n)
                        .arg(&slope);
                    // SAFETY: (const T*, const T*, const T* or null, T*, long, int, int,
                    // float), sizes checked above.
                    unsafe { b.launch(config(total)) }.w()?;
                }
                Op::OverlapAdd { stride } => {
                    let stride = stride as i32;
                    b.arg(&views[0])
                        .arg(&views[1])
                        .arg(&mut out)
                        .arg(&total_arg);
                    b.arg(&channels).arg(&n).arg(&stride);
                    // SAFETY: (const T*, const T*, T*, long, int ×3), sizes checked above.
                    unsafe { b.launch(config(total)) }.w()?;
                }
            }
            drop(views);
            Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
        }

        fn name_in_module(&self) -> &'static str {
            match self {
                Op::Columns { .. } => "im2col_stream",
                Op::BiasAct { .. } => "bias_act",
                Op::OverlapAdd { .. } => "overlap_add",
            }
        }
    }

    /// Grid-stride loops: a thread per element, up to 8,192 blocks of 256 (then each
    /// thread takes several).
    fn config(total: usize) -> LaunchConfig {
        const THREADS: u32 = 256;
        let blocks = total.div_ceil(THREADS as usize).clamp(1, 8192) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    #[cfg(test)]
    mod tests {
        /// NVRTC needs no GPU: the kernels must compile for Hopper on any build machine,
        /// without a contracted multiply-add (the f32 path rounds like the unfused ops).
        #[test]
        fn decoder_kernels_compile_with_nvrtc_without_contractions() {
            let ptx = crate::gpu::compile("sm_90", include_str!("conv.cu").to_string())
                .unwrap_or_else(|e| panic!("{e}"));
            for op in ["im2col_stream", "bias_act", "overlap_add"] {
                for dtype in ["f32", "bf16"] {
                    let name = format!(".entry {op}_{dtype}(");
                    assert!(ptx.contains(&name), "no kernel {op}_{dtype}");
                }
            }
            assert!(
                !ptx.contains("fma.rn.f32"),
                "a contracted multiply-add in the PTX"
            );
        }
    }
}
