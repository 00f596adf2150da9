//! The estimator's rotary position embedding: base 10000, rotating adjacent pairs
//! `(x[2i], x[2i+1])` over the whole head, tables built in the activation dtype exactly as
//! heartlib's `RotaryEmbedding.get_sin_cos` builds them.

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

const BASE: f64 = 10000.0;

/// cos/sin tables `(frames, head_dim / 2)` for one head width and sequence length.
#[derive(Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    pub fn new(frames: usize, head_dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        // torch does every op in the activation dtype (computed in f32, rounded to it); the
        // host replays that: f32 arithmetic, each result rounded to `dtype`.
        let round = rounding(dtype);
        let inv_freq: Vec<f32> = (0..head_dim / 2)
            .map(|i| {
                let exponent = round(round((2 * i) as f32) / head_dim as f32);
                let power = round(BASE.powf(exponent as f64) as f32);
                round(1.0 / power)
            })
            .collect();
        let angles: Vec<f32> = (0..frames)
            .flat_map(|t| {
                let t = round(t as f32);
                inv_freq.iter().map(move |&f| round(t * f))
            })
            .collect();
        let table = |f: fn(f64) -> f64| {
            let values: Vec<f32> = angles.iter().map(|&a| round(f(a as f64) as f32)).collect();
            Tensor::from_vec(values, (frames, head_dim / 2), device)?.to_dtype(dtype)
        };
        Ok(Self {
            cos: table(f64::cos)?,
            sin: table(f64::sin)?,
        })
    }

    /// The `(cos, sin)` tables, for kernels that rotate as they read.
    pub fn tables(&self) -> (&Tensor, &Tensor) {
        (&self.cos, &self.sin)
    }

    /// Rotates `(batch, heads, frames, head_dim)` queries or keys.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::rotary_emb::rope_i(
            &x.contiguous()?,
            &self.cos,
            &self.sin,
        )?)
    }
}

/// Rounds an f32 result to the precision of `dtype`, as storing it in a tensor would.
fn rounding(dtype: DType) -> fn(f32) -> f32 {
    match dtype {
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        _ => |x| x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The torch formula evaluated in f64, for comparison.
    fn reference_angle(t: usize, i: usize, dim: usize) -> f64 {
        t as f64 / BASE.powf((2 * i) as f64 / dim as f64)
    }

    #[test]
    fn rotates_adjacent_pairs_by_position_times_frequency() {
        let (frames, dim) = (5, 8);
        let rope = Rope::new(frames, dim, DType::F32, &Device::Cpu).unwrap();
        // Unit vector along x[2i] of every pair: the rotation gives (cos, sin) of the angle.
        let x = Tensor::from_vec(
            (0..frames * dim)
                .map(|k| if k % 2 == 0 { 1f32 } else { 0.0 })
                .collect::<Vec<_>>(),
            (1, 1, frames, dim),
            &Device::Cpu,
        )
        .unwrap();
        let y: Vec<f32> = rope
            .apply(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for t in 0..frames {
            for i in 0..dim / 2 {
                let a = reference_angle(t, i, dim);
                let (c, s) = (y[t * dim + 2 * i], y[t * dim + 2 * i + 1]);
                assert!((c as f64 - a.cos()).abs() < 1e-6 && (s as f64 - a.sin()).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn bf16_tables_round_positions_like_torch() {
        // bf16 holds integers exactly only up to 256: position 257 becomes 256 (ties to even).
        let rope = Rope::new(258, 2, DType::BF16, &Device::Cpu).unwrap();
        let cos: Vec<f32> = rope
            .cos
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(cos[257], cos[256]);
    }
}
