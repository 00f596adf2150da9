//! torchtune's `Llama3ScaledRoPE`: adjacent pairs `(x[2i], x[2i+1])` rotated by angles whose
//! frequencies follow the Llama-3 long-context scaling, computed in f32 whatever the model
//! dtype (as torchtune does).

use candle_core::{DType, Device, Result, Tensor};

use super::config::Flavor;

const LOW_FREQ_FACTOR: f32 = 1.0;
const HIGH_FREQ_FACTOR: f32 = 4.0;
const OLD_CONTEXT_LEN: f32 = 8192.0;

/// cos/sin tables, one row per position.
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(flavor: &Flavor, positions: usize, device: &Device) -> Result<Self> {
        let theta = scaled_frequencies(
            flavor.head_dim(),
            flavor.rope_base as f32,
            flavor.scale_factor as f32,
        );
        let half = theta.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for &t in &theta {
                let angle = p as f32 * t;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (positions, half), device)?,
            sin: Tensor::from_vec(sin, (positions, half), device)?,
        })
    }

    /// Rotates `x` of shape (batch, heads, seq, head_dim) holding positions `start..start+seq`.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let seq = x.dim(2)?;
        let cos = self.cos.narrow(0, start, seq)?;
        let sin = self.sin.narrow(0, start, seq)?;
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?.to_dtype(dtype)
    }

    /// The (positions, head_dim / 2) f32 cos and sin tables, for kernels that index them
    /// with a position held on the device.
    #[cfg(feature = "cuda")]
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }
}

/// `Llama3ScaledRoPE.apply_scaling` over the base frequencies `base^(-2i/dim)`.
fn scaled_frequencies(head_dim: usize, base: f32, scale_factor: f32) -> Vec<f32> {
    let low_freq_wavelen = OLD_CONTEXT_LEN / LOW_FREQ_FACTOR;
    let high_freq_wavelen = OLD_CONTEXT_LEN / HIGH_FREQ_FACTOR;
    (0..head_dim / 2)
        .map(|i| {
            let freq = 1.0 / base.powf((2 * i) as f32 / head_dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_freq_wavelen {
                freq
            } else if wavelen > low_freq_wavelen {
                freq / scale_factor
            } else {
                let smooth = (OLD_CONTEXT_LEN / wavelen - LOW_FREQ_FACTOR)
                    / (HIGH_FREQ_FACTOR - LOW_FREQ_FACTOR);
                (1.0 - smooth) * freq / scale_factor + smooth * freq
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_keeps_high_frequencies_and_divides_low_ones() {
        let f = scaled_frequencies(128, 500_000.0, 32.0);
        assert_eq!(f[0], 1.0);
        let unscaled_last = 1.0 / 500_000f32.powf(126.0 / 128.0);
        assert!((f[63] - unscaled_last / 32.0).abs() < 1e-12);
        // In the smooth band each frequency lies between its scaled and unscaled values.
        for (i, &fi) in f.iter().enumerate() {
            let raw = 1.0 / 500_000f32.powf((2 * i) as f32 / 128.0);
            assert!(fi <= raw * 1.000001 && fi >= raw / 32.0 * 0.999999, "{i}");
        }
    }

    #[test]
    fn rotation_pairs_adjacent_elements_and_preserves_norms() {
        let flavor = Flavor::builtin("llama-300M").unwrap();
        let rope = Rope::new(&flavor, 4, &Device::Cpu).unwrap();
        let hd = flavor.head_dim();
        let x = Tensor::arange(0f32, hd as f32, &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, hd))
            .unwrap();
        let y = rope
            .apply(&x, 3)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let (x0, x1) = (0f32, 1f32);
        let angle = 3.0f32; // frequency 1 for the first pair
        assert!((y[0] - (x0 * angle.cos() - x1 * angle.sin())).abs() < 1e-5);
        assert!((y[1] - (x0 * angle.sin() + x1 * angle.cos())).abs() < 1e-5);
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((norm(&y) - norm(&xs)).abs() / norm(&xs) < 1e-5);
    }
}
