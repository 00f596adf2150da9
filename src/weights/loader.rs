use candle_core::{DType, Device, Tensor};

use super::{synthetic, ModelSpec, WeightStore, WeightsError};

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
        let spec = self.spec.get(name).ok_or_else(|| WeightsError::Tensor {
            name: name.to_string(),
            path: self.origin().into(),
            reason: format!("not part of the {} model spec", self.spec.model),
        })?;
        match &self.source {
            Source::Checkpoint(store) => store.load(name, dtype, &self.device),
            Source::Synthetic { seed } => synthetic::tensor(spec, *seed, dtype, &self.device)
                .map_err(|e| WeightsError::Tensor {
                    name: name.to_string(),
                    path: self.origin().into(),
                    reason: e.to_string(),
                }),
        }
    }

    fn origin(&self) -> String {
        match &self.source {
            Source::Checkpoint(store) => store.dir().display().to_string(),
            Source::Synthetic { seed } => format!("<synthetic {} seed {seed}>", self.spec.model),
        }
    }
}
