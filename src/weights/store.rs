use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use safetensors::tensor::TensorInfo;

use super::WeightsError;
use crate::files::Entry;

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const LAYOUT: &str = "config.json plus model.safetensors, or model-0000N-of-0000M.safetensors \
                      shards listed by model.safetensors.index.json";
const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];

/// Most bytes of a tensor read into host memory at once: large tensors (the fp32 text
/// embeddings are 1.6 GB) arrive in blocks of whole rows.
const BLOCK_BYTES: usize = 64 << 20;

/// Blocks bound for a GPU are smaller: each crosses from one of two page-locked buffers.
#[cfg(feature = "cuda")]
const GPU_BLOCK_BYTES: usize = super::upload::UPLOAD_BYTES;
#[cfg(not(feature = "cuda"))]
const GPU_BLOCK_BYTES: usize = BLOCK_BYTES;

/// Where the time of reading checkpoint tensors went, summed over the blocks this thread read
/// (a model loads on one thread, so a thread's totals before and after a load are that load's).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ReadTimes {
    /// Bytes read from the shards.
    pub bytes: u64,
    /// Positioned reads out of the files (the page cache, or the disk), each read thread
    /// checking its part to be finite as soon as it has it (while it is in the core's cache).
    pub read_ms: f64,
    /// Copying each block to its device: on a GPU, issuing each asynchronous copy and waiting
    /// for the one before the last to free its page-locked buffer.
    pub copy_ms: f64,
}

impl ReadTimes {
    /// This thread's totals so far.
    pub fn of_this_thread() -> Self {
        THREAD_READ_TIMES.with(|t| t.get())
    }

    /// What was added since `before` (an earlier reading of the same thread).
    pub fn since(self, before: Self) -> Self {
        Self {
            bytes: self.bytes - before.bytes,
            read_ms: self.read_ms - before.read_ms,
            copy_ms: self.copy_ms - before.copy_ms,
        }
    }

    fn add_block(bytes: usize, read: Duration, copy: Duration) {
        THREAD_READ_TIMES.with(|t| {
            let mut v = t.get();
            v.bytes += bytes as u64;
            v.read_ms += read.as_secs_f64() * 1e3;
            v.copy_ms += copy.as_secs_f64() * 1e3;
            t.set(v);
        });
    }
}

thread_local! {
    static THREAD_READ_TIMES: std::cell::Cell<ReadTimes> = const {
        std::cell::Cell::new(ReadTimes { bytes: 0, read_ms: 0.0, copy_ms: 0.0 })
    };
}

/// The safetensors files of one model folder. Opening reads only their headers; a tensor's
/// bytes are read when it is loaded, a block of rows at a time with positioned reads, so the
/// host holds about one block however large the checkpoint (no memory map whose touched pages
/// would count against the process until the whole model had been read).
pub struct WeightStore {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// tensor name -> (index into `shards`, where and how it is stored)
    routing: HashMap<String, (usize, TensorInfo)>,
    /// Where blocks are read to, reused for every block: one allocation for the whole load
    /// (fresh pages per block cost more than the copy out of the page cache). u32 for alignment.
    buffer: std::sync::Mutex<Vec<u32>>,
    /// The page-locked buffers blocks cross to a GPU from, made at the first GPU block.
    #[cfg(feature = "cuda")]
    upload: std::sync::Mutex<Option<Box<super::upload::Upload>>>,
}

struct Shard {
    path: PathBuf,
    file: File,
    /// File offset of the byte buffer the tensors' offsets count from.
    data_start: u64,
}

