//! Model weights: the official safetensors layout (single file or sharded with an index),
//! strict validation against the tensors a model expects, and synthetic random weights
//! built in memory for running without a checkpoint.

mod error;
mod fp8;
#[cfg(feature = "cuda")]
mod fp8_gpu;
#[cfg(feature = "cuda")]
mod kernels;
mod loader;
mod spec;
mod store;
mod synthetic;
#[cfg(feature = "cuda")]
mod synthetic_gpu;

pub use error::WeightsError;
pub use fp8::Fp8Matrix;
pub use loader::{Loader, Source};
pub use spec::{Init, ModelSpec, TensorSpec};
pub use store::{Blocks, ReadTimes, WeightStore};
