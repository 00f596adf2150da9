//! Random weights for running without a checkpoint. Values come from a counter-based hash of
//! (seed, tensor name, element index), so they are the same on every machine and thread
//! count, and billions of them fill in about a second on a few cores.

use candle_core::{DType, Device, Tensor};

use super::{fill_parallel, Init, TensorSpec};
use crate::hash::{fnv1a, splitmix64};

pub(super) fn tensor(
    spec: &TensorSpec,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let draw = Draw::of(spec, seed);
    let shape = spec.shape.as_slice();
    #[cfg(feature = "cuda")]
    if let Device::Cuda(dev) = device {
        if let Some(t) = super::synthetic_gpu::tensor(&draw, shape, dtype, dev)? {
            return Ok(t);
        }
    }
    let n: usize = shape.iter().product();
    // bf16 targets are rounded while filling, on every core: half the bytes cross to the
    // device, and no single-threaded conversion of billions of values follows.
    let host = if dtype == DType::BF16 {
        let mut values = vec![half::bf16::ZERO; n];
        fill_parallel(&mut values, |i| half::bf16::from_f32(draw.value(i)));
        Tensor::from_vec(values, shape, &Device::Cpu)?
    } else {
        let mut values = vec![0f32; n];
        fill_parallel(&mut values, |i| draw.value(i));
        Tensor::from_vec(values, shape, &Device::Cpu)?
    };
    host.to_device(device)?.to_dtype(dtype)
}

/// Element i of one tensor: `center + half_width·(2u − 1)` for u uniform in [0, 1) from a hash
/// of (seed, tensor name, i). `synthetic.cu` computes the same, rounding for rounding.
#[derive(Debug, Clone, Copy)]
pub(super) struct Draw {
    pub key: u64,
    pub center: f32,
    pub half_width: f32,
}

impl Draw {
    fn of(spec: &TensorSpec, seed: u64) -> Self {
        let (center, half_width) = uniform_params(spec.init);
        Self {
            key: splitmix64(seed ^ fnv1a(spec.name.bytes())),
            center,
            half_width,
        }
    }

    pub fn value(&self, i: usize) -> f32 {
        let u = unit(splitmix64(self.key.wrapping_add(i as u64)));
        self.center + self.half_width * (2.0 * u - 1.0)
    }
}

/// A uniform distribution (center, half width) with the mean and variance of the init.
fn uniform_params(init: Init) -> (f32, f32) {
    let sqrt3 = 3f32.sqrt();
    match init {
        Init::Fan(fan_in) => (0.0, sqrt3 / (fan_in.max(1) as f32).sqrt()),
        Init::Normal(std) => (0.0, sqrt3 * std),
        Init::Uniform(lo, hi) => ((lo + hi) / 2.0, (hi - lo) / 2.0),
        Init::NearOne => (1.0, sqrt3 * 0.1),
        Init::Const(v) => (v, 0.0),
    }
}

/// Top 24 bits as a float in [0, 1).
fn unit(x: u64) -> f32 {
    (x >> 40) as f32 / (1u64 << 24) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(init: Init, n: usize) -> TensorSpec {
        TensorSpec {
            name: "w".into(),
            shape: vec![n],
            init,
        }
    }

    fn moments(t: &Tensor) -> (f64, f64) {
        let v: Vec<f32> = t.to_vec1().unwrap();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        (mean, var)
    }

    #[test]
    fn draws_have_the_variance_of_their_init() {
        let n = 1 << 21;
        let (m, v) =
            moments(&tensor(&spec(Init::Fan(256), n), 7, DType::F32, &Device::Cpu).unwrap());
        assert!(m.abs() < 1e-3, "mean {m}");
        assert!((v * 256.0 - 1.0).abs() < 0.01, "variance {v}");
        let (m, v) =
            moments(&tensor(&spec(Init::NearOne, n), 7, DType::F32, &Device::Cpu).unwrap());
        assert!((m - 1.0).abs() < 1e-3 && (v - 0.01).abs() < 1e-3, "{m} {v}");
        let t = tensor(
            &spec(Init::Uniform(0.3, 0.8), n),
            7,
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let v: Vec<f32> = t.to_vec1().unwrap();
        assert!(v.iter().all(|&x| (0.3..0.8).contains(&x)));
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights() {
        let s = spec(Init::Normal(1.0), 1000);
        let a: Vec<f32> = tensor(&s, 1, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = tensor(&s, 1, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        let c: Vec<f32> = tensor(&s, 2, DType::F32, &Device::Cpu)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
