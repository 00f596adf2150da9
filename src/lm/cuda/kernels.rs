//! Launchers for the kernels in `kernels/`: compiled once per process with NVRTC for the
//! device's architecture and loaded into candle's CUDA device, so they run on the same stream
//! as candle's own kernels (and are captured into the same graph).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaStream, DevicePtr, LaunchConfig,
};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{bail, CudaDevice, DType, Device, Result, Shape, Storage, Tensor};

use crate::lm::kv_cache::KvBuffers;
use crate::lm::kv_fp8::KV_GROUP;
use crate::lm::projection::Projection;
use crate::lm::transformer::NormWeights;
use crate::weights::Fp8Matrix;

/// The kernel sources, concatenated in dependency order into one NVRTC program.
const SOURCES: [&str; 11] = [
    include_str!("kernels/common.cuh"),
    crate::hash::SPLITMIX64_CUDA,
    crate::weights::E4M3_CUDA,
    include_str!("kernels/kv_fp8.cu"),
    include_str!("kernels/rope_kv.cu"),
    include_str!("kernels/gemv.cu"),
    include_str!("kernels/gemv_mma.cu"),
    include_str!("kernels/mlp.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/sampling.cu"),
    include_str!("kernels/step.cu"),
];
const MODULE: &str = "heartstream_lm";

const FUNCTIONS: [&str; 43] = [
    "gemv_f32",
    "gemv_bf16",
    "gemv_bf16_to_f32",
    "gemv_bf16_mma",
    "gemv_bf16_mma_rope",
    "gemv_bf16_mma_to_f32",
    "gemv_e4m3_mma",
    "gemv_e4m3_mma_rope",
    "gemv_e4m3_mma_u6",
    "gemv_e4m3_mma_u6_rope",
    "gemv_e4m3_mma_u8",
    "gemv_e4m3_mma_u8_rope",
    "gemv_e4m3_mma_to_f32",
    "gemv_e4m3_mma_to_f32_u6",
    "gemv_e4m3_f32",
    "gemv_e4m3_bf16",
    "gemv_e4m3_bf16_to_f32",
    "gemv_e4m3_bf16_r2",
    "gemv_e4m3_bf16_r4",
    "gemv_bf16_r1_b8",
    "gemv_bf16_r1_b16",
    "gemv_bf16_r4_b4",
    "silu_mul_f32",
    "silu_mul_bf16",
    "rms_norm_f32",
    "rms_norm_bf16",
    "rope_kv_f32",
    "rope_kv_bf16",
    "attention_f32",
    "attention_bf16",
    "attention_e4m3_f32",
    "attention_e4m3_bf16",
    "attention_rows_bf16_c1",
    "attention_rows_bf16_c3",
    "attention_rows_f32_c2",
    "attention_rows_e4m3_bf16_c1",
    "kv_quantize_f32",
    "kv_quantize_bf16",
    "kv_dequantize_f32",
    "kv_dequantize_bf16",
    "sample_topk",
    "frame_ids",
    "advance",
];

/// One compiled module for the whole process (all devices share an architecture here), and
/// how long getting it took (from the disk cache, or NVRTC).
static PTX: OnceLock<std::result::Result<(String, KernelBuild), String>> = OnceLock::new();

/// How the LM kernels were obtained at start-up, for `bench`'s load report.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct KernelBuild {
    pub ms: f64,
    pub from_disk_cache: bool,
}

impl Kernels {
    /// How this process got its kernels (`None` before the first CUDA model loaded).
    pub fn build() -> Option<KernelBuild> {
        PTX.get().and_then(|r| r.as_ref().ok()).map(|(_, b)| *b)
    }
}

/// Query heads sharing one kv head that the attention kernel supports.
const ATTENTION_MAX_GROUP: usize = 4;
/// Keys per attention block: the cache is split into blocks of at most this many positions.
const ATTENTION_KEYS_PER_BLOCK: usize = 128;
/// Attention completion counters, one per (batch row, kv head, position) of a call.
const ATTENTION_COUNTERS: usize = 1024;

/// The one-pass attention kernels (`attention_rows` in attention.cu): (query dtype, FP8
/// cache, chunks of a row per lane (16 bytes of queries), most query heads per kv head,
/// kernel). Other shapes take `attention`.
const ROWS_KERNELS: [(DType, bool, usize, usize, &str); 4] = [
    (DType::BF16, false, 1, 3, "attention_rows_bf16_c1"),
    (DType::BF16, false, 3, 2, "attention_rows_bf16_c3"),
    (DType::F32, false, 2, 3, "attention_rows_f32_c2"),
    (DType::BF16, true, 1, 3, "attention_rows_e4m3_bf16_c1"),
];
/// Threads of an `attention_rows` block (ROWS_WARPS warps).
const ROWS_THREADS: usize = 128;
/// At most this many key splits per (row, kv head, position) for `attention_rows`: longer
/// caches get more keys per block, so that merging the splits stays short.
const ROWS_MAX_SPLITS: usize = 32;
/// At most this many key splits for any attention kernel (MERGE_MAX_SPLITS in attention.cu).
const MERGE_MAX_SPLITS: usize = 64;

/// A matrix-product kernel and how it is launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemvKernel {
    pub name: &'static str,
    /// Output columns per warp (blocks are 8 warps).
    pub columns_per_warp: usize,
    /// Uses `mma.sync` (sm_80 and later) and stages x in shared memory: 2·K bytes per row
    /// of x and `stage_pad` more (as `row_bytes` of its tiles in `gemv_mma.cu`).
    pub tensor_cores: bool,
    stage_pad: usize,
    /// Tensor-core kernels: segments (4 × 16 bytes of a weight row) a warp has in flight.
    unroll: usize,
    /// Its twin with RoPE and the KV-cache write in the epilogue (bf16 q/k/v products).
    rope: Option<&'static str>,
}

impl GemvKernel {
    const fn plain(name: &'static str, columns_per_warp: usize) -> Self {
        Self {
            name,
            columns_per_warp,
            tensor_cores: false,
            stage_pad: 0,
            unroll: 0,
            rope: None,
        }
    }

