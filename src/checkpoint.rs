//! The heartlib checkpoint folder (`ckpt/`): the two model folders, the tokenizer and the
//! generation config side by side.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub const LAYOUT: &str = "a heartlib ckpt folder holding HeartMuLa-oss-3B/, HeartCodec-oss/, \
                          tokenizer.json and gen_config.json";

#[derive(Debug, Clone)]
pub struct CheckpointLayout {
    pub root: PathBuf,
}

impl CheckpointLayout {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            bail!(
                "--model {}: no such folder; expected {LAYOUT}",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn lm_dir(&self) -> Result<PathBuf> {
        self.existing("HeartMuLa-oss-3B", "the HeartMuLa model folder")
    }

    pub fn codec_dir(&self) -> Result<PathBuf> {
        self.existing("HeartCodec-oss", "the HeartCodec model folder")
    }

    pub fn tokenizer(&self) -> Result<PathBuf> {
        self.existing("tokenizer.json", "the Llama-3 tokenizer")
    }

    pub fn gen_config(&self) -> Result<PathBuf> {
        self.existing("gen_config.json", "the generation config")
    }

    fn existing(&self, name: &str, what: &str) -> Result<PathBuf> {
        let p = self.root.join(name);
        if !p.exists() {
            bail!(
                "{} is missing: expected {what} there ({LAYOUT})",
                p.display()
            );
        }
        Ok(p)
    }
}
