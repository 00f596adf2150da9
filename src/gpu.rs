//! CUDA specifics shared by both models (only with `--features cuda`): capturing work
//! enqueued on a device's stream as a CUDA graph, and stream priorities.

use candle_core::cuda_backend::cudarc::driver::sys::{
    self, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use candle_core::cuda_backend::cudarc::driver::{CudaGraph, CudaSlice};
use candle_core::cuda_backend::cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::op::BackpropOp;
use candle_core::{CudaDevice, Device, Result, Shape, Storage, Tensor};

/// Which captured steps run as graphs: `HEARTSTREAM_CUDA_GRAPH=0` runs every one eagerly
/// instead, `HEARTSTREAM_<PART>_GRAPH=0` those of one part (`LM`, `FLOW`), to measure what
/// the graphs save.
pub fn graphs_enabled(part: &str) -> bool {
    let on = |name: &str| std::env::var(name).map_or(true, |v| v != "0");
    on("HEARTSTREAM_CUDA_GRAPH") && on(&format!("HEARTSTREAM_{part}_GRAPH"))
}

/// Runs `record` once for real, then captures what it enqueues on `device`'s stream into a
/// graph, uploaded and ready to launch. The real run loads every kernel and fills candle's
/// cache of the small host→device copies its ops make (shapes, strides), which capture may
/// only read. Everything `record` touches must keep its address for every replay.
pub fn run_and_capture(device: &Device, record: impl Fn() -> Result<()>) -> Result<CudaGraph> {
    let Device::Cuda(dev) = device else {
        candle_core::bail!("CUDA graph capture needs a CUDA device");
    };
    let _cache = dev.enable_cuda_graph_htod_cache();
    record()?;
    let stream = dev.cuda_stream();
    stream
        .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        .w()?;
    // End the capture whatever happened, or the stream stays unusable; a failed capture
    // also leaves errors that drops could not return in the context: clear them, so the
    // work runs on eagerly instead of failing later.
    let recorded = record();
    let ended = stream.end_capture(CUgraphInstantiate_flags(0));
    if recorded.is_err() || ended.is_err() {
        let _ = stream.context().check_err();
    }
    let graph = ended.w()?;
    recorded?;
    let graph = graph.ok_or_else(|| candle_core::Error::Msg("empty CUDA graph".into()))?;
    graph.upload().w()?;
    Ok(graph)
}

/// A CUDA graph handle may be launched from any thread of its context; whoever holds it
/// launches it from one thread at a time (`&mut`-free launches are serialised by the
/// owners: a step cache hands each graph to one solve at a time).
pub struct SendGraph(CudaGraph);

// SAFETY: see `SendGraph`: the exec handle is used by one owner at a time, and cudarc binds
// the context to the launching thread.
unsafe impl Send for SendGraph {}

impl From<CudaGraph> for SendGraph {
    fn from(graph: CudaGraph) -> Self {
        Self(graph)
    }
}

impl SendGraph {
    pub fn launch(&self) -> Result<()> {
        self.0.launch().w()
    }
}

/// candle keeps the small parameter arrays (shapes, strides) that captured kernels read in
/// a cache local to the capturing thread: a graph is valid only while that thread lives.
/// Captures therefore happen on a thread of their own that lives as long as the graphs,
/// whichever thread asked for them. Owners keep their graphs declared (dropped) before it.
pub struct CaptureThread {
    jobs: Option<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Default for CaptureThread {
    fn default() -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let thread = std::thread::Builder::new()
            .name("heartstream graph capture".into())
            .spawn(move || queue.iter().for_each(|job| job()))
            .ok();
        Self {
            jobs: Some(jobs),
            thread,
        }
    }
}

impl CaptureThread {
    /// Runs `job` on the capture thread and waits for its result.
    pub fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (reply, result) = std::sync::mpsc::channel();
        let jobs = self.jobs.as_ref().filter(|_| self.thread.is_some());
        let jobs = jobs.ok_or_else(|| anyhow::anyhow!("the graph capture thread did not start"))?;
        jobs.send(Box::new(move || {
            let _ = reply.send(job());
        }))
        .map_err(|_| anyhow::anyhow!("the graph capture thread has stopped"))?;
        result
            .recv()
            .map_err(|_| anyhow::anyhow!("the graph capture thread has stopped"))?
    }
}

