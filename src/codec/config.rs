//! `HeartCodecConfig` as heartlib's `save_pretrained` writes it to `config.json`, and the
//! timing quantities derived from it.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::rates::Rates;

/// The flow model predicts two latent frames per code frame: `inference_codes` upsamples the
/// code features ×2 (nearest) in time.
pub const LATENTS_PER_CODE: usize = 2;

/// The audio rate of the codec's output (48 kHz stereo), which the sinks are built for.
pub const OUTPUT_SAMPLE_RATE: usize = 48_000;

/// The window length heartlib's `detokenize` uses (its `duration` default), in seconds.
pub const REFERENCE_WINDOW_SECONDS: f64 = 29.76;

/// heartlib hops `window_codes / 93 * 80` codes from one window to the next; the rest of the
/// window overlaps the previous one.
const HOP_NUMERATOR: usize = 80;
const HOP_DENOMINATOR: usize = 93;

/// Architecture of HeartCodec. Keys missing from `config.json` take `HeartCodecConfig`'s
/// defaults (the released model's values); training-only keys (`decay`, `commitment_weight`,
/// `threshold_ema_dead_code`, `use_cosine_sim`) and bookkeeping keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct CodecConfig {
    // Residual VQ
    pub dim: usize,
    pub codebook_size: usize,
    pub codebook_dim: usize,
    pub num_quantizers: usize,
    // Flow-matching estimator (diffusion transformer)
    pub attention_head_dim: usize,
    pub in_channels: usize,
    pub norm_type: String,
    pub num_attention_heads: usize,
    pub num_layers: usize,
    pub num_layers_2: usize,
    pub out_channels: usize,
    // ScalarModel
    pub num_bands: usize,
    pub sample_rate: usize,
    pub causal: bool,
    pub num_samples: usize,
    pub downsample_factors: Vec<usize>,
    pub downsample_kernel_sizes: Vec<usize>,
    pub upsample_factors: Vec<usize>,
    pub upsample_kernel_sizes: Vec<usize>,
    pub latent_hidden_dim: usize,
    pub default_kernel_size: usize,
    pub delay_kernel_size: usize,
    pub init_channel: usize,
    pub res_kernel_size: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            dim: 512,
            codebook_size: 8192,
            codebook_dim: 32,
            num_quantizers: 8,
            attention_head_dim: 64,
            in_channels: 1024,
            norm_type: "ada_norm_single".to_string(),
            num_attention_heads: 24,
            num_layers: 24,
            num_layers_2: 6,
            out_channels: 256,
            num_bands: 1,
            sample_rate: 48000,
            causal: true,
            num_samples: 2,
            downsample_factors: vec![3, 4, 4, 4, 5],
            downsample_kernel_sizes: vec![6, 8, 8, 8, 10],
            upsample_factors: vec![5, 4, 4, 4, 3],
            upsample_kernel_sizes: vec![10, 8, 8, 8, 6],
            latent_hidden_dim: 128,
            default_kernel_size: 7,
            delay_kernel_size: 5,
            init_channel: 64,
            res_kernel_size: 7,
        }
    }
}