    /// 16 output rows per block of 8 warps, `unroll` segments a warp in flight
    /// (`gemv_mma.cu`).
    const fn mma(name: &'static str, stage_pad: usize, unroll: usize) -> Self {
        Self {
            name,
            columns_per_warp: 2,
            tensor_cores: true,
            stage_pad,
            unroll,
            rope: None,
        }
    }

    /// [`mma`](Self::mma) with a RoPE twin named `rope`.
    const fn mma_rope(
        name: &'static str,
        rope: &'static str,
        stage_pad: usize,
        unroll: usize,
    ) -> Self {
        Self {
            rope: Some(rope),
            ..Self::mma(name, stage_pad, unroll)
        }
    }

    /// Dynamic shared memory for `rows` rows of `k` inputs.
    fn shared_bytes(&self, rows: usize, k: usize) -> usize {
        if self.tensor_cores {
            rows * (2 * k + self.stage_pad)
        } else {
            0
        }
    }

    /// Whether each warp's segments of a row of `row_bytes` split into whole rounds of this
    /// kernel's loads (a last, partial round costs a memory round trip for little data).
    fn rounds_even(&self, row_bytes: usize) -> bool {
        let segments_per_warp = (row_bytes / 16).div_ceil(4).div_ceil(8);
        self.tensor_cores && segments_per_warp % self.unroll == 0
    }
}

/// Bytes after each staged row of x (`Bf16Tiles::row_bytes`, `E4m3Tiles::row_bytes`).
const BF16_STAGE_PAD: usize = 64;
const E4M3_STAGE_PAD: usize = 16;

/// The bf16 matrix-product kernels, compared by `benches/lm_kernels.rs`; the frame step uses
/// the tensor-core one with the most segments in flight whose rounds come out even, else the
/// first one the device runs (`Kernels::kernel_for`).
pub const GEMV_BF16_VARIANTS: [GemvKernel; 5] = [
    GemvKernel::mma_rope("gemv_bf16_mma", "gemv_bf16_mma_rope", BF16_STAGE_PAD, 4),
    GemvKernel::plain("gemv_bf16", 1),
    GemvKernel::plain("gemv_bf16_r1_b8", 1),
    GemvKernel::plain("gemv_bf16_r1_b16", 1),
    GemvKernel::plain("gemv_bf16_r4_b4", 4),
];

/// bf16 weights to f32 outputs (the logits), likewise.
pub const GEMV_BF16_TO_F32_VARIANTS: [GemvKernel; 2] = [
    GemvKernel::mma("gemv_bf16_mma_to_f32", BF16_STAGE_PAD, 4),
    GemvKernel::plain("gemv_bf16_to_f32", 1),
];

/// The bf16-activation FP8 product, likewise.
pub const GEMV_E4M3_VARIANTS: [GemvKernel; 6] = [
    GemvKernel::mma_rope("gemv_e4m3_mma", "gemv_e4m3_mma_rope", E4M3_STAGE_PAD, 4),
    GemvKernel::mma_rope(
        "gemv_e4m3_mma_u6",
        "gemv_e4m3_mma_u6_rope",
        E4M3_STAGE_PAD,
        6,
    ),
    GemvKernel::mma_rope(
        "gemv_e4m3_mma_u8",
        "gemv_e4m3_mma_u8_rope",
        E4M3_STAGE_PAD,
        8,
    ),
    GemvKernel::plain("gemv_e4m3_bf16", 1),
    GemvKernel::plain("gemv_e4m3_bf16_r2", 2),
    GemvKernel::plain("gemv_e4m3_bf16_r4", 4),
];

/// FP8 weights, bf16 activations, f32 outputs (the logits), likewise.
pub const GEMV_E4M3_TO_F32_VARIANTS: [GemvKernel; 3] = [
    GemvKernel::mma("gemv_e4m3_mma_to_f32", E4M3_STAGE_PAD, 4),
    GemvKernel::mma("gemv_e4m3_mma_to_f32_u6", E4M3_STAGE_PAD, 6),
    GemvKernel::plain("gemv_e4m3_bf16_to_f32", 1),
];

pub struct Kernels {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    /// The device runs `mma.sync` (compute capability 8.0 or later).
    tensor_cores: bool,
    /// Dynamic shared memory a block of the x-staging products may have.
    max_staged_bytes: usize,
    /// Zeroed once; every attention call leaves it zeroed again.
    attention_counters: Tensor,
    /// Blocks of the one-pass attention kernels the GPU holds at once.
    attention_resident_blocks: usize,
    /// The GPU's multiprocessors: the products' grids are at most what they hold at once.
    multiprocessors: u32,
}