impl Drop for CaptureThread {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Stops cudarc's automatic cross-stream event tracking on `device`'s context. A captured
/// graph may not wait on events recorded outside it, and with tracking every kernel waits
/// on its buffers' last events; so a context whose work is captured must order its streams
/// itself. The codec's flow-matching context does: its only cross-stream hand-off (latents
/// to the ScalarModel's stream) is preceded by a synchronisation (`ScalarStream::push`).
pub fn order_streams_manually(device: &Device) {
    if let Device::Cuda(dev) = device {
        // SAFETY: see above: every buffer of this context that another stream reads is
        // complete (synchronised) before it is read, and lives until that read completes.
        unsafe { dev.cuda_stream().context().disable_event_tracking() };
    }
}

/// Gives `device`'s stream the GPU's highest scheduling priority: its kernels (and graphs
/// launched on it) take free multiprocessors before those of normal-priority streams, so
/// the codec's work is never queued behind the LM's back-to-back frame steps. A no-op on
/// the CPU. Returns the priority set (lower is more urgent).
pub fn raise_priority(device: &Device) -> Result<Option<i32>> {
    let Device::Cuda(dev) = device else {
        return Ok(None);
    };
    let stream = dev.cuda_stream();
    stream.context().bind_to_thread().w()?;
    let (_, greatest) =
        candle_core::cuda_backend::cudarc::driver::result::stream::get_priority_range().w()?;
    // SAFETY: a zeroed value is a valid `CUlaunchAttributeValue`; only `priority` is read
    // for this attribute, and the stream outlives the call.
    unsafe {
        let mut value: sys::CUlaunchAttributeValue = std::mem::zeroed();
        value.priority = greatest;
        sys::cuStreamSetAttribute(
            stream.cu_stream(),
            sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PRIORITY,
            &value,
        )
        .result()
        .w()?;
        let mut read = 0;
        sys::cuStreamGetPriority(stream.cu_stream(), &mut read)
            .result()
            .w()?;
        Ok(Some(read))
    }
}

/// Compiled kernel code cached on disk, keyed by its source and the GPU architecture, so a
/// second start skips NVRTC: `$HEARTSTREAM_CACHE_DIR`, else `$XDG_CACHE_HOME/heartstream`,
/// else `~/.cache/heartstream`. A cache that cannot be read or written is ignored (the code
/// is compiled as if there were none). Returns the code and whether it came from the cache.
pub fn cached_ptx(
    module: &str,
    source: &str,
    arch: &'static str,
) -> std::result::Result<(String, bool), String> {
    let key = crate::hash::fnv1a(source.bytes().chain(arch.bytes()));
    let path = cache_dir().map(|d| d.join(format!("{module}-{arch}-{key:016x}.ptx")));
    if let Some(ptx) = path.as_ref().and_then(|p| std::fs::read_to_string(p).ok()) {
        return Ok((ptx, true));
    }
    let ptx = compile(arch, source.to_string())?;
    if let Some(path) = &path {
        if let Err(e) = store(path, &ptx) {
            tracing::info!("kernel cache {} not written: {e}", path.display());
        }
    }
    Ok((ptx, false))
}

fn cache_dir() -> Option<std::path::PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    var("HEARTSTREAM_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("heartstream")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/heartstream")))
}

/// Written beside and renamed into place: a concurrent start never reads half a file.
fn store(path: &std::path::Path, ptx: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut temp, ptx.as_bytes())?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// One of our CUDA source files as a module: compiled once per process (through the disk
/// cache of [`cached_ptx`]); load its kernels with
/// `dev.get_or_load_custom_func(kernel, module.name(), module.ptx(dev)?)`.
pub struct KernelModule {
    name: &'static str,
    source: &'static str,
    ptx: std::sync::OnceLock<std::result::Result<String, String>>,
}

impl KernelModule {
    pub const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            ptx: std::sync::OnceLock::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The module's PTX for `dev`'s architecture.
    pub fn ptx(&self, dev: &CudaDevice) -> Result<&str> {
        let arch = compute_arch(dev)?;
        let ptx = self
            .ptx
            .get_or_init(|| cached_ptx(self.name, self.source, arch).map(|(ptx, _)| ptx));
        ptx.as_deref()
            .map_err(|e| candle_core::Error::Msg(format!("the CUDA kernels of {}: {e}", self.name)))
    }
}

/// `sm_XY` of the device, for NVRTC.
pub fn compute_arch(dev: &CudaDevice) -> Result<&'static str> {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute::*;
    let ctx = dev.cuda_stream().context().clone();
    let major = ctx
        .attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
        .w()?;
    let minor = ctx
        .attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
        .w()?;
    // NVRTC wants a 'static string; there are few architectures, so leak one per process.
    Ok(Box::leak(format!("sm_{major}{minor}").into_boxed_str()))
}