impl CodecConfig {
    /// The reference-tiny fixture's dimensions with the released model's timing: the
    /// synthetic tiny model's codec, fast on a CPU.
    pub fn tiny() -> Self {
        Self {
            dim: 64,
            codebook_size: 512,
            codebook_dim: 8,
            attention_head_dim: 16,
            num_attention_heads: 2,
            num_layers: 2,
            num_layers_2: 1,
            in_channels: 576,
            init_channel: 3,
            ..Self::default()
        }
    }

    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::files::read_regular(path, "the HeartCodec config.json")?;
        let config: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a HeartCodec config", path.display()))?;
        config
            .validate()
            .with_context(|| format!("unsupported HeartCodec config {}", path.display()))?;
        Ok(config)
    }

    /// Rejects configurations the reference code would build differently from this port,
    /// and values out of range, naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.sample_rate != OUTPUT_SAMPLE_RATE {
            bail!(
                "sample_rate {}: expected {OUTPUT_SAMPLE_RATE} (the released codec's rate, which \
                 every heartstream output plays at)",
                self.sample_rate
            );
        }
        self.check_ranges()?;
        if self.norm_type != "ada_norm_single" {
            bail!(
                "norm_type {:?}: only \"ada_norm_single\" is supported",
                self.norm_type
            );
        }
        if !self.causal {
            bail!("causal = false: only the causal ScalarModel decoder is supported");
        }
        if self.num_bands != 1 {
            bail!(
                "num_bands = {}: only mono bands (stereo as a batch of 2) are supported",
                self.num_bands
            );
        }
        if self.out_channels != 2 * self.latent_hidden_dim {
            bail!(
                "out_channels {} must hold a stereo pair of latent_hidden_dim {} channels",
                self.out_channels,
                self.latent_hidden_dim
            );
        }
        if self.in_channels != 2 * self.out_channels + self.dim {
            bail!(
                "in_channels {} must be 2 * out_channels + dim = {} (estimator input [x | in-context | condition])",
                self.in_channels,
                2 * self.out_channels + self.dim
            );
        }
        if self.upsample_factors.len() != self.upsample_kernel_sizes.len() {
            bail!("upsample_factors and upsample_kernel_sizes differ in length");
        }
        for (&stride, &kernel) in self
            .upsample_factors
            .iter()
            .zip(&self.upsample_kernel_sizes)
        {
            if kernel != 2 * stride {
                bail!("upsample kernel {kernel} for stride {stride}: a causal ConvTranspose1d needs kernel = 2 * stride");
            }
        }
        if self.delay_kernel_size % 2 == 0 {
            bail!(
                "delay_kernel_size {} must be odd (symmetric look-ahead padding)",
                self.delay_kernel_size
            );
        }
        if self.downsample_factors.len() != self.downsample_kernel_sizes.len() {
            bail!("downsample_factors and downsample_kernel_sizes differ in length");
        }
        if self.num_samples == 0 || self.codebook_size == 0 || self.num_quantizers == 0 {
            bail!("num_samples, codebook_size and num_quantizers must be positive");
        }
        Ok(())
    }

    fn check_ranges(&self) -> Result<()> {
        use crate::limits::{check, check_all, MAX_COUNT, MAX_KERNEL, MAX_VOCAB, MAX_WIDTH};
        for (field, value) in [
            ("dim", self.dim),
            ("codebook_dim", self.codebook_dim),
            ("attention_head_dim", self.attention_head_dim),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("latent_hidden_dim", self.latent_hidden_dim),
            ("init_channel", self.init_channel),
        ] {
            check(field, value, 1..=MAX_WIDTH)?;
        }
        for (field, value) in [
            ("num_attention_heads", self.num_attention_heads),
            ("num_layers", self.num_layers),
            ("num_quantizers", self.num_quantizers),
            ("num_samples", self.num_samples),
            ("num_bands", self.num_bands),
        ] {
            check(field, value, 1..=MAX_COUNT)?;
        }
        check("num_layers_2", self.num_layers_2, 0..=MAX_COUNT)?;
        check(
            "inner width (num_attention_heads * attention_head_dim)",
            self.inner_dim(),
            1..=MAX_WIDTH,
        )?;
        check("codebook_size", self.codebook_size, 1..=MAX_VOCAB)?;
        for (field, value) in [
            ("default_kernel_size", self.default_kernel_size),
            ("delay_kernel_size", self.delay_kernel_size),
            ("res_kernel_size", self.res_kernel_size),
        ] {
            check(field, value, 1..=MAX_KERNEL)?;
        }
        for (field, values) in [
            ("upsample_factors", &self.upsample_factors),
            ("upsample_kernel_sizes", &self.upsample_kernel_sizes),
            ("downsample_factors", &self.downsample_factors),
            ("downsample_kernel_sizes", &self.downsample_kernel_sizes),
        ] {
            check_all(field, values, 1..=MAX_KERNEL)?;
        }
        // The hop is a product of factors: bound it too (48 kHz at ≥ 1 latent per second).
        let hop = self
            .upsample_factors
            .iter()
            .try_fold(self.num_samples, |a, &f| a.checked_mul(f));
        match hop {
            Some(h) if h <= OUTPUT_SAMPLE_RATE => Ok(()),
            _ => bail!(
                "upsample_factors {:?} × num_samples {}: expected at most {OUTPUT_SAMPLE_RATE} \
                 samples per latent frame",
                self.upsample_factors,
                self.num_samples
            ),
        }
    }

    /// Width of the first transformer stack.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    /// The time units of this codec (frames, latents, samples).
    pub fn rates(&self) -> Rates {
        Rates::of(self)
    }

    /// Latent frames of future input the ScalarModel decoder needs before it can emit a
    /// latent's audio (its first conv is centred, not causal): 2.
    pub fn look_ahead_latents(&self) -> usize {
        (self.delay_kernel_size - 1) / 2
    }

    /// The window layout of heartlib's `detokenize` for windows of `duration_s` seconds,
    /// computed with the reference's own formulas (`int(duration * 12.5)`, `// 93 * 80`, …).
    pub fn window_geometry(&self, duration_s: f64) -> WindowGeometry {
        let rates = self.rates();
        let window_codes = (duration_s * rates.frames_per_second()) as usize;
        let hop_codes = window_codes / HOP_DENOMINATOR * HOP_NUMERATOR;
        let overlap_codes = window_codes - hop_codes;
        let audio_window = (duration_s * self.sample_rate as f64) as usize;
        let audio_hop = audio_window / HOP_DENOMINATOR * HOP_NUMERATOR;
        WindowGeometry {
            window_codes,
            hop_codes,
            overlap_codes,
            window_latents: (duration_s * rates.latents_per_second()) as usize,
            context_latents: LATENTS_PER_CODE * overlap_codes,
            audio_window,
            audio_hop,
            audio_overlap: audio_window - audio_hop,
        }
    }
}