impl Kernels {
    /// Compiles (once per process) and loads every kernel: loading a module inside a graph
    /// capture is not allowed, so nothing is loaded lazily.
    pub fn load(device: &Device) -> Result<Self> {
        let Device::Cuda(dev) = device else {
            bail!("the fused LM kernels need a CUDA device");
        };
        let arch = crate::gpu::compute_arch(dev)?;
        let (ptx, _) = PTX
            .get_or_init(|| {
                let started = std::time::Instant::now();
                let source = SOURCES.concat();
                let (ptx, from_disk_cache) = crate::gpu::cached_ptx(MODULE, &source, arch)?;
                let ms = started.elapsed().as_secs_f64() * 1e3;
                Ok((
                    ptx,
                    KernelBuild {
                        ms,
                        from_disk_cache,
                    },
                ))
            })
            .as_ref()
            .map_err(|e| candle_core::Error::Msg(format!("compiling the LM kernels: {e}")))?;
        let funcs: HashMap<_, _> = FUNCTIONS
            .iter()
            .map(|&name| {
                let f = dev.get_or_load_custom_func(name, MODULE, ptx)?;
                Ok((name, f.into_cuda_function()))
            })
            .collect::<Result<_>>()?;
        let tensor_cores = arch_major(arch) >= 8;
        let max_staged_bytes = if tensor_cores {
            allow_large_shared(dev, &funcs)?
        } else {
            0
        };
        let multiprocessors = multiprocessors(dev)?;
        Ok(Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            attention_resident_blocks: resident_blocks(multiprocessors, &funcs)?,
            multiprocessors,
            funcs,
            tensor_cores,
            max_staged_bytes,
            attention_counters: Tensor::zeros(ATTENTION_COUNTERS, DType::U32, device)?,
        })
    }

    /// Launches a kernel of this module as a programmatic dependent launch: it may start
    /// while the previous kernel on the stream finishes, and waits for it (`griddepcontrol`)
    /// before reading what it wrote. Inside a captured graph this removes most of the gap
    /// between consecutive kernels, which the frame step has hundreds of.
    fn launch(&self, name: &str, cfg: LaunchConfig, args: &[Arg]) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let func = &self.funcs[name];
        // Each parameter as 8 bytes; the kernel reads the first 4 of an i32/f32 (little endian).
        let mut values: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) | Arg::U64(p) => p,
                Arg::I32(v) => v as u32 as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut std::ffi::c_void> = values
            .iter_mut()
            .map(|v| v as *mut u64 as *mut std::ffi::c_void)
            .collect();
        // SAFETY: a zeroed attribute is a valid value of this C struct.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: &mut attr,
            numAttrs: 1,
        };
        self.stream.context().bind_to_thread().w()?;
        // SAFETY: `params` points at one value per kernel parameter, each alive for the call;
        // every pointer among them comes from a live tensor of the size the kernel indexes.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                func.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
        .w()?;
        Ok(())
    }

    fn alloc(&self, dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        let n = shape.elem_count();
        let dev = &self.dev;
        // SAFETY: the kernel that receives this buffer writes every element it later reads.
        unsafe {
            Ok(match dtype {
                DType::F32 => crate::gpu::tensor_of(dev.alloc::<f32>(n)?, dev, shape),
                DType::BF16 => crate::gpu::tensor_of(dev.alloc::<half::bf16>(n)?, dev, shape),
                DType::U32 => crate::gpu::tensor_of(dev.alloc::<u32>(n)?, dev, shape),
                DType::U8 => crate::gpu::tensor_of(dev.alloc::<u8>(n)?, dev, shape),
                other => bail!("no fused LM kernel for {other:?}"),
            })
        }
    }

    /// `x · Wᵀ (+ residual)` for the few rows of a frame step with a dense or FP8 matrix.
    pub fn project(
        &self,
        x: &Tensor,
        w: &Projection,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let kernel = self.kernel_for(x, w, out)?;
        self.launch_gemv(kernel, x, Staging::AsIs, Weights::of(w), residual, out)
    }

    /// `rms_norm(x) · Wᵀ`: the norm runs inside the product where the product's kernel can
    /// (the tensor-core ones stage x in shared memory anyway), else as a kernel of its own.
    pub fn project_normed(
        &self,
        x: &Tensor,
        norm: &NormWeights,
        w: &Projection,
        out: DType,
    ) -> Result<Tensor> {
        let staging = Staging::Normed(norm);
        let kernel = self.kernel_for(x, w, out)?;
        if kernel.tensor_cores {
            self.launch_gemv(kernel, x, staging, Weights::of(w), None, out)
        } else {
            let normed = self.rms_norm(x, norm.scale, norm.eps)?;
            self.launch_gemv(kernel, &normed, Staging::AsIs, Weights::of(w), None, out)
        }
    }

    /// The q/k/v projection of `rms_norm(x)` (batch, seq, dim), rotated and stored as
    /// [`rope_kv`](Self::rope_kv) does; returns q (batch, heads, seq, head_dim). RoPE and the
    /// cache write happen in the product's epilogue where its kernel has a RoPE twin.
    pub fn project_rope(
        &self,
        x: &Tensor,
        norm: &NormWeights,
        w: &Projection,
        rope: &RopeKv,
    ) -> Result<Tensor> {
        let staging = Staging::Normed(norm);
        let kernel = self.kernel_for(x, w, x.dtype())?;
        let Some(name) = kernel.rope else {
            let qkv = self.project_normed(x, norm, w, x.dtype())?;
            return self.rope_kv(&qkv, rope);
        };
        let (b, t, _) = x.dims3()?;
        let (n, _) = Weights::of(w).dims()?;
        let (_, _, capacity, hd) = rope.cache.k.dims4()?;
        if n != (rope.heads + 2 * rope.kv_heads) * hd || hd % 2 != 0 {
            bail!(
                "a q/k/v product of {n} outputs for {} heads and {} kv heads of {hd}",
                rope.heads,
                rope.kv_heads
            );
        }
        let q = self.alloc(x.dtype(), (b, rope.heads, t, hd))?;
        let (cfg, mut args, [m, n, k]) =
            self.gemv_launch(kernel, name, x, staging, Weights::of(w))?;
        args.extend([m, n, k]);
        args.extend(rope.args(&q, t, hd, capacity)?);
        self.launch(name, cfg, &args)?;
        Ok(q)
    }

    /// `silu(gate)·up` (…, hidden) of `[gate | up] = rms_norm(x) · Wᵀ`, W the fused gate/up
    /// projection (2·hidden, dim): the norm and the SwiGLU run inside the product where its
    /// kernel can, else as kernels of their own.
    pub fn project_gate_up(
        &self,
        x: &Tensor,
        norm: &NormWeights,
        w: &Projection,
        out: DType,
    ) -> Result<Tensor> {
        let staging = Staging::NormedSwiGlu(norm);
        let kernel = self.kernel_for(x, w, out)?;
        let n = Weights::of(w).dims()?.0;
        // A tile pairs 8 gate rows with the 8 up rows n/2 further on (gemv_mma.cu).
        if kernel.tensor_cores && n % 16 == 0 {
            self.launch_gemv(kernel, x, staging, Weights::of(w), None, out)
        } else {
            self.silu_mul(&self.project_normed(x, norm, w, out)?, n / 2)
        }
    }

    /// The kernel a frame step uses for `x · wᵀ` into `out`: the first of the matching
    /// variant list this device runs.
    fn kernel_for(&self, x: &Tensor, w: &Projection, out: DType) -> Result<GemvKernel> {
        let k = Weights::of(w).dims()?.1;
        let rows = x.elem_count() / k.max(1);
        let variants: &[GemvKernel] = match (w, x.dtype(), out) {
            (Projection::Dense(_), DType::F32, DType::F32) => &[GemvKernel::plain("gemv_f32", 1)],
            (Projection::Dense(_), DType::BF16, DType::BF16) => &GEMV_BF16_VARIANTS,
            (Projection::Dense(_), DType::BF16, DType::F32) => &GEMV_BF16_TO_F32_VARIANTS,
            (Projection::Fp8(_), DType::F32, DType::F32) => {
                &[GemvKernel::plain("gemv_e4m3_f32", 1)]
            }
            (Projection::Fp8(_), DType::BF16, DType::BF16) => &GEMV_E4M3_VARIANTS,
            (Projection::Fp8(_), DType::BF16, DType::F32) => &GEMV_E4M3_TO_F32_VARIANTS,
            (_, x, o) => bail!("no matrix product from {x:?} activations to {o:?}"),
        };
        let row_bytes = k * Weights::of(w).bytes_per_weight();
        let runnable = || variants.iter().copied().filter(|v| self.runs(v, rows, k));
        runnable()
            .filter(|v| v.rounds_even(row_bytes))
            .max_by_key(|v| v.unroll)
            .or_else(|| runnable().next())
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("no matrix-product kernel runs here: {variants:?}"))
            })
    }

    /// Whether this device runs `kernel` for `rows` rows of `k` inputs.
    pub fn runs(&self, kernel: &GemvKernel, rows: usize, k: usize) -> bool {
        (self.tensor_cores || !kernel.tensor_cores)
            && kernel.shared_bytes(rows, k) <= self.max_staged_bytes
    }

    /// `x · wᵀ (+ residual)` with a given kernel of `GEMV_BF16_VARIANTS` (or the f32 ones):
    /// at most 4 rows of K values, w (N, K), accumulated in f32 and returned in `out`.
    pub fn gemv_with(
        &self,
        kernel: GemvKernel,
        x: &Tensor,
        w: &Tensor,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        self.launch_gemv(kernel, x, Staging::AsIs, Weights::Dense(w), residual, out)
    }

    /// [`gemv_with`](Self::gemv_with) on FP8 weights (E4M3 codes (N, K), K a multiple of 16,
    /// and a scale per output row) with a kernel of `GEMV_E4M3_VARIANTS` (or the f32 ones).
    pub fn gemv_fp8_with(
        &self,
        kernel: GemvKernel,
        x: &Tensor,
        w: &Fp8Matrix,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        self.launch_gemv(kernel, x, Staging::AsIs, Weights::Fp8(w), residual, out)
    }

    /// Launches a matrix-product kernel taking (x, [γ, eps, swiglu,] the weight's arguments,
    /// residual, y, M, N, K) and returns y: x's shape with N last (N/2 when the outputs leave
    /// as a SwiGLU). What to make of x and of the outputs goes to the tensor-core kernels only.
    fn launch_gemv(
        &self,
        kernel: GemvKernel,
        x: &Tensor,
        staging: Staging,
        w: Weights,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let (cfg, mut args, [m, n, k]) = self.gemv_launch(kernel, kernel.name, x, staging, w)?;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = staging.outputs(w.dims()?.0);
        let y = self.alloc(out, dims)?;
        args.extend([self.residual(residual, &y, out)?, ptr(&y)?, m, n, k]);
        self.launch(kernel.name, cfg, &args)?;
        Ok(y)
    }

    /// A product's launch configuration for `name` (the kernel or its RoPE twin), its
    /// arguments up to the weights' and (M, N, K), after checking that `kernel` takes these
    /// shapes on this device.
    fn gemv_launch(
        &self,
        kernel: GemvKernel,
        name: &str,
        x: &Tensor,
        staging: Staging,
        w: Weights,
    ) -> Result<(LaunchConfig, Vec<Arg>, [Arg; 3])> {
        let (n, k) = w.dims()?;
        let rows = x.elem_count() / k.max(1);
        let row_bytes = k * w.bytes_per_weight();
        if row_bytes % 16 != 0 || rows == 0 || rows > 4 || rows * k != x.elem_count() {
            bail!(
                "a frame-step product takes 1..=4 rows of {k} inputs in 16-byte rows of weights, \
                 got x {:?}",
                x.shape()
            );
        }
        if matches!(w, Weights::Dense(w) if w.dtype() != x.dtype()) {
            bail!("dense weights and x differ in dtype ({:?})", x.dtype());
        }
        if !self.runs(&kernel, rows, k) {
            bail!("{kernel:?} does not run on this device for {rows} rows of {k} inputs");
        }
        const WARPS: usize = 8;
        let mut cfg = LaunchConfig {
            grid_dim: (n.div_ceil(WARPS * kernel.columns_per_warp) as u32, 1, 1),
            block_dim: ((WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: kernel.shared_bytes(rows, k) as u32,
        };
        if kernel.tensor_cores {
            // Each block loops over tiles (gemv_mma.cu): no more blocks than fit at once.
            cfg.grid_dim.0 = cfg.grid_dim.0.min(self.resident(name, &cfg)?);
        }
        let mut args = vec![aligned_ptr(x)?];
        if kernel.tensor_cores {
            args.extend(staging.args(k, x.dtype())?);
        } else if !matches!(staging, Staging::AsIs) {
            bail!("{} takes x as it is", kernel.name);
        }
        args.extend(w.args()?);
        let dims = [rows, n, k].map(|d| Arg::I32(d as i32));
        Ok((cfg, args, dims))
    }

    /// How many blocks of `name`, launched as `cfg`, the GPU holds at once.
    fn resident(&self, name: &str, cfg: &LaunchConfig) -> Result<u32> {
        let per_sm = self.funcs[name]
            .occupancy_max_active_blocks_per_multiprocessor(
                cfg.block_dim.0,
                cfg.shared_mem_bytes as usize,
                None,
            )
            .w()?;
        Ok(self.multiprocessors * per_sm.max(1))
    }

    /// The residual argument of a product writing `y`: none, or a tensor shaped like it.
    fn residual(&self, residual: Option<&Tensor>, y: &Tensor, out: DType) -> Result<Arg> {
        match residual {
            Some(r) if r.dims() == y.dims() && r.dtype() == out => ptr(r),
            Some(r) => bail!(
                "gemv residual {:?} {:?} does not match the output {:?}",
                r.shape(),
                r.dtype(),
                y.shape()
            ),
            None => Ok(Arg::Ptr(0)),
        }
    }

    /// RMSNorm over the last dimension (`x·γ / rms(x)`, computed in f32).
    pub fn rms_norm(&self, x: &Tensor, gamma: &Tensor, eps: f32) -> Result<Tensor> {
        let k = gamma.dim(0)?;
        let rows = x.elem_count() / k;
        let y = self.alloc(x.dtype(), x.shape())?;
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            ptr(x)?,
            ptr(gamma)?,
            ptr(&y)?,
            Arg::I32(k as i32),
            Arg::F32(eps),
        ];
        self.launch(typed("rms_norm", x.dtype())?, cfg, &args)?;
        Ok(y)
    }

    /// silu(gate)·up from the fused (…, 2·hidden) gate/up projection.
    pub fn silu_mul(&self, gu: &Tensor, hidden: usize) -> Result<Tensor> {
        let mut dims = gu.dims().to_vec();
        let rows = gu.elem_count() / (2 * hidden);
        *dims.last_mut().expect("rank ≥ 1") = hidden;
        let out = self.alloc(gu.dtype(), dims)?;
        let n = (rows * hidden) as u32;
        let args = [
            ptr(gu)?,
            ptr(&out)?,
            Arg::I32(rows as i32),
            Arg::I32(hidden as i32),
        ];
        self.launch(
            typed("silu_mul", gu.dtype())?,
            LaunchConfig::for_num_elems(n),
            &args,
        )?;
        Ok(out)
    }

    /// Rotates the q/k parts of `qkv` (batch, seq, (heads + 2·kv)·head_dim) for positions
    /// `pos[0]..`, writes k and v into the cache buffers at those positions and returns q
    /// as (batch, heads, seq, head_dim).
    pub fn rope_kv(&self, qkv: &Tensor, rope: &RopeKv) -> Result<Tensor> {
        let (b, t, _) = qkv.dims3()?;
        let (_, _, capacity, hd) = rope.cache.k.dims4()?;
        let q = self.alloc(qkv.dtype(), (b, rope.heads, t, hd))?;
        let cfg = LaunchConfig {
            grid_dim: ((b * t) as u32, (rope.heads + rope.kv_heads) as u32, 1),
            block_dim: ((hd / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = vec![ptr(qkv)?];
        args.extend(rope.args(&q, t, hd, capacity)?);
        self.launch(typed("rope_kv", qkv.dtype())?, cfg, &args)?;
        Ok(q)
    }

    /// Attention of q (batch, heads, seq, head_dim) at positions `pos[0]..` over the cached
    /// keys up to each query; returns (batch, seq, heads·head_dim).
    pub fn attention(&self, q: &Tensor, cache: KvBuffers, pos: &Tensor) -> Result<Tensor> {
        let (b, heads, t, hd) = q.dims4()?;
        let (_, kv_heads, capacity, _) = cache.k.dims4()?;
        let fp8 = cache.exponents.is_some();
        let group = heads / kv_heads;
        let row_bytes = hd * q.dtype().size_in_bytes();
        if row_bytes % 16 != 0
            || group > ATTENTION_MAX_GROUP
            || b * kv_heads * t > ATTENTION_COUNTERS
        {
            bail!(
                "fused attention needs 16-byte rows and at most {ATTENTION_MAX_GROUP} query heads \
                 per kv head: head_dim {hd}, {heads} heads, {kv_heads} kv heads"
            );
        }
        let chunks = row_bytes / 16;
        let rows_kernel = ROWS_KERNELS
            .iter()
            .find(|&&(dtype, codes, per_lane, max_group, _)| {
                dtype == q.dtype() && codes == fp8 && chunks == 16 * per_lane && group <= max_group
            });
        if let Some(&(.., name)) = rows_kernel {
            // Splits: at most ROWS_MAX_SPLITS per (row, kv head, position), no more than the
            // cache fills with 64 keys each, and no more than fit the GPU at once: a second
            // wave of a few blocks costs a whole block's time (3,380 positions: 27 splits in
            // 432 blocks, 396 resident on an H200, took 17.4 µs). The kernel divides the live
            // keys among them, in rounds of 64 and at least `keys` each.
            let most = (self.attention_resident_blocks / (b * kv_heads * t)).max(1);
            let keys = 64;
            let splits = capacity.div_ceil(keys).min(most).min(ROWS_MAX_SPLITS);
            let cfg = LaunchConfig {
                grid_dim: ((b * kv_heads) as u32, t as u32, splits as u32),
                block_dim: (ROWS_THREADS as u32, 1, 1),
                shared_mem_bytes: 0,
            };
            return self.launch_attention(name, cfg, q, cache, pos, [splits, keys], None);
        }
        // Key subsets for the value pass: as many as fit 256 threads in whole warps.
        let subsets = (1..=(256 / chunks).max(1))
            .rev()
            .find(|s| (s * chunks) % 32 == 0)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("no warp-aligned block for head_dim {hd}"))
            })?;
        let splits = capacity
            .div_ceil(ATTENTION_KEYS_PER_BLOCK)
            .min(MERGE_MAX_SPLITS);
        let keys = capacity.div_ceil(splits);
        let shared = (group * hd + group * keys + subsets * group * hd + 32) * 4;
        // 48 KB a block without opting in, less the merge's weights (static, 1 KB).
        if shared + 4 * ATTENTION_MAX_GROUP * MERGE_MAX_SPLITS > 48 * 1024 {
            bail!("fused attention needs {shared} bytes of shared memory for head_dim {hd}");
        }
        let cfg = LaunchConfig {
            grid_dim: ((b * kv_heads) as u32, t as u32, splits as u32),
            block_dim: ((subsets * chunks) as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // Lanes sharing a key in the score pass: enough to cover its chunks, at most a warp.
        let lanes_per_key = chunks.next_power_of_two().min(32);
        let name = typed(if fp8 { "attention_e4m3" } else { "attention" }, q.dtype())?;
        let blocks = [splits, keys];
        self.launch_attention(name, cfg, q, cache, pos, blocks, Some(lanes_per_key))
    }

    /// Launches an attention kernel taking (q, k cache, v cache[, k and v exponents], pos,
    /// out, partials, counters, T, H, KV, D, CAP, S, L[, lanes per key]) and returns its
    /// output; `[splits, keys]` are S and L.
    #[allow(clippy::too_many_arguments)]
    fn launch_attention(
        &self,
        name: &str,
        cfg: LaunchConfig,
        q: &Tensor,
        cache: KvBuffers,
        pos: &Tensor,
        [splits, keys]: [usize; 2],
        lanes_per_key: Option<usize>,
    ) -> Result<Tensor> {
        let (b, heads, t, hd) = q.dims4()?;
        let (_, kv_heads, capacity, _) = cache.k.dims4()?;
        let out = self.alloc(q.dtype(), (b, t, heads * hd))?;
        // A split's slot: hd values, max, sum, padding to 16 bytes (SLOT in attention.cu).
        let partials = self.alloc(DType::F32, b * heads * t * splits * (hd + 4))?;
        let mut args = vec![ptr(q)?, ptr(cache.k)?, ptr(cache.v)?];
        if let Some((k_exps, v_exps)) = cache.exponents {
            args.extend([ptr(k_exps)?, ptr(v_exps)?]);
        }
        args.extend([
            ptr(pos)?,
            ptr(&out)?,
            ptr(&partials)?,
            ptr(&self.attention_counters)?,
            Arg::I32(t as i32),
            Arg::I32(heads as i32),
            Arg::I32(kv_heads as i32),
            Arg::I32(hd as i32),
            Arg::I32(capacity as i32),
            Arg::I32(splits as i32),
            Arg::I32(keys as i32),
        ]);
        args.extend(lanes_per_key.map(|l| Arg::I32(l as i32)));
        self.launch(name, cfg, &args)?;
        Ok(out)
    }

    /// FP8 cache rows of `x` (…, head_dim), f32 or bf16: their codes, U8 of `x`'s shape, and
    /// exponents, U8 (…, head_dim / 16) — the bytes the host's `kv_fp8::quantize` writes.
    pub fn kv_quantize(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let x = x.contiguous()?;
        let mut dims = x.dims().to_vec();
        let groups = x.elem_count() / KV_GROUP;
        let codes = self.alloc(DType::U8, x.shape().clone())?;
        if let Some(last) = dims.last_mut() {
            *last /= KV_GROUP;
        }
        let exps = self.alloc(DType::U8, dims)?;
        if groups > 0 {
            let args = [ptr(&x)?, ptr(&codes)?, ptr(&exps)?, Arg::U64(groups as u64)];
            let cfg = LaunchConfig::for_num_elems(groups as u32);
            self.launch(typed("kv_quantize", x.dtype())?, cfg, &args)?;
        }
        Ok((codes, exps))
    }

    /// The first `len` positions of FP8 caches — codes (batch, kv heads, capacity, head_dim)
    /// and their exponents — decoded to `dtype`: (batch, kv heads, len, head_dim).
    pub fn kv_dequantize(
        &self,
        codes: &Tensor,
        exps: &Tensor,
        len: usize,
        dtype: DType,
    ) -> Result<Tensor> {
        let (b, kv_heads, capacity, hd) = codes.dims4()?;
        let out = self.alloc(dtype, (b, kv_heads, len, hd))?;
        let groups = b * kv_heads * len * hd / KV_GROUP;
        if groups > 0 {
            let args = [
                ptr(codes)?,
                ptr(exps)?,
                ptr(&out)?,
                Arg::U64(groups as u64),
                Arg::I32(len as i32),
                Arg::I32(capacity as i32),
                Arg::I32(hd as i32),
            ];
            let cfg = LaunchConfig::for_num_elems(groups as u32);
            self.launch(typed("kv_dequantize", dtype)?, cfg, &args)?;
        }
        Ok(out)
    }

    /// Samples the token of `codebook` from f32 logits (rows, vocab) into `frame[codebook]`
    /// and returns the embedding ids `token + codebook·vocab`, one per row.
    #[allow(clippy::too_many_arguments)]
    pub fn sample(
        &self,
        logits: &Tensor,
        cfg_scale: f32,
        temperature: f32,
        topk: usize,
        seed: u64,
        state: &Tensor,
        codebook: usize,
        frame: &Tensor,
    ) -> Result<Tensor> {
        let (rows, vocab) = logits.dims2()?;
        let ids = self.alloc(DType::U32, rows)?;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: (vocab * 4) as u32,
        };
        let args = [
            ptr(logits)?,
            Arg::I32(rows as i32),
            Arg::I32(vocab as i32),
            Arg::F32(cfg_scale),
            Arg::F32(1.0 / temperature),
            Arg::I32(topk as i32),
            Arg::U64(seed),
            ptr(state)?,
            Arg::I32(codebook as i32),
            ptr(frame)?,
            ptr(&ids)?,
        ];
        self.launch("sample_topk", cfg, &args)?;
        Ok(ids)
    }

    /// Embedding ids of the last frame's tokens for every row: (rows·codebooks,) u32.
    pub fn frame_ids(&self, frame: &Tensor, rows: usize, vocab: usize) -> Result<Tensor> {
        let codebooks = frame.dim(0)?;
        let ids = self.alloc(DType::U32, rows * codebooks)?;
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: ((rows * codebooks).next_multiple_of(32) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            ptr(frame)?,
            ptr(&ids)?,
            Arg::I32(rows as i32),
            Arg::I32(codebooks as i32),
            Arg::I32(vocab as i32),
        ];
        self.launch("frame_ids", cfg, &args)?;
        Ok(ids)
    }

    /// Moves the step state to the next frame (position + 1, frame index + 1).
    pub fn advance(&self, state: &Tensor) -> Result<()> {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1, 1, 1),
            shared_mem_bytes: 0,
        };
        self.launch("advance", cfg, &[ptr(state)?])
    }
}

