//! The GPU frame step: fused kernels and CUDA-graph capture (only with `--features cuda`).

mod kernels;
mod step;

pub use kernels::{KernelBuild, Kernels, GEMV_BF16_VARIANTS, GEMV_E4M3_VARIANTS};
pub use step::GpuFrameStep;