/// How `detokenize` cuts a code sequence into overlapping flow-matching windows.
/// For 29.76 s: 372 codes = 744 latents per window, hop 320 codes, overlap 52 codes = 104
/// latents of in-context prefix; in audio a 1,428,480-sample window, hop 1,228,800, overlap
/// 199,680 (cross-faded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGeometry {
    pub window_codes: usize,
    pub hop_codes: usize,
    pub overlap_codes: usize,
    pub window_latents: usize,
    /// Latents of the previous window re-used as the next window's in-context prefix.
    pub context_latents: usize,
    pub audio_window: usize,
    pub audio_hop: usize,
    pub audio_overlap: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_timing_of_the_released_model() {
        let c = CodecConfig::default();
        assert_eq!(c.look_ahead_latents(), 2);
        let g = c.window_geometry(REFERENCE_WINDOW_SECONDS);
        assert_eq!(
            (g.window_codes, g.hop_codes, g.overlap_codes),
            (372, 320, 52)
        );
        assert_eq!((g.window_latents, g.context_latents), (744, 104));
        assert_eq!(
            (g.audio_window, g.audio_hop, g.audio_overlap),
            (1_428_480, 1_228_800, 199_680)
        );
    }

    #[test]
    fn missing_keys_take_defaults_and_unknown_keys_are_ignored() {
        let c: CodecConfig =
            serde_json::from_str(r#"{"dim": 64, "architectures": ["HeartCodec"], "decay": 0.9}"#)
                .unwrap();
        assert_eq!(c.dim, 64);
        assert_eq!(c.codebook_size, 8192);
        assert_eq!(c.upsample_factors, vec![5, 4, 4, 4, 3]);
    }

    #[test]
    fn inconsistent_configs_are_rejected() {
        let c = CodecConfig {
            upsample_kernel_sizes: vec![10, 8, 8, 8, 7],
            ..CodecConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("kernel = 2 * stride"));
        let c = CodecConfig {
            in_channels: 1000,
            ..CodecConfig::default()
        };
        assert!(c.validate().is_err());
        for (c, needle) in [
            (
                CodecConfig {
                    sample_rate: 44_100,
                    ..CodecConfig::default()
                },
                "sample_rate 44100",
            ),
            (
                CodecConfig {
                    sample_rate: 0,
                    ..CodecConfig::default()
                },
                "sample_rate 0",
            ),
            (
                CodecConfig {
                    num_layers: 0,
                    ..CodecConfig::default()
                },
                "num_layers 0",
            ),
            (
                CodecConfig {
                    upsample_factors: vec![5, 0],
                    upsample_kernel_sizes: vec![10, 0],
                    ..CodecConfig::default()
                },
                "upsample_factors [5, 0]",
            ),
        ] {
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