/// Where RoPE puts a q/k/v projection's outputs: q rotated into a new tensor, k rotated and
/// v into the caches (batch, kv heads, capacity, head_dim) at positions `pos[0]..`, with the
/// tables `cos`/`sin` (positions, head_dim / 2).
pub struct RopeKv<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub pos: &'a Tensor,
    pub cache: KvBuffers<'a>,
    pub heads: usize,
    pub kv_heads: usize,
}

impl RopeKv<'_> {
    /// (cos, sin, pos, q, k cache, v cache, k exponents, v exponents (null for dense
    /// caches), T, H, KV, D, CAP), as rope_kv.cu and the products' RoPE twins take them.
    fn args(&self, q: &Tensor, t: usize, hd: usize, capacity: usize) -> Result<[Arg; 13]> {
        let [k_exps, v_exps] = match self.cache.exponents {
            Some((k, v)) => [ptr(k)?, ptr(v)?],
            None => [Arg::U64(0), Arg::U64(0)],
        };
        if self.cache.exponents.is_some() && hd % KV_GROUP != 0 {
            bail!("an FP8 KV cache needs a head_dim that is a multiple of {KV_GROUP}, got {hd}");
        }
        Ok([
            ptr(self.cos)?,
            ptr(self.sin)?,
            ptr(self.pos)?,
            ptr(q)?,
            ptr(self.cache.k)?,
            ptr(self.cache.v)?,
            k_exps,
            v_exps,
            Arg::I32(t as i32),
            Arg::I32(self.heads as i32),
            Arg::I32(self.kv_heads as i32),
            Arg::I32(hd as i32),
            Arg::I32(capacity as i32),
        ])
    }
}

