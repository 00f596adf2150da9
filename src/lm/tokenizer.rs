//! Text tokenizers: the checkpoint's Llama-3 `tokenizer.json`, or a byte-level stand-in for
//! synthetic models (which have no tokenizer file and make noise whatever the prompt).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub enum TextTokenizer {
    Hf(Box<tokenizers::Tokenizer>),
    /// One id per UTF-8 byte, offset so that ids stay clear of the special tokens.
    Bytes {
        offset: u32,
    },
}

impl TextTokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::files::read_regular(path, "the Llama-3 tokenizer.json of HeartMuLaGen")?;
        let tok = text
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("{} is not a valid tokenizer.json", path.display()))?;
        Ok(TextTokenizer::Hf(Box::new(tok)))
    }

    /// What `tokenizer.encode(text).ids` returns in heartlib (special tokens added, so the
    /// Llama-3 tokenizer puts BOS first).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Hf(tok) => Ok(tok
                .encode(text, true)
                .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?
                .get_ids()
                .to_vec()),
            TextTokenizer::Bytes { offset } => {
                Ok(text.bytes().map(|b| offset + u32::from(b)).collect())
            }
        }
    }
}
