//! The GPU frame step: fused kernels and CUDA-graph capture (only with `--features cuda`).

mod kernels;
mod step;

pub use kernels::{GemvInput, Kernels};
pub use step::GpuFrameStep;