/// What a tensor-core product makes of x while staging it (`StagedInput` in gemv_mma.cu),
/// and of its outputs.
#[derive(Clone, Copy)]
enum Staging<'a> {
    AsIs,
    /// An RMSNorm of x.
    Normed(&'a NormWeights<'a>),
    /// An RMSNorm of x; the outputs [gate | up] leave as silu(gate)·up.
    NormedSwiGlu(&'a NormWeights<'a>),
}

impl Staging<'_> {
    /// Values a row of x gets from a product of `n` outputs.
    fn outputs(&self, n: usize) -> usize {
        match self {
            Self::NormedSwiGlu(_) => n / 2,
            _ => n,
        }
    }

    /// The kernel arguments (γ or null, eps, swiglu) for products of `k` inputs.
    fn args(&self, k: usize, dtype: DType) -> Result<[Arg; 3]> {
        let swiglu = Arg::I32(matches!(self, Self::NormedSwiGlu(_)) as i32);
        Ok(match self {
            Self::AsIs => [Arg::Ptr(0), Arg::F32(0.0), swiglu],
            Self::Normed(n) | Self::NormedSwiGlu(n)
                if n.scale.dims1()? == k && n.scale.dtype() == dtype =>
            {
                [aligned_ptr(n.scale)?, Arg::F32(n.eps), swiglu]
            }
            Self::Normed(n) | Self::NormedSwiGlu(n) => bail!(
                "an RMSNorm of {:?} {:?} before a product of {k} {dtype:?} inputs",
                n.scale.shape(),
                n.scale.dtype()
            ),
        })
    }
}

