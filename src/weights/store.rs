use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use super::WeightsError;

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
        if !dir.is_dir() {
            return Err(WeightsError::MissingFolder {
                dir: dir.to_path_buf(),
                expected: LAYOUT,
            });
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
        let err = |e: candle_core::Error| WeightsError::Tensor {
            name: name.to_string(),
            path: path.clone(),
            reason: e.to_string(),
        };
        let host = st.load(name, &Device::Cpu).map_err(err)?;
        host.to_device(device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(err)
    }

    /// With an index file, every tensor it names must be in the shard it names.
    fn check_index(&self) -> Result<(), WeightsError> {
        let index_path = self.dir.join(INDEX);
        if !index_path.is_file() {
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
    if index_path.is_file() {
        let mut names: Vec<String> = read_index(&index_path)?.into_values().collect();
        names.sort();
        names.dedup();
        return names
            .into_iter()
            .map(|n| {
                let p = dir.join(&n);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(WeightsError::MissingFile {
                        path: p,
                        expected: format!("a shard listed by {}", index_path.display()),
                    })
                }
            })
            .collect();
    }
    let single = dir.join(SINGLE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    if let Some(pickle) = find_pickle(dir) {
        return Err(WeightsError::Pickle { path: pickle });
    }
    Err(WeightsError::MissingFile {
        path: single,
        expected: format!("the model weights ({LAYOUT})"),
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
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
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