impl WeightStore {
    pub fn open(dir: &Path) -> Result<Self, WeightsError> {
        match Entry::at(dir) {
            Entry::Folder => {}
            Entry::Nothing => {
                return Err(WeightsError::MissingFolder {
                    dir: dir.to_path_buf(),
                    expected: LAYOUT,
                });
            }
            other => return Err(not_regular(dir, other, "a model folder")),
        }
        let shard_paths = shard_files(dir)?;
        let mut shards = Vec::with_capacity(shard_paths.len());
        let mut routing = HashMap::new();
        for (i, path) in shard_paths.into_iter().enumerate() {
            let (shard, tensors) = read_header(path)?;
            for (name, info) in tensors {
                routing.insert(name, (i, info));
            }
            shards.push(shard);
        }
        let store = Self {
            dir: dir.to_path_buf(),
            shards,
            routing,
            buffer: std::sync::Mutex::new(Vec::new()),
            #[cfg(feature = "cuda")]
            upload: std::sync::Mutex::new(None),
        };
        store.check_index()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every stored tensor with its shape, sorted by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.routing
            .iter()
            .map(|(name, (_, info))| (name.clone(), info.shape.clone()))
            .collect()
    }

    /// Loads one tensor, converting from the stored dtype to `dtype` on `device`, a block at a
    /// time, so a GPU load never holds the model on the host. On a GPU the copies are left
    /// running on `device`'s stream: work queued there later sees the tensor, and another
    /// stream must wait for it first (`Device::synchronize`; waiting after every tensor kept
    /// the next one from being read while the last block copied).
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        if device.is_cpu() {
            return self.load_on_host(name, dtype, BLOCK_BYTES);
        }
        let blocks = self.blocks_of(name, block_bytes(device), device)?;
        let parts = blocks
            .map(|block| {
                block?
                    .to_dtype(dtype)
                    .map_err(|e| self.fail(name, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(&parts, 0).map_err(|e| self.fail(name, e.to_string()))
    }

    /// [`load`](Self::load) into host memory: each block, read into the store's buffer, is
    /// converted straight into the tensor's own storage on every core. (A tensor per block,
    /// converted on one core and then joined, cost two copies more: most of the LM's load
    /// time outside reading and copying went to its 1.6 GB of fp32 text embeddings.)
    fn load_on_host(
        &self,
        name: &str,
        dtype: DType,
        block_bytes: usize,
    ) -> Result<Tensor, WeightsError> {
        let blocks = self.blocks_of(name, block_bytes, &Device::Cpu)?;
        match dtype {
            DType::F32 => blocks.into_host::<f32>(),
            DType::BF16 => blocks.into_host::<half::bf16>(),
            DType::F16 => blocks.into_host::<half::f16>(),
            other => Err(self.fail(name, format!("cannot be loaded as {other:?}"))),
        }
    }

    /// One tensor as tensors on `device` in its stored dtype: consecutive blocks of whole rows
    /// (slices along the first dimension), each checked to be finite as it is read and copied
    /// to the device from the store's read buffer.
    pub fn blocks_on(&self, name: &str, device: &Device) -> Result<Blocks<'_>, WeightsError> {
        self.blocks_of(name, block_bytes(device), device)
    }

    /// The blocks of `name` on `device`, copied there from one read buffer the store keeps.
    fn blocks_of(
        &self,
        name: &str,
        block_bytes: usize,
        device: &Device,
    ) -> Result<Blocks<'_>, WeightsError> {
        let (i, info) = self.routing.get(name).ok_or_else(|| WeightsError::Tensor {
            name: name.to_string(),
            path: self.dir.clone(),
            reason: "not present in any safetensors file".to_string(),
        })?;
        let shard = &self.shards[*i];
        let dtype = candle_dtype(info.dtype).map_err(|reason| self.fail(name, reason))?;
        let rows = info.shape.first().copied().unwrap_or(1);
        let row_elems: usize = info.shape.iter().skip(1).product();
        let row_bytes = row_elems * dtype.size_in_bytes();
        Ok(Blocks {
            store: self,
            device: device.clone(),
            shard,
            name: name.to_string(),
            info,
            dtype,
            rows_per_block: (block_bytes / row_bytes.max(1)).clamp(1, rows.max(1)),
            next_row: 0,
            rows,
            row_bytes,
        })
    }

    fn fail(&self, name: &str, reason: String) -> WeightsError {
        let path = match self.routing.get(name) {
            Some((i, _)) => self.shards[*i].path.clone(),
            None => self.dir.clone(),
        };
        WeightsError::Tensor {
            name: name.to_string(),
            path,
            reason,
        }
    }

    /// With an index file, every tensor it names must be in the shard it names.
    fn check_index(&self) -> Result<(), WeightsError> {
        let index_path = self.dir.join(INDEX);
        if Entry::at(&index_path) != Entry::File {
            return Ok(());
        }
        for (name, file) in read_index(&index_path)? {
            let found = self.routing.get(&name).map(|(i, _)| &self.shards[*i].path);
            if found.map(|p| p.file_name()) != Some(Some(std::ffi::OsStr::new(&file))) {
                return Err(WeightsError::BadIndex {
                    path: index_path,
                    reason: format!(
                        "lists tensor {name} in {file}, but that file does not hold it"
                    ),
                });
            }
        }
        Ok(())
    }
}

/// The safetensors files of a folder, in load order: the shards named by the index, or the
/// single `model.safetensors`. Pickle checkpoints are refused by name.
fn shard_files(dir: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let index_path = dir.join(INDEX);
    match Entry::at(&index_path) {
        Entry::File => return indexed_shards(dir, &index_path),
        Entry::Nothing => {}
        other => return Err(not_regular(&index_path, other, "the shard index (JSON)")),
    }
    let single = dir.join(SINGLE);
    match Entry::at(&single) {
        Entry::File => return Ok(vec![single]),
        Entry::Nothing => {}
        other => {
            return Err(not_regular(
                &single,
                other,
                "the model weights (safetensors)",
            ))
        }
    }
    if let Some(pickle) = find_pickle(dir) {
        return Err(WeightsError::Pickle { path: pickle });
    }
    Err(WeightsError::MissingFile {
        path: single,
        expected: format!("the model weights ({LAYOUT})"),
    })
}

/// The shards an index names, each a file inside `dir`: an entry may not reach outside the
/// model folder (`../other/model.safetensors`, `/etc/passwd`).
fn indexed_shards(dir: &Path, index_path: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let mut names: Vec<String> = read_index(index_path)?.into_values().collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            if !is_plain_file_name(&n) {
                return Err(WeightsError::BadIndex {
                    path: index_path.to_path_buf(),
                    reason: format!(
                        "names the shard {n:?}: expected a file name inside {} \
                         (no folders, no \"..\", no absolute paths)",
                        dir.display()
                    ),
                });
            }
            let p = dir.join(&n);
            match Entry::at(&p) {
                Entry::File => Ok(p),
                Entry::Nothing => Err(WeightsError::MissingFile {
                    path: p,
                    expected: format!("a shard listed by {}", index_path.display()),
                }),
                other => Err(not_regular(&p, other, "a safetensors shard")),
            }
        })
        .collect()
}

