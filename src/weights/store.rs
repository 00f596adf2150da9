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
    /// Positioned reads out of the files (the page cache, or the disk).
    pub read_ms: f64,
    /// The finite-value check.
    pub check_ms: f64,
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
            check_ms: self.check_ms - before.check_ms,
            copy_ms: self.copy_ms - before.copy_ms,
        }
    }

    fn add_block(bytes: usize, read: Duration, check: Duration, copy: Duration) {
        THREAD_READ_TIMES.with(|t| {
            let mut v = t.get();
            v.bytes += bytes as u64;
            v.read_ms += read.as_secs_f64() * 1e3;
            v.check_ms += check.as_secs_f64() * 1e3;
            v.copy_ms += copy.as_secs_f64() * 1e3;
            t.set(v);
        });
    }
}

thread_local! {
    static THREAD_READ_TIMES: std::cell::Cell<ReadTimes> = const {
        std::cell::Cell::new(ReadTimes { bytes: 0, read_ms: 0.0, check_ms: 0.0, copy_ms: 0.0 })
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
    /// Where f32 blocks are rounded to a 16-bit type (on the CPU path), reused too.
    narrow_buffer: std::sync::Mutex<Vec<u16>>,
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
            narrow_buffer: std::sync::Mutex::new(Vec::new()),
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
    /// time, so a GPU load never holds the model on the host. f32 weights bound for a 16-bit
    /// dtype on a GPU are rounded on the host's cores first: half the bytes cross to the
    /// device (the copy bounds loading from the page cache), with the same roundings.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let mut blocks = self.blocks_of(name, block_bytes(device), device)?;
        if device.is_cuda() && matches!(dtype, DType::BF16 | DType::F16) {
            blocks.narrow_to = Some(dtype);
        }
        let parts = blocks
            .map(|block| {
                block?
                    .to_dtype(dtype)
                    .map_err(|e| self.fail(name, e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(&parts, 0).map_err(|e| self.fail(name, e.to_string()))
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
            narrow_to: None,
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

/// Fills `bytes` from `file` at `offset`, large reads split over several threads: one thread
/// copies out of the page cache at a few GB/s, which alone kept a 22 GB checkpoint loading for
/// 10 s.
fn read_parallel(file: &File, bytes: &mut [u8], offset: u64) -> std::io::Result<()> {
    const PER_THREAD: usize = 8 << 20;
    const MAX_THREADS: usize = 8;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS)
        .min(bytes.len().div_ceil(PER_THREAD));
    if threads <= 1 {
        return file.read_exact_at(bytes, offset);
    }
    let part = bytes.len().div_ceil(threads);
    std::thread::scope(|s| {
        let reads: Vec<_> = bytes
            .chunks_mut(part)
            .enumerate()
            .map(|(k, chunk)| {
                s.spawn(move || file.read_exact_at(chunk, offset + (k * part) as u64))
            })
            .collect();
        reads.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("a read thread panicked")))
        })
    })
}

/// The index of the first element of `data` (stored as `dtype`) that is NaN or infinite: one
/// would otherwise turn into silent garbage (every code 0, NaN audio).
fn check_finite(dtype: DType, data: &[u8]) -> Result<(), usize> {
    let found = match dtype {
        DType::F32 => {
            first_non_finite::<4>(data, |b| u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000)
        }
        DType::BF16 => first_non_finite::<2>(data, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        _ => first_non_finite::<2>(data, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
    };
    found.map_or(Ok(()), Err)
}

/// The index of the first element whose bytes `bad` flags. Large tensors are scanned on
/// every core: the check must not add seconds to loading a 15 GB checkpoint.
fn first_non_finite<const N: usize>(data: &[u8], bad: fn([u8; N]) -> bool) -> Option<usize> {
    const PER_THREAD: usize = 8 << 20;
    let scan = |bytes: &[u8]| {
        bytes
            .chunks_exact(N)
            .position(|b| bad(b.try_into().expect("chunks of N bytes")))
    };
    if data.len() <= PER_THREAD {
        return scan(data);
    }
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let chunk = data.len().div_ceil(threads).next_multiple_of(N);
    std::thread::scope(|s| {
        let scans: Vec<_> = data
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| s.spawn(move || scan(part).map(|i| k * chunk / N + i)))
            .collect();
        scans
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .min()
    })
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
    /// A 16-bit dtype f32 blocks are rounded to on the host before the copy.
    narrow_to: Option<DType>,
}

impl Blocks<'_> {
    /// Rows `first..first + count`, read into the store's buffer and copied to the device.
    fn read(&self, first: usize, count: usize) -> Result<Tensor, WeightsError> {
        let mut shape = self.info.shape.clone();
        match shape.first_mut() {
            Some(rows) => *rows = count,
            None => shape.clear(),
        }
        let offset =
            self.shard.data_start + (self.info.data_offsets.0 + first * self.row_bytes) as u64;
        let first_elem = first * self.row_bytes / self.dtype.size_in_bytes();
        let len = count * self.row_bytes / self.dtype.size_in_bytes();
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
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = &self.device {
            let crossing = len * self.narrow_to.unwrap_or(self.dtype).size_in_bytes();
            if len > 0 && crossing <= super::upload::UPLOAD_BYTES {
                return self.read_to_gpu(dev, len, offset, first_elem, shape);
            }
        }
        let fail = |reason: String| self.store.fail(&self.name, reason);
        let mut buffer = self.buffer()?;
        let bytes = len * std::mem::size_of::<T>();
        let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buffer)[..bytes];
        let started = Instant::now();
        self.read_bytes(bytes, offset)?;
        let read = started.elapsed();
        // The buffer is 4-byte aligned (u32s), enough for every stored dtype.
        let block = match (self.dtype, self.narrow_to) {
            (DType::F32, Some(narrow)) => {
                let mut out = self
                    .store
                    .narrow_buffer
                    .lock()
                    .map_err(|_| fail("the narrowing buffer was poisoned by a panic".into()))?;
                let size = out.len().max(len);
                out.resize(size, 0);
                self.narrow(
                    bytemuck::cast_slice(bytes),
                    &mut out[..len],
                    narrow,
                    first_elem,
                )?;
                let checked = started.elapsed();
                let block = narrowed_tensor(&out[..len], narrow, shape, &self.device);
                (block, checked)
            }
            _ => {
                self.check(bytes, first_elem)?;
                let checked = started.elapsed();
                let values = bytemuck::cast_slice::<u8, T>(bytes);
                (Tensor::from_slice(values, shape, &self.device), checked)
            }
        };
        let (block, checked) = block;
        let block = block.map_err(|e| fail(e.to_string()))?;
        let copied = started.elapsed();
        ReadTimes::add_block(bytes.len(), read, checked - read, copied - checked);
        Ok(block)
    }

    /// [`read_values`](Self::read_values) to a GPU through the store's page-locked buffers:
    /// the block is read (and rounded) straight into one, and its copy is left running.
    #[cfg(feature = "cuda")]
    fn read_to_gpu(
        &self,
        dev: &candle_core::CudaDevice,
        len: usize,
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
        let crossing = self.narrow_to.unwrap_or(self.dtype);
        let stored = len * self.dtype.size_in_bytes();
        let started = Instant::now();
        let (target, waited) = upload
            .next_buffer(len * crossing.size_in_bytes())
            .map_err(|e| fail(e.to_string()))?;
        let read_started = Instant::now();
        let read = match self.narrow_to {
            Some(narrow) if self.dtype == DType::F32 => {
                let mut buffer = self.buffer()?;
                let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut buffer)[..stored];
                self.read_bytes(bytes, offset)?;
                let read = read_started.elapsed();
                let out = bytemuck::cast_slice_mut::<u8, u16>(target);
                self.narrow(bytemuck::cast_slice(bytes), out, narrow, first_elem)?;
                read
            }
            _ => {
                self.read_bytes(target, offset)?;
                let read = read_started.elapsed();
                self.check(target, first_elem)?;
                read
            }
        };
        let checked = read_started.elapsed();
        let block = upload
            .upload(dev, crossing, shape)
            .map_err(|e| fail(e.to_string()))?;
        let copy = waited + started.elapsed() - checked - (read_started - started);
        ReadTimes::add_block(stored, read, checked - read, copy);
        Ok(block)
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

    fn read_bytes(&self, bytes: &mut [u8], offset: u64) -> Result<(), WeightsError> {
        read_parallel(&self.shard.file, bytes, offset).map_err(|e| {
            self.store
                .fail(&self.name, format!("reading its data: {e}"))
        })
    }

    /// Fails on the block's first value that is not finite.
    fn check(&self, bytes: &[u8], first_elem: usize) -> Result<(), WeightsError> {
        check_finite(self.dtype, bytes).map_err(|i| self.not_finite(first_elem + i))
    }

    /// `values` rounded to `dtype` (bf16 or f16: to nearest even, as the device's conversion
    /// does) into `out` on every core, checked to be finite in the same pass.
    fn narrow(
        &self,
        values: &[f32],
        out: &mut [u16],
        dtype: DType,
        first_elem: usize,
    ) -> Result<(), WeightsError> {
        let bad = match dtype {
            DType::BF16 => narrow_checked(values, out, |v| half::bf16::from_f32(v).to_bits()),
            _ => narrow_checked(values, out, |v| half::f16::from_f32(v).to_bits()),
        };
        bad.map_or(Ok(()), |i| Err(self.not_finite(first_elem + i)))
    }

    fn not_finite(&self, element: usize) -> WeightsError {
        self.store.fail(
            &self.name,
            format!("element {element} is not finite (NaN or infinity): the checkpoint is corrupt"),
        )
    }
}

