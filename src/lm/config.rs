//! `HeartMuLa-oss-3B/config.json`, the torchtune flavors it names, and `gen_config.json`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The arguments of a torchtune `llama3_2(...)` transformer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Flavor {
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub embed_dim: usize,
    pub intermediate_dim: usize,
    pub max_seq_len: usize,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    #[serde(default = "default_scale_factor")]
    pub scale_factor: f64,
}

/// The longest context a flavor may declare (Llama 3.2's 128k): larger values only make the
/// RoPE table and KV cache allocations fail.
const MAX_SEQ_LEN: usize = 131_072;

fn default_norm_eps() -> f64 {
    1e-5
}
fn default_rope_base() -> f64 {
    500_000.0
}
fn default_scale_factor() -> f64 {
    32.0
}

impl Flavor {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// The flavors heartlib ships (`FLAVORS` in modeling_heartmula.py).
    pub fn builtin(name: &str) -> Option<Flavor> {
        let llama =
            |num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len, intermediate_dim| {
                Flavor {
                    num_layers,
                    num_heads,
                    num_kv_heads,
                    embed_dim,
                    intermediate_dim,
                    max_seq_len,
                    norm_eps: default_norm_eps(),
                    rope_base: default_rope_base(),
                    scale_factor: default_scale_factor(),
                }
            };
        match name {
            "llama-3B" => Some(llama(28, 24, 8, 3072, 8192, 8192)),
            "llama-300M" => Some(llama(3, 8, 4, 3072, 2048, 8192)),
            "llama-7B" => Some(llama(32, 32, 8, 4096, 8192, 14336)),
            "llama-400M" => Some(llama(4, 8, 4, 3072, 2048, 8192)),
            _ => None,
        }
    }

    /// Every field in range, each problem named with its field and value.
    fn validate(&self, name: &str) -> Result<()> {
        let field = |field: &str, value: &dyn std::fmt::Display, expected: &str| {
            anyhow::anyhow!("flavor {name}: {field} {value} is invalid: expected {expected}")
        };
        use crate::limits::{check, MAX_COUNT, MAX_WIDTH};
        let named = |e: anyhow::Error| anyhow::anyhow!("flavor {name}: {e}");
        for (f, v) in [
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
        ] {
            check(f, v, 1..=MAX_COUNT).map_err(named)?;
        }
        for (f, v) in [
            ("embed_dim", self.embed_dim),
            ("intermediate_dim", self.intermediate_dim),
        ] {
            check(f, v, 1..=4 * MAX_WIDTH).map_err(named)?;
        }
        if !(1..=MAX_SEQ_LEN).contains(&self.max_seq_len) {
            return Err(field(
                "max_seq_len",
                &self.max_seq_len,
                &format!("1 to {MAX_SEQ_LEN} positions (Llama 3.2's context)"),
            ));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(field("norm_eps", &self.norm_eps, "a number in (0, 1)"));
        }
        if !(self.rope_base.is_finite() && self.rope_base > 1.0) {
            return Err(field(
                "rope_base",
                &self.rope_base,
                "a finite number above 1",
            ));
        }
        if !(self.scale_factor.is_finite() && self.scale_factor >= 1.0) {
            return Err(field(
                "scale_factor",
                &self.scale_factor,
                "a finite number ≥ 1",
            ));
        }
        if self.embed_dim % self.num_heads != 0 || self.head_dim() % 2 != 0 {
            bail!(
                "flavor {name}: embed_dim {} must split into {} heads of even size",
                self.embed_dim,
                self.num_heads
            );
        }
        if self.num_heads % self.num_kv_heads != 0 {
            bail!(
                "flavor {name}: num_heads {} must be a multiple of num_kv_heads {}",
                self.num_heads,
                self.num_kv_heads
            );
        }
        Ok(())
    }
}

/// `HeartMuLaConfig` with both flavors resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct LmConfig {
    pub backbone_flavor: String,
    pub decoder_flavor: String,
    pub backbone: Flavor,
    pub decoder: Flavor,
    pub text_vocab_size: usize,
    pub audio_vocab_size: usize,
    pub audio_num_codebooks: usize,
    pub muq_dim: usize,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default = "default_backbone")]
    backbone_flavor: String,
    #[serde(default = "default_decoder")]
    decoder_flavor: String,
    #[serde(default = "default_text_vocab")]
    text_vocab_size: usize,
    #[serde(default = "default_audio_vocab")]
    audio_vocab_size: usize,
    #[serde(default = "default_codebooks")]
    audio_num_codebooks: usize,
    #[serde(default = "default_muq_dim")]
    muq_dim: usize,
    /// Custom flavors (the reference fixtures carry their tiny ones here).
    #[serde(default)]
    flavors: HashMap<String, Flavor>,
}

fn default_backbone() -> String {
    "llama-3B".into()
}
fn default_decoder() -> String {
    "llama-300M".into()
}
fn default_text_vocab() -> usize {
    128_256
}
fn default_audio_vocab() -> usize {
    8197
}
fn default_codebooks() -> usize {
    8
}
fn default_muq_dim() -> usize {
    512
}

impl LmConfig {
    /// The released HeartMuLa-oss-3B configuration.
    pub fn oss_3b() -> LmConfig {
        Self::from_json("{}").expect("the built-in flavors resolve")
    }