/// One normal path component: what a shard's name in the official index is.
fn is_plain_file_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(std::path::Component::Normal(_)), None)
    )
}

fn not_regular(path: &Path, found: Entry, expected: &str) -> WeightsError {
    WeightsError::NotRegular {
        path: path.to_path_buf(),
        found: found.describe(),
        expected: expected.to_string(),
    }
}

/// The most stored bytes of a block bound for `device`.
fn block_bytes(device: &Device) -> usize {
    if device.is_cuda() {
        GPU_BLOCK_BYTES
    } else {
        BLOCK_BYTES
    }
}

/// Fills `bytes` from `file` at `offset` and returns `check` of them (the first flagged
/// element's index, counting `elem` bytes an element). Large reads are split over several
/// threads — one thread copies out of the page cache at a few GB/s, which alone kept a 22 GB
/// checkpoint loading for 10 s — and each thread checks its part right after reading it, while
/// it is still in the core's cache (a second pass over the block cost as much as the read).
fn read_checked(
    file: &File,
    bytes: &mut [u8],
    offset: u64,
    elem: usize,
    check: impl Fn(&[u8]) -> Option<usize> + Sync,
) -> std::io::Result<Option<usize>> {
    // A 32 MB GPU block is read by up to 16 threads (with 8 MB a thread, only 4).
    const PER_THREAD: usize = 2 << 20;
    const MAX_THREADS: usize = 16;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(bytes.len().div_ceil(PER_THREAD));
    if threads <= 1 {
        file.read_exact_at(bytes, offset)?;
        return Ok(check(bytes));
    }
    // Parts of whole elements, so each part's check sees whole values.
    let part = bytes.len().div_ceil(threads).next_multiple_of(elem);
    let check = &check;
    std::thread::scope(|s| {
        let reads: Vec<_> = bytes
            .chunks_mut(part)
            .enumerate()
            .map(|(k, chunk)| {
                s.spawn(move || {
                    file.read_exact_at(chunk, offset + (k * part) as u64)?;
                    Ok(check(chunk).map(|i| k * part / elem + i))
                })
            })
            .collect();
        let mut first = None;
        for read in reads {
            let found = read
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a read thread panicked")))?;
            first = first.or(found);
        }
        Ok(first)
    })
}

