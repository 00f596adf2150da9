//! Where the flow-matching solver's Gaussian draws come from. heartlib calls `torch.randn`;
//! here the draws are injected so a run can be seeded, or replay recorded draws exactly.

use std::collections::VecDeque;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

/// A stream of standard-normal tensors, drawn in the order the reference calls `torch.randn`.
pub trait NoiseSource: Send {
    fn draw(&mut self, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor>;
}

/// Seeded N(0, 1) draws: the same seed gives the same sequence of tensors on every machine
/// (drawn on the host in f32, then moved to the device).
pub struct GaussianNoise {
    rng: StdRng,
}

impl GaussianNoise {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl NoiseSource for GaussianNoise {
    fn draw(&mut self, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let n = shape.iter().product();
        let values: Vec<f32> = StandardNormal.sample_iter(&mut self.rng).take(n).collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_device(device)?
            .to_dtype(dtype)?)
    }
}

/// Hands out recorded draws in order; a draw of another shape, or one too many, is an error
/// (it means the call order differs from the recording).
pub struct ReplayNoise {
    queue: VecDeque<Tensor>,
    served: usize,
}

impl ReplayNoise {
    pub fn new(draws: impl IntoIterator<Item = Tensor>) -> Self {
        Self {
            queue: draws.into_iter().collect(),
            served: 0,
        }
    }

    /// Draws not consumed yet.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl NoiseSource for ReplayNoise {
    fn draw(&mut self, shape: &[usize], device: &Device, dtype: DType) -> Result<Tensor> {
        let index = self.served;
        let Some(next) = self.queue.pop_front() else {
            bail!("noise draw {index} of shape {shape:?} requested, but only {index} draws were recorded");
        };
        if next.dims() != shape {
            bail!(
                "noise draw {index} requested shape {shape:?}, the recorded draw has shape {:?}",
                next.dims()
            );
        }
        self.served += 1;
        Ok(next.to_device(device)?.to_dtype(dtype)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_draws_repeat_and_are_standard_normal() {
        let draw = |seed| {
            let mut n = GaussianNoise::new(seed);
            let a = n.draw(&[4, 1000], &Device::Cpu, DType::F32).unwrap();
            let b = n.draw(&[3], &Device::Cpu, DType::F32).unwrap();
            (
                a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                b.to_vec1::<f32>().unwrap(),
            )
        };
        let (a, b) = draw(7);
        assert_eq!((a.clone(), b.clone()), draw(7));
        assert_ne!(a, draw(8).0);
        assert_ne!(&a[..3], &b[..]);
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(
            mean.abs() < 0.05 && (var - 1.0).abs() < 0.1,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn replay_checks_order_and_shape() {
        let t = |n: usize| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
        let mut r = ReplayNoise::new([t(2), t(3)]);
        assert!(r.draw(&[2], &Device::Cpu, DType::F32).is_ok());
        let err = r
            .draw(&[4], &Device::Cpu, DType::F32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("draw 1") && err.contains("[4]"), "{err}");
        let mut r = ReplayNoise::new([t(2)]);
        r.draw(&[2], &Device::Cpu, DType::F32).unwrap();
        assert!(r.draw(&[2], &Device::Cpu, DType::F32).is_err());
        assert_eq!(r.remaining(), 0);
    }
}