    pub fn from_file(path: &Path) -> Result<LmConfig> {
        let text = crate::files::read_regular(path, "the HeartMuLa config.json")?;
        Self::from_json(&text)
            .with_context(|| format!("invalid HeartMuLa config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<LmConfig> {
        let raw: RawConfig = serde_json::from_str(text)?;
        let resolve = |name: &str| -> Result<Flavor> {
            let flavor = match raw.flavors.get(name) {
                Some(f) => f.clone(),
                None => Flavor::builtin(name).with_context(|| {
                    format!(
                        "unknown flavor {name:?}: expected one of llama-3B, llama-300M, llama-7B, \
                         llama-400M, or a definition under \"flavors\""
                    )
                })?,
            };
            flavor.validate(name)?;
            Ok(flavor)
        };
        let config = LmConfig {
            backbone: resolve(&raw.backbone_flavor)?,
            decoder: resolve(&raw.decoder_flavor)?,
            backbone_flavor: raw.backbone_flavor,
            decoder_flavor: raw.decoder_flavor,
            text_vocab_size: raw.text_vocab_size,
            audio_vocab_size: raw.audio_vocab_size,
            audio_num_codebooks: raw.audio_num_codebooks,
            muq_dim: raw.muq_dim,
        };
        use crate::limits::{check, MAX_COUNT, MAX_VOCAB, MAX_WIDTH};
        // Codebook 0 comes from the backbone, the others from the decoder: at least two.
        check(
            "audio_num_codebooks",
            config.audio_num_codebooks,
            2..=MAX_COUNT,
        )?;
        check("audio_vocab_size", config.audio_vocab_size, 1..=MAX_VOCAB)?;
        check("text_vocab_size", config.text_vocab_size, 1..=MAX_VOCAB)?;
        check("muq_dim", config.muq_dim, 1..=MAX_WIDTH)?;
        Ok(config)
    }

    /// The reference-tiny fixture's dimensions, and special ids that keep byte-level text
    /// ids (0..256) clear of BOS/EOS: the synthetic tiny model, fast on a CPU.
    pub fn tiny() -> (LmConfig, GenConfig) {
        let flavor = |num_layers, num_heads, num_kv_heads, embed_dim, max_seq_len| Flavor {
            num_layers,
            num_heads,
            num_kv_heads,
            embed_dim,
            intermediate_dim: 2 * embed_dim,
            max_seq_len,
            norm_eps: 1e-5,
            rope_base: 500_000.0,
            scale_factor: 32.0,
        };
        let config = LmConfig {
            backbone_flavor: "tiny-backbone".into(),
            decoder_flavor: "tiny-decoder".into(),
            backbone: flavor(2, 4, 2, 64, 8192),
            decoder: flavor(2, 2, 1, 32, 256),
            text_vocab_size: 1024,
            audio_vocab_size: 517,
            audio_num_codebooks: 8,
            muq_dim: 512,
        };
        let gen = GenConfig {
            text_bos_id: 1000,
            text_eos_id: 1001,
            audio_eos_id: 513,
            empty_id: 0,
        };
        (config, gen)
    }

    /// Columns of the prompt token grid: one per codebook plus the text column.
    pub fn grid_width(&self) -> usize {
        self.audio_num_codebooks + 1
    }
}

/// `gen_config.json`: the special token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct GenConfig {
    pub text_bos_id: u32,
    pub text_eos_id: u32,
    pub audio_eos_id: u32,
    pub empty_id: u32,
}

impl Default for GenConfig {
    /// heartlib's `HeartMuLaGenConfig()` defaults, matching the released gen_config.json.
    fn default() -> Self {
        GenConfig {
            text_bos_id: 128_000,
            text_eos_id: 128_001,
            audio_eos_id: 8193,
            empty_id: 0,
        }
    }
}

impl GenConfig {
    pub fn from_file(path: &Path) -> Result<GenConfig> {
        let text = crate::files::read_regular(path, "gen_config.json")?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "invalid {}: expected text_bos_id, text_eos_id, audio_eos_id, empty_id",
                path.display()
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_released_3b_model() {
        let c = LmConfig::oss_3b();
        assert_eq!((c.backbone.num_layers, c.backbone.head_dim()), (28, 128));
        assert_eq!((c.decoder.num_layers, c.decoder.head_dim()), (3, 384));
        assert_eq!(c.grid_width(), 9);
    }

    #[test]
    fn custom_flavors_override_and_unknown_flavors_are_named() {
        let json = r#"{"backbone_flavor":"x","decoder_flavor":"llama-400M","flavors":{"x":{
            "num_layers":1,"num_heads":2,"num_kv_heads":1,"embed_dim":8,"intermediate_dim":16,"max_seq_len":32}}}"#;
        let c = LmConfig::from_json(json).unwrap();
        assert_eq!(c.backbone.embed_dim, 8);
        assert_eq!(c.decoder.num_layers, 4);
        let err = LmConfig::from_json(r#"{"backbone_flavor":"llama-9B"}"#).unwrap_err();
        assert!(format!("{err:#}").contains("llama-9B"), "{err:#}");
    }
}