/// The index of the first element of `data` (stored as `dtype`) that is NaN or infinite: one
/// would otherwise turn into silent garbage (every code 0, NaN audio).
fn first_non_finite(dtype: DType, data: &[u8]) -> Option<usize> {
    match dtype {
        DType::F32 => {
            first_flagged::<4>(data, |b| u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000)
        }
        DType::BF16 => first_flagged::<2>(data, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        _ => first_flagged::<2>(data, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
    }
}

/// The index of the first element whose bytes `bad` flags.
fn first_flagged<const N: usize>(data: &[u8], bad: fn([u8; N]) -> bool) -> Option<usize> {
    data.chunks_exact(N)
        .position(|b| bad(b.try_into().expect("chunks of N bytes")))
}

fn find_pickle(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e))
    })
}

fn read_index(path: &Path) -> Result<HashMap<String, String>, WeightsError> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let bad = |reason: String| WeightsError::BadIndex {
        path: path.to_path_buf(),
        reason,
    };
    let text = crate::files::read_regular(path, "the shard index (JSON)")
        .map_err(|e| bad(format!("{e:#}")))?;
    let index: Index = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "expected {{\"weight_map\": {{tensor: file}}}}: {e}"
        ))
    })?;
    Ok(index.weight_map)
}

/// Reads a shard's header: the tensors it holds and where its data starts. Only the header's
/// pages are read; the map is dropped before any tensor is loaded.
fn read_header(path: PathBuf) -> Result<(Shard, Vec<(String, TensorInfo)>), WeightsError> {
    let corrupt = |reason: String| WeightsError::Corrupt {
        path: path.clone(),
        reason,
    };
    let file = File::open(&path).map_err(|e| corrupt(e.to_string()))?;
    // SAFETY: the file is mapped read-only for the header parse; like every mmap-based
    // loader we assume the checkpoint is not modified while it is being read.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| corrupt(e.to_string()))?;
    let (header_len, metadata) =
        safetensors::SafeTensors::read_metadata(&map).map_err(|e| corrupt(e.to_string()))?;
    let tensors = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.clone()))
        .collect();
    let shard = Shard {
        path: path.clone(),
        file,
        data_start: 8 + header_len as u64,
    };
    Ok((shard, tensors))
}

/// The candle dtype of a stored weight. Weights must be floating point: integer data under a
/// weight's name would otherwise turn into silent garbage.
fn candle_dtype(dtype: safetensors::Dtype) -> Result<DType, String> {
    use safetensors::Dtype;
    match dtype {
        Dtype::F32 => Ok(DType::F32),
        Dtype::BF16 => Ok(DType::BF16),
        Dtype::F16 => Ok(DType::F16),
        other => Err(format!(
            "stored as {other:?}: expected floating-point weights (F32, BF16 or F16)"
        )),
    }
}

/// The blocks of one tensor, read in order (see [`WeightStore::blocks_on`]).
pub struct Blocks<'a> {
    store: &'a WeightStore,
    device: Device,
    shard: &'a Shard,
    name: String,
    info: &'a TensorInfo,
    dtype: DType,
    rows_per_block: usize,
    next_row: usize,
    rows: usize,
    row_bytes: usize,
}

/// Where a block of rows lies: its file offset, first element and element count.
struct Span {
    offset: u64,
    first_elem: usize,
    len: usize,
}