/// A product's weights as its kernel takes them.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Dense(&'a Tensor),
    Fp8(&'a Fp8Matrix),
}

impl<'a> Weights<'a> {
    fn of(w: &'a Projection) -> Self {
        match w {
            Projection::Dense(w) => Self::Dense(w),
            Projection::Fp8(m) => Self::Fp8(m),
        }
    }

    /// (outputs, inputs).
    fn dims(&self) -> Result<(usize, usize)> {
        match self {
            Self::Dense(w) => w.dims2(),
            Self::Fp8(m) => Ok(m.dims()),
        }
    }

    fn bytes_per_weight(&self) -> usize {
        match self {
            Self::Dense(w) => w.dtype().size_in_bytes(),
            Self::Fp8(_) => 1,
        }
    }

    /// The kernel arguments: the matrix (and the FP8 scales).
    fn args(&self) -> Result<Vec<Arg>> {
        Ok(match self {
            Self::Dense(w) => vec![aligned_ptr(w)?],
            Self::Fp8(m) => vec![aligned_ptr(m.codes())?, ptr(m.scales())?],
        })
    }
}

#[derive(Clone, Copy)]
enum Arg {
    Ptr(u64),
    I32(i32),
    F32(f32),
    U64(u64),
}

/// The device address of a contiguous CUDA tensor's first element.
fn ptr(t: &Tensor) -> Result<Arg> {
    if !t.is_contiguous() {
        bail!(
            "fused LM kernels need contiguous tensors, got {:?}",
            t.layout()
        );
    }
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        bail!("fused LM kernels need CUDA tensors");
    };
    let stream = cs.device().cuda_stream();
    let base = match &cs.slice {
        CudaStorageSlice::F32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::BF16(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U32(s) => s.device_ptr(&stream).0,
        CudaStorageSlice::U8(s) => s.device_ptr(&stream).0,
        _ => bail!(
            "fused LM kernels take f32, bf16, u32 or u8, got {:?}",
            t.dtype()
        ),
    };
    Ok(Arg::Ptr(
        base + (layout.start_offset() * t.dtype().size_in_bytes()) as u64,
    ))
}