/// A buffer our own kernels filled, as a tensor of `shape` on `dev` (no gradient tracking).
pub fn tensor_of<T: CudaDType>(
    slice: CudaSlice<T>,
    dev: &CudaDevice,
    shape: impl Into<Shape>,
) -> Tensor {
    let storage = T::wrap_cuda_slice(slice, dev.clone());
    Tensor::from_storage(Storage::Cuda(storage), shape, BackpropOp::none(), false)
}

/// PTX of `source` for `arch` (NVRTC needs no GPU).
pub fn compile(arch: &'static str, source: String) -> std::result::Result<String, String> {
    let opts = CompileOptions {
        arch: Some(arch),
        ..Default::default()
    };
    compile_ptx_with_opts(source, opts)
        .map(|p| p.to_src())
        .map_err(|e| format!("{e:?}"))
}

/// `device`'s pools now, or `None` off a GPU (or where the driver does not say).
pub fn pool_bytes(device: &Device) -> Option<crate::device::PoolBytes> {
    use sys::CUgraphMem_attribute::CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT;
    use sys::CUmemPool_attribute::{
        CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
    };
    let ctx = bound_context(device).ok()??;
    let pool = default_pool(&ctx).ok()?;
    let mut out = crate::device::PoolBytes::default();
    // SAFETY: each attribute asked for is a 64-bit count written into the u64 passed; the
    // pool handle is the device's default pool, owned by the driver.
    unsafe {
        let attr =
            |a, v: &mut u64| sys::cuMemPoolGetAttribute(pool, a, v as *mut u64 as *mut _).result();
        attr(CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT, &mut out.pool_reserved).ok()?;
        attr(CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &mut out.pool_used).ok()?;
        sys::cuDeviceGetGraphMemAttribute(
            ctx.cu_device(),
            CU_GRAPH_MEM_ATTR_RESERVED_MEM_CURRENT,
            &mut out.graphs_reserved as *mut u64 as *mut _,
        )
        .result()
        .ok()?;
    }
    Some(out)
}

/// Waits for `device`'s work and hands the pool's free blocks back to the GPU (they stay
/// reserved after a model's loading freed its temporaries, and would count against the
/// song's memory).
pub fn release_free_memory(device: &Device) -> Result<()> {
    let Some(ctx) = bound_context(device)? else {
        return Ok(());
    };
    ctx.synchronize().w()?;
    let pool = default_pool(&ctx)?;
    // SAFETY: trimming the default pool releases only blocks no allocation holds.
    unsafe { sys::cuMemPoolTrimTo(pool, 0) }.result().w()
}

/// `device`'s CUDA context, made current on this thread (the driver calls below act on the
/// current context); `None` off a GPU.
fn bound_context(
    device: &Device,
) -> Result<Option<std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaContext>>> {
    let Device::Cuda(dev) = device else {
        return Ok(None);
    };
    let ctx = dev.cuda_stream().context().clone();
    ctx.bind_to_thread().w()?;
    Ok(Some(ctx))
}

/// The stream-ordered pool every allocation of `ctx`'s device comes from (cudarc allocates
/// with `cuMemAllocAsync`, which uses the device's default pool).
fn default_pool(
    ctx: &candle_core::cuda_backend::cudarc::driver::CudaContext,
) -> Result<sys::CUmemoryPool> {
    let mut pool = std::ptr::null_mut();
    // SAFETY: the driver writes the handle of the device's default pool, which it owns.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .w()?;
    Ok(pool)
}

/// Lets the driver size each thread's call stack to what the kernels launched on `device`'s
/// GPU need, instead of reserving CUDA's default 1 KiB for every thread the GPU can hold: on
/// an H200 that default is 264 MiB of the context's memory (measured: 659 → 395 MiB in use),
/// while our kernels and candle's need a small fraction of it. The driver grows the reserve
/// at a launch that needs more (CUDA's `cudaLimitStackSize`), once.
pub fn size_stacks_on_demand(device: &Device) -> Result<()> {
    if bound_context(device)?.is_none() {
        return Ok(());
    }
    // SAFETY: setting a limit of the current context; no memory is touched.
    unsafe { sys::cuCtxSetLimit(sys::CUlimit::CU_LIMIT_STACK_SIZE, 0) }
        .result()
        .w()
}