impl Blocks<'_> {
    fn span(&self, first: usize, count: usize) -> Span {
        let elem = self.dtype.size_in_bytes();
        Span {
            offset: self.shard.data_start
                + (self.info.data_offsets.0 + first * self.row_bytes) as u64,
            first_elem: first * self.row_bytes / elem,
            len: count * self.row_bytes / elem,
        }
    }

    /// The next block's first row and row count.
    fn next_rows(&mut self) -> Option<(usize, usize)> {
        // A scalar or an empty tensor is one block.
        let done = if self.rows == 0 || self.info.shape.is_empty() {
            self.next_row > 0
        } else {
            self.next_row >= self.rows
        };
        if done {
            return None;
        }
        let first = self.next_row;
        let count = self.rows_per_block.min(self.rows.saturating_sub(first));
        self.next_row = first + count.max(1);
        Some((first, count))
    }

    /// Rows `first..first + count`, read into the store's buffer and copied to the device.
    fn read(&self, first: usize, count: usize) -> Result<Tensor, WeightsError> {
        let mut shape = self.info.shape.clone();
        match shape.first_mut() {
            Some(rows) => *rows = count,
            None => shape.clear(),
        }
        let Span {
            offset,
            first_elem,
            len,
        } = self.span(first, count);
        match self.dtype {
            DType::F32 => self.read_values::<f32>(len, offset, first_elem, &shape),
            DType::BF16 => self.read_values::<half::bf16>(len, offset, first_elem, &shape),
            _ => self.read_values::<half::f16>(len, offset, first_elem, &shape),
        }
    }

    fn read_values<T: bytemuck::Pod + candle_core::WithDType>(
        &self,
        len: usize,
        offset: u64,
        first_elem: usize,
        shape: &[usize],
    ) -> Result<Tensor, WeightsError> {
        let bytes = len * std::mem::size_of::<T>();
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = &self.device {
            if len > 0 && bytes <= super::upload::UPLOAD_BYTES {
                return self.read_to_gpu(dev, bytes, offset, first_elem, shape);
            }
        }
        let mut buffer = self.buffer()?;
        let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buffer)[..bytes];
        let started = Instant::now();
        self.read_checked(bytes, offset, first_elem)?;
        let read = started.elapsed();
        // The buffer is 4-byte aligned (u32s), enough for every stored dtype.
        let block = Tensor::from_slice(bytemuck::cast_slice::<u8, T>(bytes), shape, &self.device)
            .map_err(|e| self.store.fail(&self.name, e.to_string()))?;
        ReadTimes::add_block(bytes.len(), read, started.elapsed() - read);
        Ok(block)
    }

    /// [`read_values`](Self::read_values) to a GPU through the store's page-locked buffers:
    /// the block is read and checked in one, and its copy is left running. (Rounding f32 to
    /// bf16 happens on the device: rounding on the host halved the bytes of a pageable copy,
    /// but cost more than a page-locked copy of them.)
    #[cfg(feature = "cuda")]
    fn read_to_gpu(
        &self,
        dev: &candle_core::CudaDevice,
        bytes: usize,
        offset: u64,
        first_elem: usize,
        shape: &[usize],
    ) -> Result<Tensor, WeightsError> {
        let fail = |reason: String| self.store.fail(&self.name, reason);
        let mut upload = self
            .store
            .upload
            .lock()
            .map_err(|_| fail("the upload buffers were poisoned by a panic".into()))?;
        if upload.is_none() {
            let made = super::upload::Upload::new(dev).map_err(|e| fail(e.to_string()))?;
            *upload = Some(Box::new(made));
        }
        let upload = upload.as_mut().expect("made above");
        let (target, waited) = upload.next_buffer(bytes).map_err(|e| fail(e.to_string()))?;
        let started = Instant::now();
        self.read_checked(target, offset, first_elem)?;
        let read = started.elapsed();
        let block = upload
            .upload(dev, self.dtype, shape)
            .map_err(|e| fail(e.to_string()))?;
        ReadTimes::add_block(bytes, read, waited + started.elapsed() - read);
        Ok(block)
    }

    /// The whole tensor in host memory as `D`: every block read into the store's buffer and
    /// converted into place (rounded once from the stored values, as `to_dtype` does).
    fn into_host<D: HostValue>(mut self) -> Result<Tensor, WeightsError> {
        let mut out = vec![D::from_f32(0.0); self.info.shape.iter().product()];
        let mut at = 0;
        while let Some((first, count)) = self.next_rows() {
            let span = self.span(first, count);
            let mut buffer = self.buffer()?;
            let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buffer)
                [..span.len * self.dtype.size_in_bytes()];
            let started = Instant::now();
            self.read_checked(bytes, span.offset, span.first_elem)?;
            let read = started.elapsed();
            convert_into(self.dtype, bytes, &mut out[at..at + span.len]);
            ReadTimes::add_block(bytes.len(), read, started.elapsed() - read);
            at += span.len;
        }
        Tensor::from_vec(out, self.info.shape.clone(), &Device::Cpu)
            .map_err(|e| self.store.fail(&self.name, e.to_string()))
    }

    /// The store's read buffer, with room for a block.
    fn buffer(&self) -> Result<std::sync::MutexGuard<'_, Vec<u32>>, WeightsError> {
        let mut buffer = self.store.buffer.lock().map_err(|_| {
            self.store
                .fail(&self.name, "the read buffer was poisoned by a panic".into())
        })?;
        let words = (self.rows_per_block * self.row_bytes).div_ceil(4);
        if buffer.len() < words {
            buffer.resize(words, 0);
        }
        Ok(buffer)
    }

    /// Reads the block's bytes at `offset` (element `first_elem` of the tensor) and fails on
    /// its first value that is not finite.
    fn read_checked(
        &self,
        bytes: &mut [u8],
        offset: u64,
        first_elem: usize,
    ) -> Result<(), WeightsError> {
        let dtype = self.dtype;
        let found = read_checked(
            &self.shard.file,
            bytes,
            offset,
            dtype.size_in_bytes(),
            |b| first_non_finite(dtype, b),
        )
        .map_err(|e| {
            self.store
                .fail(&self.name, format!("reading its data: {e}"))
        })?;
        found.map_or(Ok(()), |i| Err(self.not_finite(first_elem + i)))
    }

    fn not_finite(&self, element: usize) -> WeightsError {
        self.store.fail(
            &self.name,
            format!("element {element} is not finite (NaN or infinity): the checkpoint is corrupt"),
        )
    }
}