/// A tensor of 16-bit `dtype` (bf16 or f16) made from its bits.
fn narrowed_tensor(
    bits: &[u16],
    dtype: DType,
    shape: &[usize],
    device: &Device,
) -> candle_core::Result<Tensor> {
    match dtype {
        DType::BF16 => {
            Tensor::from_slice(bytemuck::cast_slice::<u16, half::bf16>(bits), shape, device)
        }
        _ => Tensor::from_slice(bytemuck::cast_slice::<u16, half::f16>(bits), shape, device),
    }
}

/// `out[i] = round(values[i])` on every core for large blocks; returns the index of the first
/// value that is not finite, if any (the finite check and the rounding read each value once).
fn narrow_checked(values: &[f32], out: &mut [u16], round: fn(f32) -> u16) -> Option<usize> {
    const PER_THREAD: usize = 1 << 20;
    let part = |(values, out): (&[f32], &mut [u16])| {
        let mut bad = None;
        for (i, (v, o)) in values.iter().zip(out.iter_mut()).enumerate() {
            if !v.is_finite() && bad.is_none() {
                bad = Some(i);
            }
            *o = round(*v);
        }
        bad
    };
    if values.len() <= PER_THREAD {
        return part((values, out));
    }
    let threads = std::thread::available_parallelism().map_or(4, |n| n.get());
    let chunk = values.len().div_ceil(threads).max(PER_THREAD);
    std::thread::scope(|s| {
        let parts: Vec<_> = values
            .chunks(chunk)
            .zip(out.chunks_mut(chunk))
            .enumerate()
            .map(|(k, pair)| s.spawn(move || part(pair).map(|i| k * chunk + i)))
            .collect();
        parts
            .into_iter()
            .filter_map(|h| h.join().ok().flatten())
            .min()
    })
}

