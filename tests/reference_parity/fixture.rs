//! Reads a reference fixture folder (the format of `tests/fixtures/reference-tiny`, written by
//! the real heartlib code): its configs, `golden.json` and `golden.safetensors`.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use safetensors::{Dtype, SafeTensors};

/// The folder named by `HEARTSTREAM_FIXTURE`, or the project's copy of reference-tiny.
pub fn fixture_dir() -> PathBuf {
    match std::env::var_os("HEARTSTREAM_FIXTURE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-tiny"),
    }
}

pub struct Golden {
    pub dir: PathBuf,
    pub json: serde_json::Value,
    tensors: HashMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
}

impl Golden {
    /// Loads the fixture; a missing or unreadable fixture fails the test, it never skips.
    pub fn load() -> Golden {
        let dir = fixture_dir();
        let json_path = dir.join("golden.json");
        let text = std::fs::read_to_string(&json_path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", json_path.display()));
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", json_path.display()));
        let st_path = dir.join("golden.safetensors");
        let bytes = std::fs::read(&st_path)
            .unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", st_path.display()));
        let st = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{} is not safetensors: {e}", st_path.display()));
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let entry = (view.dtype(), view.shape().to_vec(), view.data().to_vec());
                (name, entry)
            })
            .collect();
        Golden { dir, json, tensors }
    }

    fn raw(&self, name: &str, want: Dtype) -> (&[usize], &[u8]) {
        let (dtype, shape, data) = self.tensors.get(name).unwrap_or_else(|| {
            panic!(
                "golden tensor {name} is missing from {}",
                self.dir.display()
            )
        });
        assert_eq!(*dtype, want, "golden tensor {name} has dtype {dtype:?}");
        (shape, data)
    }

    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("golden tensor {name} is missing"))
            .1
            .clone()
    }

    pub fn f32(&self, name: &str) -> Tensor {
        let (shape, data) = self.raw(name, Dtype::F32);
        let v: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    pub fn i64(&self, name: &str) -> Vec<i64> {
        let (_, data) = self.raw(name, Dtype::I64);
        data.chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    pub fn bool(&self, name: &str) -> Vec<bool> {
        let (_, data) = self.raw(name, Dtype::BOOL);
        data.iter().map(|&b| b != 0).collect()
    }

    /// A value of `golden.json` by a path of keys, e.g. `&["calls", "fm.inference", "num_steps"]`.
    pub fn meta(&self, path: &[&str]) -> &serde_json::Value {
        path.iter().fold(&self.json, |v, k| {
            v.get(k)
                .unwrap_or_else(|| panic!("golden.json has no {}", path.join(".")))
        })
    }
}

/// Largest absolute difference between two tensors of the same shape, on any devices.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let host = |t: &Tensor| -> Tensor {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all())
            .unwrap()
    };
    (host(a) - host(b))
        .and_then(|d| d.abs())
        .and_then(|d| d.max(0))
        .and_then(|d| d.to_scalar::<f32>())
        .unwrap()
}

/// The device the parity tests run on: `HEARTSTREAM_TEST_DEVICE` (cpu, cuda, cuda:N), cpu by
/// default. With `HEARTSTREAM_TEST_DTYPE=bf16` the models run in bf16 and the differences are
/// reported rather than held to the f32 tolerances.
pub fn test_device() -> Device {
    let spec = std::env::var("HEARTSTREAM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    heartstream::device::parse_device(&spec).expect("HEARTSTREAM_TEST_DEVICE names a usable device")
}

pub fn test_dtype() -> DType {
    match std::env::var("HEARTSTREAM_TEST_DTYPE").as_deref() {
        Err(_) | Ok("f32") => DType::F32,
        Ok("bf16") => DType::BF16,
        Ok(other) => panic!("HEARTSTREAM_TEST_DTYPE={other}: expected f32 or bf16"),
    }
}

/// Asserts `actual` is within `atol` of `expected` everywhere, naming the golden tensor. In a
/// reduced-precision run it prints the difference instead (and still refuses non-finite ones).
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, atol: f32) {
    let d = max_abs_diff(actual, expected);
    if test_dtype() != DType::F32 {
        println!(
            "{:?} max abs difference {name}: {d:e} (f32 tolerance {atol:e})",
            test_dtype()
        );
        assert!(d.is_finite(), "{name}: non-finite difference");
        return;
    }
    assert!(
        d.is_finite() && d <= atol,
        "{name}: max abs difference {d:e} exceeds {atol:e}"
    );
}

/// Asserts integer results (tokens, counts) are equal; a reduced-precision run reports how
/// many differ.
pub fn assert_exact(name: &str, actual: &[i64], expected: &[i64]) {
    if test_dtype() != DType::F32 && actual.len() == expected.len() {
        let differ = actual.iter().zip(expected).filter(|(a, b)| a != b).count();
        println!(
            "{:?} {name}: {differ} of {} tokens differ",
            test_dtype(),
            expected.len()
        );
        return;
    }
    assert_eq!(actual, expected, "{name}");
}