/// A host element type a stored value converts to.
trait HostValue: candle_core::WithDType {
    fn from_f32(v: f32) -> Self;
}

impl HostValue for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl HostValue for half::bf16 {
    fn from_f32(v: f32) -> Self {
        half::bf16::from_f32(v)
    }
}

impl HostValue for half::f16 {
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

/// `out[i]` = stored element `i` of `bytes` (4-byte aligned, little-endian as on the host) as
/// `D`, through f32 (exact for the 16-bit formats), on every core.
fn convert_into<D: HostValue>(stored: DType, bytes: &[u8], out: &mut [D]) {
    match stored {
        DType::F32 => {
            let src: &[f32] = bytemuck::cast_slice(bytes);
            super::fill_parallel(out, |i| D::from_f32(src[i]));
        }
        DType::BF16 => {
            let src: &[half::bf16] = bytemuck::cast_slice(bytes);
            super::fill_parallel(out, |i| D::from_f32(src[i].to_f32()));
        }
        _ => {
            let src: &[half::f16] = bytemuck::cast_slice(bytes);
            super::fill_parallel(out, |i| D::from_f32(src[i].to_f32()));
        }
    }
}

impl Iterator for Blocks<'_> {
    type Item = Result<Tensor, WeightsError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (first, count) = self.next_rows()?;
        Some(self.read(first, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, values: &[f32], shape: &[usize]) {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &bytes)
                .unwrap();
        safetensors::serialize_to_file([("w", view)], None, &dir.join(SINGLE)).unwrap();
    }

