use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::WeightsError;
use crate::files::Entry;

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";
const LAYOUT: &str = "config.json plus model.safetensors, or model-0000N-of-0000M.safetensors \
                      shards listed by model.safetensors.index.json";
const PICKLE_EXTENSIONS: [&str; 4] = ["bin", "pt", "pth", "ckpt"];

/// The memory-mapped safetensors files of one model folder. Nothing is read until a tensor
/// is loaded, so peak host memory stays near one tensor even for a 15 GB fp32 checkpoint.
pub struct WeightStore {
    dir: PathBuf,
    files: Vec<(PathBuf, MmapedSafetensors)>,
    /// tensor name -> index into `files`
    routing: HashMap<String, usize>,
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
        let mut files = Vec::with_capacity(shard_paths.len());
        let mut routing = HashMap::new();
        for (i, path) in shard_paths.into_iter().enumerate() {
            let st = map_file(&path)?;
            for (name, _) in st.tensors() {
                routing.insert(name, i);
            }
            files.push((path, st));
        }
        let store = Self {
            dir: dir.to_path_buf(),
            files,
            routing,
        };
        store.check_index()?;
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every stored tensor with its shape, sorted by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        self.files
            .iter()
            .flat_map(|(_, st)| st.tensors())
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect()
    }

    /// Loads one tensor, converting from the stored dtype to `dtype` on `device`. The
    /// conversion runs on the target device, so a GPU load never holds the model twice on the host.
    pub fn load(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let &i = self.routing.get(name).ok_or_else(|| WeightsError::Tensor {
            name: name.to_string(),
            path: self.dir.clone(),
            reason: "not present in any safetensors file".to_string(),
        })?;
        let (path, st) = &self.files[i];
        let fail = |reason: String| WeightsError::Tensor {
            name: name.to_string(),
            path: path.clone(),
            reason,
        };
        let err = |e: candle_core::Error| fail(e.to_string());
        let view = st.get(name).map_err(err)?;
        check_values(view.dtype(), view.data()).map_err(fail)?;
        let host = st.load(name, &Device::Cpu).map_err(err)?;
        host.to_device(device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(err)
    }

    /// With an index file, every tensor it names must be in the shard it names.
    fn check_index(&self) -> Result<(), WeightsError> {
        let index_path = self.dir.join(INDEX);
        if Entry::at(&index_path) != Entry::File {
            return Ok(());
        }
        for (name, file) in read_index(&index_path)? {
            let found = self.routing.get(&name).map(|&i| &self.files[i].0);
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

/// Weights must be floating point and finite: integer data under a weight's name, or a NaN
/// or infinity anywhere, would otherwise turn into silent garbage (every code 0, NaN audio).
fn check_values(dtype: safetensors::Dtype, data: &[u8]) -> Result<(), String> {
    use safetensors::Dtype;
    let found = match dtype {
        Dtype::F32 => {
            first_non_finite::<4>(data, |b| u32::from_le_bytes(b) & 0x7f80_0000 == 0x7f80_0000)
        }
        Dtype::BF16 => first_non_finite::<2>(data, |b| u16::from_le_bytes(b) & 0x7f80 == 0x7f80),
        Dtype::F16 => first_non_finite::<2>(data, |b| u16::from_le_bytes(b) & 0x7c00 == 0x7c00),
        other => {
            return Err(format!(
                "stored as {other:?}: expected floating-point weights (F32, BF16 or F16)"
            ))
        }
    };
    match found {
        Some(i) => Err(format!(
            "element {i} is not finite (NaN or infinity): the checkpoint is corrupt"
        )),
        None => Ok(()),
    }
}

/// The index of the first element whose bytes `bad` flags. Large tensors are scanned on
/// every core: the check must not add seconds to loading a 15 GB checkpoint.
fn first_non_finite<const N: usize>(data: &[u8], bad: fn([u8; N]) -> bool) -> Option<usize> {
    const PER_THREAD: usize = 64 << 20;
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

fn map_file(path: &Path) -> Result<MmapedSafetensors, WeightsError> {
    // SAFETY: the file is mapped read-only; like every mmap-based loader we assume the
    // checkpoint is not modified while the program runs.
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| WeightsError::Corrupt {
        path: path.to_path_buf(),
        reason: root_cause(&e),
    })
}

fn root_cause(e: &candle_core::Error) -> String {
    match e {
        candle_core::Error::WithPath { inner, .. } => root_cause(inner),
        candle_core::Error::WithBacktrace { inner, .. } => root_cause(inner),
        other => other.to_string(),
    }
}