/// A device address for 16-byte vector loads.
fn aligned_ptr(t: &Tensor) -> Result<Arg> {
    match ptr(t)? {
        Arg::Ptr(p) if p % 16 == 0 => Ok(Arg::Ptr(p)),
        _ => bail!(
            "a 16-byte aligned tensor is needed, got one at offset {}",
            t.layout().start_offset()
        ),
    }
}

/// How many blocks of the one-pass attention kernels the GPU holds at once (the fewest of
/// any of them): its multiprocessors times the blocks each fits.
fn resident_blocks(sms: u32, funcs: &HashMap<&str, CudaFunction>) -> Result<usize> {
    let mut per_sm = u32::MAX;
    for &(.., name) in &ROWS_KERNELS {
        let blocks = funcs[name]
            .occupancy_max_active_blocks_per_multiprocessor(ROWS_THREADS as u32, 0, None)
            .w()?;
        per_sm = per_sm.min(blocks);
    }
    Ok(sms as usize * per_sm.max(1) as usize)
}

/// The GPU's multiprocessor count.
fn multiprocessors(dev: &CudaDevice) -> Result<u32> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
    let sms = dev
        .cuda_stream()
        .context()
        .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    Ok(sms.max(1) as u32)
}

/// The major compute capability in an `sm_XY` name.
fn arch_major(arch: &str) -> u32 {
    let digits = arch.trim_start_matches("sm_");
    digits[..digits.len().saturating_sub(1)]
        .parse()
        .unwrap_or(0)
}

