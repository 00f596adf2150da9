//! Classifier-free guidance and top-k sampling as heartlib does it: guided logits
//! `uncond + (cond − uncond)·scale`, logits divided by the temperature, everything below the
//! k-th largest dropped, then `argmax(probs / q)` with `q ~ Exp(1)` (the "exponential race",
//! a multinomial draw with no device sync).
//!
//! The exponential noise is a pure function of (seed, frame, codebook, token), not a stateful
//! stream, so a frame's samples are reproducible on any device and in any order.

use anyhow::{bail, Result};

use crate::hash::splitmix64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub topk: usize,
    pub cfg_scale: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// heartlib's defaults.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            topk: 50,
            cfg_scale: 1.5,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Checks the values on their own; [`validate_for`](Self::validate_for) adds the model's vocabulary.
    pub fn validate(&self) -> Result<()> {
        if self.topk == 0 {
            bail!("--topk 0 is invalid: expected at least 1");
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            bail!(
                "--temperature {} is invalid: expected a finite value > 0",
                self.temperature
            );
        }
        if !(self.cfg_scale >= 1.0 && self.cfg_scale.is_finite()) {
            bail!(
                "--cfg-scale {} is invalid: expected a finite value ≥ 1 (1 disables guidance)",
                self.cfg_scale
            );
        }
        Ok(())
    }

    pub fn validate_for(&self, vocab: usize) -> Result<()> {
        self.validate()?;
        if self.topk > vocab {
            bail!(
                "--topk {} is invalid: the model has {vocab} tokens per codebook",
                self.topk
            );
        }
        Ok(())
    }

    /// Rows the model runs: conditional and unconditional with guidance, else one.
    pub fn batch(&self) -> usize {
        if self.cfg_scale != 1.0 {
            2
        } else {
            1
        }
    }

    /// Samples one token from the logits rows (row 0 conditional, row 1 unconditional).
    pub fn sample(&self, rows: &[Vec<f32>], frame: u64, codebook: usize) -> u32 {
        let guided: Vec<f32>;
        let logits = if rows.len() == 2 && self.cfg_scale > 1.0 {
            let scale = self.cfg_scale;
            guided = rows[0]
                .iter()
                .zip(&rows[1])
                .map(|(&c, &u)| u + (c - u) * scale)
                .collect();
            &guided
        } else {
            &rows[0]
        };
        let noise = |token: usize| exponential(self.seed, frame, codebook, token);
        sample_topk(logits, self.topk, self.temperature, noise)
    }
}

/// `sample_topk` of heartlib with the exponential draws given by `noise(token)`.
pub fn sample_topk(
    logits: &[f32],
    topk: usize,
    temperature: f32,
    noise: impl Fn(usize) -> f32,
) -> u32 {
    let scaled: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
    let threshold = kth_largest(&scaled, topk);
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &l) in scaled.iter().enumerate() {
        // Tokens tied with the k-th value are kept, as `logits < kth` drops only smaller ones.
        if l < threshold {
            continue;
        }
        let score = (l - max).exp() / noise(i);
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0 as u32
}

fn kth_largest(values: &[f32], k: usize) -> f32 {
    let mut v = values.to_vec();
    let k = k.clamp(1, v.len());
    let (_, kth, _) = v.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    *kth
}

/// An Exp(1) draw for (seed, frame, codebook, token): −ln(u) of a hashed uniform u ∈ (0, 1].
pub fn exponential(seed: u64, frame: u64, codebook: usize, token: usize) -> f32 {
    let key = splitmix64(splitmix64(splitmix64(seed) ^ frame) ^ codebook as u64);
    let bits = splitmix64(key ^ token as u64);
    let u = ((bits >> 40) + 1) as f32 / (1u64 << 24) as f32;
    -u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_one_is_argmax_whatever_the_noise() {
        let logits = [0.1, 3.0, -2.0, 2.9];
        for seed in 0..20 {
            let p = SamplingParams {
                topk: 1,
                seed,
                ..Default::default()
            };
            assert_eq!(p.sample(&[logits.to_vec()], seed, 0), 1);
        }
    }

    #[test]
    fn only_the_topk_tokens_are_ever_drawn() {
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut order: Vec<usize> = (0..100).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let allowed = &order[..5];
        let p = SamplingParams {
            topk: 5,
            cfg_scale: 1.0,
            ..Default::default()
        };
        for frame in 0..500 {
            let t = p.sample(std::slice::from_ref(&logits), frame, 1) as usize;
            assert!(allowed.contains(&t), "{t}");
        }
    }

    #[test]
    fn draws_follow_the_softmax_probabilities() {
        // Two tokens with p = e^1/(e^1+e^0) ≈ 0.731 for token 0.
        let p = SamplingParams {
            topk: 2,
            cfg_scale: 1.0,
            temperature: 1.0,
            seed: 9,
        };
        let n = 20_000;
        let hits = (0..n)
            .filter(|&f| p.sample(&[vec![1.0, 0.0]], f, 3) == 0)
            .count();
        let freq = hits as f64 / n as f64;
        let expected = 1f64.exp() / (1f64.exp() + 1.0);
        assert!((freq - expected).abs() < 0.015, "{freq} vs {expected}");
    }

    #[test]
    fn guidance_mixes_rows_before_sampling() {
        // cond favours token 1 less than uncond does: guidance pushes away from uncond.
        let cond = vec![0.0, 1.0, 0.9];
        let uncond = vec![0.0, 2.0, 0.0];
        let p = SamplingParams {
            topk: 1,
            cfg_scale: 3.0,
            ..Default::default()
        };
        // guided = u + 3(c − u) = [0, -1, 2.7]
        assert_eq!(p.sample(&[cond, uncond], 0, 0), 2);
    }

    #[test]
    fn invalid_values_are_named() {
        let bad = |p: SamplingParams, flag: &str| {
            let e = p.validate_for(10).unwrap_err().to_string();
            assert!(e.contains(flag), "{e}");
        };
        bad(
            SamplingParams {
                topk: 0,
                ..Default::default()
            },
            "--topk",
        );
        bad(
            SamplingParams {
                temperature: 0.0,
                ..Default::default()
            },
            "--temperature",
        );
        bad(
            SamplingParams {
                cfg_scale: 0.5,
                ..Default::default()
            },
            "--cfg-scale",
        );
        bad(
            SamplingParams {
                topk: 11,
                ..Default::default()
            },
            "--topk",
        );
        assert!(SamplingParams {
            topk: 10,
            ..Default::default()
        }
        .validate_for(10)
        .is_ok());
    }

    #[test]
    fn exponential_noise_has_unit_mean_and_depends_on_every_coordinate() {
        let n = 100_000;
        let mean = (0..n).map(|t| exponential(1, 2, 3, t) as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        let base = exponential(1, 2, 3, 4);
        assert_ne!(base, exponential(0, 2, 3, 4));
        assert_ne!(base, exponential(1, 1, 3, 4));
        assert_ne!(base, exponential(1, 2, 2, 4));
        assert_ne!(base, exponential(1, 2, 3, 5));
    }
}