    #[test]
    fn a_tensor_read_in_blocks_of_rows_reassembles_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..7 * 3 * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
        write(dir.path(), &values, &[7, 3, 2]);
        let store = WeightStore::open(dir.path()).unwrap();
        // 2 rows of 24 bytes fit in 50 bytes: blocks of 2, 2, 2 and 1 rows.
        let blocks: Vec<Tensor> = store
            .blocks_of("w", 50, &Device::Cpu)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rows: Vec<usize> = blocks.iter().map(|b| b.dim(0).unwrap()).collect();
        assert_eq!(rows, [2, 2, 2, 1]);
        let joined = Tensor::cat(&blocks, 0).unwrap();
        assert_eq!(joined.dims(), [7, 3, 2]);
        assert_eq!(
            joined.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            values
        );
        // A row larger than a block is one block of one row.
        assert_eq!(store.blocks_of("w", 4, &Device::Cpu).unwrap().count(), 7);
    }

    #[test]
    fn a_tensor_loaded_into_host_memory_is_its_blocks_converted_and_joined() {
        let dir = tempfile::tempdir().unwrap();
        // Values that bf16 and f16 round (and ties to even), over several blocks.
        let values: Vec<f32> = (0..7 * 3 * 2)
            .map(|i| (i as f32 - 20.0) * 1.003_906_3 + 1.0 / 3.0)
            .collect();
        write(dir.path(), &values, &[7, 3, 2]);
        let store = WeightStore::open(dir.path()).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let blocks: Vec<Tensor> = store
                .blocks_of("w", 50, &Device::Cpu)
                .unwrap()
                .map(|b| b.unwrap().to_dtype(dtype).unwrap())
                .collect();
            let expected = Tensor::cat(&blocks, 0).unwrap();
            let loaded = store.load_on_host("w", dtype, 50).unwrap();
            assert_eq!((loaded.dims(), loaded.dtype()), (expected.dims(), dtype));
            let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            let (got, want) = (bits(&loaded), bits(&expected));
            assert_eq!(
                got.to_vec1::<f32>().unwrap(),
                want.to_vec1::<f32>().unwrap()
            );
        }
        assert!(store.load_on_host("w", DType::U8, 50).is_err());
    }

    #[test]
    fn a_read_split_over_threads_gets_every_byte_in_place_finds_the_first_flagged_and_a_short_file_fails(
    ) {
        use std::io::Write;
        const MARK: u8 = 0xAB;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        // Over 2 MiB a thread: the read is split whenever the machine has two cores. No byte is
        // MARK but those placed below, in the second half (a later thread's part).
        let mut data: Vec<u8> = (0..(19u32 << 20) + 12345)
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 13) % 160) as u8)
            .collect();
        let len = data.len() - 777;
        let marks = [777 + len * 3 / 4, 777 + len / 2 + 13];
        for m in marks {
            data[m] = MARK;
        }
        File::create(&path).unwrap().write_all(&data).unwrap();
        let file = File::open(&path).unwrap();
        let mut got = vec![0u8; len];
        let none = |_: &[u8]| None;
        assert_eq!(read_checked(&file, &mut got, 777, 1, none).unwrap(), None);
        assert!(got == data[777..], "bytes out of place");
        let marked = |b: &[u8]| b.iter().position(|&x| x == MARK);
        let first = read_checked(&file, &mut got, 777, 1, marked).unwrap();
        assert_eq!(
            first,
            Some(len / 2 + 13),
            "the earlier mark, counted from the read's start"
        );
        let mut too_long = vec![0u8; data.len()];
        assert!(read_checked(&file, &mut too_long, 1, 1, none).is_err());
    }

    #[test]
    fn a_non_finite_value_in_a_later_block_is_reported_at_its_element() {
        let dir = tempfile::tempdir().unwrap();
        let mut values = vec![1.0f32; 8 * 4];
        values[29] = f32::NAN;
        write(dir.path(), &values, &[8, 4]);
        let store = WeightStore::open(dir.path()).unwrap();
        let err = store
            .blocks_of("w", 16, &Device::Cpu)
            .unwrap()
            .find_map(|b| b.err())
            .expect("the NaN is found");
        assert!(
            err.to_string().contains("element 29 is not finite"),
            "{err}"
        );
        let err = store.load_on_host("w", DType::BF16, 16).unwrap_err();
        assert!(
            err.to_string().contains("element 29 is not finite"),
            "{err}"
        );
    }
}
