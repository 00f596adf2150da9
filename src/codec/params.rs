//! Typed access to the codec's tensors by name, with the reference's load-time transforms
//! (weight norm folded into plain kernels).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::Linear;

use crate::weights::{Fp8Matrix, Loader, MatrixPrecision};

/// The tensors of one submodule (`flow_matching.estimator`, …) in the model dtype.
#[derive(Clone)]
pub(crate) struct Params<'a> {
    loader: &'a Loader,
    dtype: DType,
    /// How the matrices that may be stored in FP8 are (the estimator blocks' products).
    matrices: MatrixPrecision,
    /// Where the tensors go (the loader's device unless moved with [`Params::on`]).
    device: Device,
    prefix: String,
}

impl<'a> Params<'a> {
    pub fn new(loader: &'a Loader, dtype: DType) -> Self {
        Self {
            loader,
            dtype,
            matrices: MatrixPrecision::Dense,
            device: loader.device().clone(),
            prefix: String::new(),
        }
    }

    /// The same tensors, placed on `device` (e.g. another CUDA stream of the GPU).
    pub fn on(&self, device: &Device) -> Params<'a> {
        Self {
            device: device.clone(),
            ..self.clone()
        }
    }

    /// The same tensors, with the matrices that may be stored in FP8 stored as `matrices`.
    pub fn with_matrices(self, matrices: MatrixPrecision) -> Params<'a> {
        Self { matrices, ..self }
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn matrices(&self) -> MatrixPrecision {
        self.matrices
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The submodule `name` of this one.
    pub fn at(&self, name: impl std::fmt::Display) -> Params<'a> {
        Self {
            prefix: self.full_name(&name.to_string()),
            ..self.clone()
        }
    }

    fn full_name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A tensor in the model dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensor_as(name, self.dtype)
    }

    pub fn tensor_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let full = self.full_name(name);
        let tensor = self
            .loader
            .get(&full, dtype)
            .with_context(|| format!("loading HeartCodec tensor {full}"))?;
        if !self.device.same_device(self.loader.device()) {
            // Its copies are still running on the loader's stream; the decoder's device (a
            // stream of its own on the same GPU) would not wait for them.
            self.loader.device().synchronize()?;
        }
        Ok(tensor.to_device(&self.device)?)
    }

    /// A (rows, cols) matrix quantised to FP8 as it loads, block by block, on the loader's
    /// device (where the flow-matching model runs).
    pub fn fp8(&self, name: &str) -> Result<Fp8Matrix> {
        let full = self.full_name(name);
        anyhow::ensure!(
            self.device.same_device(self.loader.device()),
            "HeartCodec tensor {full}: FP8 matrices stay on the loader's device"
        );
        self.loader
            .get_fp8(&full)
            .with_context(|| format!("loading HeartCodec tensor {full} as FP8"))
    }

    pub fn linear(&self, name: &str, bias: bool) -> Result<Linear> {
        let p = self.at(name);
        let bias = if bias { Some(p.tensor("bias")?) } else { None };
        Ok(Linear::new(p.tensor("weight")?, bias))
    }

    /// The kernel of a `weight_norm`-parametrized conv: w = v · (g / ‖v‖), the norm over
    /// every dim but 0, computed in f32 as torch's `_weight_norm` does. Dim 0 is the output
    /// channel of a Conv1d ([out, in, k]) and the input channel of a ConvTranspose1d
    /// ([in, out, k]); the formula is the same.
    pub fn weight_norm_kernel(&self, name: &str) -> Result<Tensor> {
        let p = self.at(format!("{name}.parametrizations.weight"));
        let g = p.tensor_as("original0", DType::F32)?;
        let v = p.tensor_as("original1", DType::F32)?;
        let norm = v.sqr()?.sum_keepdim(D::Minus1)?.sum_keepdim(1)?.sqrt()?;
        let w = v.broadcast_mul(&(g / norm)?)?;
        Ok(w.to_dtype(self.dtype)?)
    }

    /// The single slope of an `nn.PReLU()`, read once at load time.
    pub fn prelu_slope(&self, name: &str) -> Result<f32> {
        let slope = self.tensor_as(&format!("{name}.weight"), DType::F32)?;
        Ok(slope.flatten_all()?.to_vec1::<f32>()?[0])
    }
}
