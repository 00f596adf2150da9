use std::fmt::Write as _;
use std::path::PathBuf;

/// Everything that can be wrong with a checkpoint folder, reported with the path or tensor
/// name and what was expected instead.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error(
        "model folder {dir} does not exist: expected a heartlib checkpoint folder ({expected})"
    )]
    MissingFolder {
        dir: PathBuf,
        expected: &'static str,
    },

    #[error("{path} is missing: expected {expected}")]
    MissingFile { path: PathBuf, expected: String },

    #[error("{path} is {found}: expected {expected}")]
    NotRegular {
        path: PathBuf,
        found: &'static str,
        expected: String,
    },

    #[error(
        "{path} is a PyTorch pickle file; heartstream loads only safetensors \
         (model.safetensors or model-0000N-of-0000M.safetensors with model.safetensors.index.json)"
    )]
    Pickle { path: PathBuf },

    #[error("{path} is not a readable safetensors file: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    #[error("{path}: {reason}")]
    BadIndex { path: PathBuf, reason: String },

    #[error("{}", mismatch_message(.model, .dir, .missing, .unexpected, .wrong_shape))]
    Mismatch {
        model: String,
        dir: PathBuf,
        missing: Vec<(String, Vec<usize>)>,
        unexpected: Vec<(String, Vec<usize>)>,
        /// (name, expected shape, found shape)
        wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
    },

    #[error("tensor {name} in {path}: {reason}")]
    Tensor {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

/// Lists every problem at once, so a user fixes a checkpoint in one pass.
fn mismatch_message(
    model: &str,
    dir: &std::path::Path,
    missing: &[(String, Vec<usize>)],
    unexpected: &[(String, Vec<usize>)],
    wrong_shape: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    const SHOWN: usize = 20;
    let mut s = format!(
        "the {model} weights in {} do not match the model: {} missing, {} unexpected, {} with the wrong shape",
        dir.display(),
        missing.len(),
        unexpected.len(),
        wrong_shape.len()
    );
    for (name, shape) in missing.iter().take(SHOWN) {
        let _ = write!(s, "\n  missing    {name} (expected shape {shape:?})");
    }
    for (name, shape) in unexpected.iter().take(SHOWN) {
        let _ = write!(s, "\n  unexpected {name} (shape {shape:?})");
    }
    for (name, want, got) in wrong_shape.iter().take(SHOWN) {
        let _ = write!(
            s,
            "\n  wrong shape {name}: expected {want:?}, found {got:?}"
        );
    }
    let hidden = missing.len().saturating_sub(SHOWN)
        + unexpected.len().saturating_sub(SHOWN)
        + wrong_shape.len().saturating_sub(SHOWN);
    if hidden > 0 {
        let _ = write!(s, "\n  … and {hidden} more");
    }
    s
}
