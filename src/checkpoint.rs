//! The heartlib checkpoint folder (`ckpt/`): the two model folders, the tokenizer and the
//! generation config side by side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::files::Entry;

pub const LAYOUT: &str = "a heartlib ckpt folder holding HeartMuLa-oss-3B/, HeartCodec-oss/, \
                          tokenizer.json and gen_config.json";

#[derive(Debug, Clone)]
pub struct CheckpointLayout {
    pub root: PathBuf,
}

impl CheckpointLayout {
    pub fn open(root: &Path) -> Result<Self> {
        match Entry::at(root) {
            Entry::Folder => Ok(Self {
                root: root.to_path_buf(),
            }),
            Entry::Nothing => bail!(
                "--model {}: no such folder; expected {LAYOUT}",
                root.display()
            ),
            other => bail!(
                "--model {} is {}; expected {LAYOUT}",
                root.display(),
                other.describe()
            ),
        }
    }

    pub fn lm_dir(&self) -> Result<PathBuf> {
        self.existing(
            "HeartMuLa-oss-3B",
            Entry::Folder,
            "the HeartMuLa model folder",
        )
    }

    pub fn codec_dir(&self) -> Result<PathBuf> {
        self.existing(
            "HeartCodec-oss",
            Entry::Folder,
            "the HeartCodec model folder",
        )
    }

    pub fn tokenizer(&self) -> Result<PathBuf> {
        self.existing("tokenizer.json", Entry::File, "the Llama-3 tokenizer")
    }

    pub fn gen_config(&self) -> Result<PathBuf> {
        self.existing("gen_config.json", Entry::File, "the generation config")
    }

    fn existing(&self, name: &str, kind: Entry, what: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        match Entry::at(&p) {
            found if found == kind => Ok(p),
            Entry::Nothing => bail!(
                "{} is missing: expected {what} there ({LAYOUT})",
                p.display()
            ),
            found => bail!(
                "{} is {}: expected {what} ({} — {LAYOUT})",
                p.display(),
                found.describe(),
                kind.describe()
            ),
        }
    }
}
