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

use crate::lm::projection::Projection;
use crate::weights::Fp8Matrix;

/// The kernel sources, concatenated in dependency order into one NVRTC program.
const SOURCES: [&str; 8] = [
    include_str!("kernels/common.cuh"),
    crate::hash::SPLITMIX64_CUDA,
    include_str!("kernels/gemv.cu"),
    include_str!("kernels/mlp.cu"),
    include_str!("kernels/rope_kv.cu"),
    include_str!("kernels/attention.cu"),
    include_str!("kernels/sampling.cu"),
    include_str!("kernels/step.cu"),
];
const MODULE: &str = "heartstream_lm";

const FUNCTIONS: [&str; 22] = [
    "gemv_f32",
    "gemv_bf16",
    "gemv_bf16_to_f32",
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

/// Shapes of the bf16 matrix-product kernel (kernel, output columns per warp), compared by
/// `benches/lm_kernels.rs`; the first is the one the frame step uses.
pub const GEMV_BF16_VARIANTS: [(&str, usize); 4] = [
    ("gemv_bf16", 1),
    ("gemv_bf16_r1_b8", 1),
    ("gemv_bf16_r1_b16", 1),
    ("gemv_bf16_r4_b4", 4),
];

/// Shapes of the bf16-activation FP8 product (kernel, output columns per warp), compared by
/// `benches/lm_kernels.rs`; the first is the one the step uses.
pub const GEMV_E4M3_VARIANTS: [(&str, usize); 3] = [
    ("gemv_e4m3_bf16", 1),
    ("gemv_e4m3_bf16_r2", 2),
    ("gemv_e4m3_bf16_r4", 4),
];

pub struct Kernels {
    dev: CudaDevice,
    stream: Arc<CudaStream>,
    funcs: HashMap<&'static str, CudaFunction>,
    /// Zeroed once; every attention call leaves it zeroed again.
    attention_counters: Tensor,
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
        let funcs = FUNCTIONS
            .iter()
            .map(|&name| {
                let f = dev.get_or_load_custom_func(name, MODULE, ptx)?;
                Ok((name, f.into_cuda_function()))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            dev: dev.clone(),
            stream: dev.cuda_stream(),
            funcs,
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
        match w {
            Projection::Dense(w) => self.gemv(x, w, residual, out),
            Projection::Fp8(m) => self.gemv_fp8(x, m, residual, out),
        }
    }

    /// `x · wᵀ (+ residual)` for the few rows of a frame step (at most 4 rows of K values,
    /// w: (N, K)), accumulated in f32 and returned in `out` (the model dtype, or f32 for
    /// logits).
    pub fn gemv(
        &self,
        x: &Tensor,
        w: &Tensor,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let name = match (w.dtype(), out) {
            (DType::F32, DType::F32) => "gemv_f32",
            (DType::BF16, DType::BF16) => GEMV_BF16_VARIANTS[0].0,
            (DType::BF16, DType::F32) => "gemv_bf16_to_f32",
            (w, o) => bail!("no gemv from {w:?} weights to {o:?}"),
        };
        self.gemv_with(name, 1, x, w, residual, out)
    }

    /// [`gemv`](Self::gemv) with a given kernel of `GEMV_BF16_VARIANTS` (or the f32 ones)
    /// computing `columns_per_warp` outputs per warp.
    pub fn gemv_with(
        &self,
        kernel: &str,
        columns_per_warp: usize,
        x: &Tensor,
        w: &Tensor,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let (n, k) = w.dims2()?;
        let rows = x.elem_count() / k;
        let aligned = (k * w.dtype().size_in_bytes()) % 16 == 0;
        if !aligned || rows == 0 || rows > 4 || rows * k != x.elem_count() || x.dtype() != w.dtype()
        {
            bail!(
                "gemv takes 1..=4 rows of {k} {:?} values, got {:?} {:?}",
                w.dtype(),
                x.shape(),
                x.dtype()
            );
        }
        let weights = [aligned_ptr(w)?];
        let shape = GemvShape { rows, n, k };
        self.launch_gemv(kernel, columns_per_warp, x, &weights, shape, residual, out)
    }

    /// [`gemv`](Self::gemv) with FP8 weights: E4M3 codes (N, K), K a multiple of 16, and a
    /// scale per output row.
    fn gemv_fp8(
        &self,
        x: &Tensor,
        w: &Fp8Matrix,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let (name, columns) = match (x.dtype(), out) {
            (DType::F32, DType::F32) => ("gemv_e4m3_f32", 1),
            (DType::BF16, DType::BF16) => GEMV_E4M3_VARIANTS[0],
            (DType::BF16, DType::F32) => ("gemv_e4m3_bf16_to_f32", 1),
            (x, o) => bail!("no FP8 gemv from {x:?} activations to {o:?}"),
        };
        self.gemv_fp8_with(name, columns, x, w, residual, out)
    }

    /// [`project`](Self::project) on FP8 weights with a given kernel of `GEMV_E4M3_VARIANTS`
    /// (or the f32 ones) computing `columns_per_warp` outputs per warp.
    pub fn gemv_fp8_with(
        &self,
        name: &str,
        columns_per_warp: usize,
        x: &Tensor,
        w: &Fp8Matrix,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let (n, k) = w.dims();
        let rows = x.elem_count() / k.max(1);
        if k % 16 != 0 || rows == 0 || rows > 4 || rows * k != x.elem_count() {
            bail!(
                "the FP8 gemv takes 1..=4 rows of {k} values (a multiple of 16), got {:?}",
                x.shape()
            );
        }
        let weights = [aligned_ptr(w.codes())?, ptr(w.scales())?];
        let shape = GemvShape { rows, n, k };
        self.launch_gemv(name, columns_per_warp, x, &weights, shape, residual, out)
    }

    /// Launches a matrix-product kernel taking (x, the weight's arguments, residual, y, M, N,
    /// K), `columns_per_warp` outputs per warp, and returns y: x's shape with N last.
    #[allow(clippy::too_many_arguments)]
    fn launch_gemv(
        &self,
        kernel: &str,
        columns_per_warp: usize,
        x: &Tensor,
        weights: &[Arg],
        shape: GemvShape,
        residual: Option<&Tensor>,
        out: DType,
    ) -> Result<Tensor> {
        let GemvShape { rows, n, k } = shape;
        let mut dims = x.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = n;
        let y = self.alloc(out, dims)?;
        const WARPS: usize = 8;
        let cfg = LaunchConfig {
            grid_dim: (n.div_ceil(WARPS * columns_per_warp) as u32, 1, 1),
            block_dim: ((WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut args = vec![aligned_ptr(x)?];
        args.extend_from_slice(weights);
        args.extend([
            self.residual(residual, &y, out)?,
            ptr(&y)?,
            Arg::I32(rows as i32),
            Arg::I32(n as i32),
            Arg::I32(k as i32),
        ]);
        self.launch(kernel, cfg, &args)?;
        Ok(y)
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
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv(
        &self,
        qkv: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        pos: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        heads: usize,
        kv_heads: usize,
    ) -> Result<Tensor> {
        let (b, t, _) = qkv.dims3()?;
        let (_, _, capacity, hd) = k_cache.dims4()?;
        let q = self.alloc(qkv.dtype(), (b, heads, t, hd))?;
        let cfg = LaunchConfig {
            grid_dim: ((b * t) as u32, (heads + kv_heads) as u32, 1),
            block_dim: ((hd / 2) as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let args = [
            ptr(qkv)?,
            ptr(cos)?,
            ptr(sin)?,
            ptr(pos)?,
            ptr(&q)?,
            ptr(k_cache)?,
            ptr(v_cache)?,
            Arg::I32(t as i32),
            Arg::I32(heads as i32),
            Arg::I32(kv_heads as i32),
            Arg::I32(hd as i32),
            Arg::I32(capacity as i32),
        ];
        self.launch(typed("rope_kv", qkv.dtype())?, cfg, &args)?;
        Ok(q)
    }

    /// Attention of q (batch, heads, seq, head_dim) at positions `pos[0]..` over the cached
    /// keys up to each query; returns (batch, seq, heads·head_dim).
    pub fn attention(
        &self,
        q: &Tensor,
        k_cache: &Tensor,
        v_cache: &Tensor,
        pos: &Tensor,
    ) -> Result<Tensor> {
        let (b, heads, t, hd) = q.dims4()?;
        let (_, kv_heads, capacity, _) = k_cache.dims4()?;
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
        // Key subsets for the value pass: as many as fit 256 threads in whole warps.
        let subsets = (1..=(256 / chunks).max(1))
            .rev()
            .find(|s| (s * chunks) % 32 == 0)
            .ok_or_else(|| {
                candle_core::Error::Msg(format!("no warp-aligned block for head_dim {hd}"))
            })?;
        let splits = capacity.div_ceil(ATTENTION_KEYS_PER_BLOCK);
        let keys = capacity.div_ceil(splits);
        let shared = (group * hd + group * keys + subsets * group * hd + 32) * 4;
        if shared > 48 * 1024 {
            bail!("fused attention needs {shared} bytes of shared memory for head_dim {hd}");
        }
        let out = self.alloc(q.dtype(), (b, t, heads * hd))?;
        let partials = self.alloc(DType::F32, b * heads * t * splits * (hd + 2))?;
        let cfg = LaunchConfig {
            grid_dim: ((b * kv_heads) as u32, t as u32, splits as u32),
            block_dim: ((subsets * chunks) as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        let args = [
            ptr(q)?,
            ptr(k_cache)?,
            ptr(v_cache)?,
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
            // Lanes sharing a key in the score pass: enough to cover its chunks, at most a warp.
            Arg::I32(chunks.next_power_of_two().min(32) as i32),
        ];
        self.launch(typed("attention", q.dtype())?, cfg, &args)?;
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

/// A product's rows of x, outputs and inputs.
#[derive(Clone, Copy)]
struct GemvShape {
    rows: usize,
    n: usize,
    k: usize,
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

fn typed(name: &'static str, dtype: DType) -> Result<&'static str> {
    Ok(match (name, dtype) {
        ("rope_kv", DType::F32) => "rope_kv_f32",
        ("rope_kv", DType::BF16) => "rope_kv_bf16",
        ("attention", DType::F32) => "attention_f32",
        ("attention", DType::BF16) => "attention_bf16",
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
    fn kernels_compile_with_nvrtc() {
        let ptx = crate::gpu::compile("sm_90", SOURCES.concat()).unwrap_or_else(|e| panic!("{e}"));
        for name in FUNCTIONS {
            assert!(
                ptx.contains(&format!(".entry {name}(")),
                "no kernel {name} in the PTX"
            );
        }
    }
}