/// Lets each tensor-core product use all the shared memory a block may opt into (beyond the
/// default 48 KB: the decoder's first step stages 4 rows of 8,192 inputs, 64 KB), and
/// returns the dynamic part every one of them may use.
fn allow_large_shared(dev: &CudaDevice, funcs: &HashMap<&str, CudaFunction>) -> Result<usize> {
    use candle_core::cuda_backend::cudarc::driver::sys::{
        CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
        CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
    };
    let optin = dev
        .cuda_stream()
        .context()
        .attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .w()?;
    let staged = GEMV_BF16_VARIANTS
        .iter()
        .chain(&GEMV_BF16_TO_F32_VARIANTS)
        .chain(&GEMV_E4M3_VARIANTS)
        .chain(&GEMV_E4M3_TO_F32_VARIANTS)
        .filter(|k| k.tensor_cores);
    let mut allowed = usize::MAX;
    for kernel in staged {
        let f = &funcs[kernel.name];
        let dynamic = optin - f.shared_size_bytes().w()?;
        f.set_attribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic)
            .w()?;
        allowed = allowed.min(dynamic.max(0) as usize);
    }
    Ok(allowed)
}

fn typed(name: &'static str, dtype: DType) -> Result<&'static str> {
    Ok(match (name, dtype) {
        ("rope_kv", DType::F32) => "rope_kv_f32",
        ("rope_kv", DType::BF16) => "rope_kv_bf16",
        ("attention", DType::F32) => "attention_f32",
        ("attention", DType::BF16) => "attention_bf16",
        ("attention_e4m3", DType::F32) => "attention_e4m3_f32",
        ("attention_e4m3", DType::BF16) => "attention_e4m3_bf16",
        ("kv_quantize", DType::F32) => "kv_quantize_f32",
        ("kv_quantize", DType::BF16) => "kv_quantize_bf16",
        ("kv_dequantize", DType::F32) => "kv_dequantize_f32",
        ("kv_dequantize", DType::BF16) => "kv_dequantize_bf16",
        ("rms_norm", DType::F32) => "rms_norm_f32",
        ("rms_norm", DType::BF16) => "rms_norm_bf16",
        ("silu_mul", DType::F32) => "silu_mul_f32",
        ("silu_mul", DType::BF16) => "silu_mul_bf16",
        _ => bail!("no fused LM kernel {name} for {dtype:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: the kernels must compile for Hopper on any build machine, and
    /// every function the launchers name must be an entry point of the module.
    #[test]
    fn arch_names_give_their_major_capability() {
        assert_eq!(arch_major("sm_90"), 9);
        assert_eq!(arch_major("sm_75"), 7);
        assert_eq!(arch_major("sm_120"), 12);
    }

    /// Every kernel a frame step may pick is in the module, with a plain fallback last for
    /// GPUs without tensor cores.
    #[test]
    fn every_variant_list_ends_in_a_kernel_any_gpu_runs() {
        let lists: [&[GemvKernel]; 4] = [
            &GEMV_BF16_VARIANTS,
            &GEMV_BF16_TO_F32_VARIANTS,
            &GEMV_E4M3_VARIANTS,
            &GEMV_E4M3_TO_F32_VARIANTS,
        ];
        for list in lists {
            assert!(list.iter().any(|k| !k.tensor_cores), "{list:?}");
            for k in list {
                assert!(FUNCTIONS.contains(&k.name), "{} is not loaded", k.name);
            }
        }
    }

    #[test]
    fn kernels_compile_with_nvrtc() {
        let ptx = crate::gpu::compile("sm_90", SOURCES.concat()).unwrap_or_else(|e| panic!("{e}"));
        for name in FUNCTIONS {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "no kernel {name} in the PTX"
            );
        }
    }

    /// The module must also load on GPUs before Hopper (Turing here): the driver's PTX
    /// assembler refuses instructions newer than the device, so the tensor-core products and
    /// the programmatic-launch waits are compiled out there (NVRTC alone would not notice).
    #[test]
    fn kernels_compile_for_gpus_before_hopper() {
        let ptx = crate::gpu::compile("sm_75", SOURCES.concat()).unwrap_or_else(|e| panic!("{e}"));
        assert!(ptx.contains(".entry gemv_e4m3_mma("));
        for newer in ["mma.sync", "griddepcontrol"] {
            assert!(!ptx.contains(newer), "{newer} in sm_75 PTX");
        }
    }
}
