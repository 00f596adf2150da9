use candle_core::{DType, Device, Tensor};

use super::{synthetic, Fp8Matrix, ModelSpec, TensorSpec, WeightStore, WeightsError};

/// Where a model's tensors come from.
pub enum Source {
    /// A checkpoint folder in the official layout.
    Checkpoint(WeightStore),
    /// Random weights built in memory from the spec (no checkpoint needed).
    Synthetic { seed: u64 },
}

/// Hands out the tensors of one model, by name, in the dtype and on the device asked for.
/// Building a loader validates the whole checkpoint against the spec first.
pub struct Loader {
    source: Source,
    spec: ModelSpec,
    device: Device,
}

impl Loader {
    pub fn new(source: Source, spec: ModelSpec, device: &Device) -> Result<Self, WeightsError> {
        if let Source::Checkpoint(store) = &source {
            spec.check(store)?;
        }
        Ok(Self {
            source,
            spec,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// A tensor the spec lists, converted to `dtype`.
    pub fn get(&self, name: &str, dtype: DType) -> Result<Tensor, WeightsError> {
        self.get_on(name, dtype, &self.device)
    }

    /// [`get`](Self::get), kept in host memory whatever the model's device.
    pub fn get_on_host(&self, name: &str, dtype: DType) -> Result<Tensor, WeightsError> {
        self.get_on(name, dtype, &Device::Cpu)
    }

    fn get_on(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor, WeightsError> {
        let spec = self.tensor_spec(name)?;
        match &self.source {
            Source::Checkpoint(store) => store.load(name, dtype, device),
            Source::Synthetic { seed } => {
                synthetic::tensor(spec, *seed, dtype, device).map_err(|e| self.fail(name, e))
            }
        }
    }

    /// A tensor the spec lists as f32 blocks of whole rows (slices along its first
    /// dimension) on the model's device, made one at a time: what quantising at load consumes.
    pub fn blocks_f32<'a>(
        &'a self,
        name: &'a str,
    ) -> Result<Box<dyn Iterator<Item = Result<Tensor, WeightsError>> + 'a>, WeightsError> {
        let spec = self.tensor_spec(name)?;
        let to_f32 = move |t: Tensor| t.to_dtype(DType::F32).map_err(|e| self.fail(name, e));
        match &self.source {
            Source::Checkpoint(store) => Ok(Box::new(
                store
                    .blocks_on(name, &self.device)?
                    .map(move |block| block.and_then(to_f32)),
            )),
            Source::Synthetic { seed } => {
                let whole = synthetic::tensor(spec, *seed, DType::F32, &self.device)
                    .map_err(|e| self.fail(name, e));
                Ok(Box::new(std::iter::once(whole)))
            }
        }
    }

    /// A (rows, cols) matrix the spec lists, quantised to FP8 with a scale per row, block by
    /// block, and placed on the device.
    pub fn get_fp8(&self, name: &str) -> Result<Fp8Matrix, WeightsError> {
        let parts = self
            .blocks_f32(name)?
            .map(|block| {
                Fp8Matrix::quantize_tensor(&block?, &self.device).map_err(|e| self.fail(name, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Fp8Matrix::cat(&parts).map_err(|e| self.fail(name, e))
    }

    fn tensor_spec(&self, name: &str) -> Result<&TensorSpec, WeightsError> {
        self.spec.get(name).ok_or_else(|| WeightsError::Tensor {
            name: name.to_string(),
            path: self.origin().into(),
            reason: format!("not part of the {} model spec", self.spec.model),
        })
    }

    fn fail(&self, name: &str, e: candle_core::Error) -> WeightsError {
        WeightsError::Tensor {
            name: name.to_string(),
            path: self.origin().into(),
            reason: e.to_string(),
        }
    }

    fn origin(&self) -> String {
        match &self.source {
            Source::Checkpoint(store) => store.dir().display().to_string(),
            Source::Synthetic { seed } => format!("<synthetic {} seed {seed}>", self.spec.model),
        }
    }
}