impl Iterator for Blocks<'_> {
    type Item = Result<Tensor, WeightsError>;

    fn next(&mut self) -> Option<Self::Item> {
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
    fn f32_blocks_rounded_on_the_host_are_what_converting_after_the_copy_gives() {
        let dir = tempfile::tempdir().unwrap();
        // Over a million values (several threads round them), ties and subnormals included.
        let values: Vec<f32> = (0..(1u32 << 21) + 77)
            .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0xbfff_ffff))
            .filter(|v| v.is_finite())
            .take(1 << 21)
            .chain([1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8), 1e-40, -0.0])
            .collect();
        write(dir.path(), &values, &[values.len()]);
        let store = WeightStore::open(dir.path()).unwrap();
        let want = Tensor::from_slice(&values, values.len(), &Device::Cpu).unwrap();
        for dtype in [DType::BF16, DType::F16] {
            let mut blocks = store.blocks_of("w", 1 << 22, &Device::Cpu).unwrap();
            blocks.narrow_to = Some(dtype);
            let parts: Vec<Tensor> = blocks.collect::<Result<_, _>>().unwrap();
            assert!(parts.len() > 1 && parts.iter().all(|p| p.dtype() == dtype));
            let got = Tensor::cat(&parts, 0).unwrap();
            let bits = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
            let (got, want) = (bits(&got), bits(&want.to_dtype(dtype).unwrap()));
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{dtype:?}"
            );
        }
    }

    #[test]
    fn a_read_split_over_threads_gets_every_byte_in_place_and_a_short_file_fails() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        // Over 8 MiB a thread: the read is split whenever the machine has two cores.
        let data: Vec<u8> = (0..(19u32 << 20) + 12345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        File::create(&path).unwrap().write_all(&data).unwrap();
        let file = File::open(&path).unwrap();
        let mut got = vec![0u8; data.len() - 777];
        read_parallel(&file, &mut got, 777).unwrap();
        assert!(got == data[777..], "bytes out of place");
        let mut too_long = vec![0u8; data.len()];
        assert!(read_parallel(&file, &mut too_long, 1).is_err());
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
    }
}
