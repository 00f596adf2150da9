//! The GPU frame step: fused kernels and CUDA-graph capture (only with `--features cuda`).

mod kernels;
mod step;

pub use kernels::{
    GemvKernel, KernelBuild, Kernels, RopeKv, GEMV_BF16_TO_F32_VARIANTS, GEMV_BF16_VARIANTS,
    GEMV_E4M3_TO_F32_VARIANTS, GEMV_E4M3_VARIANTS,
};
pub use step::GpuFrameStep;
// What `Kernels::project_normed` takes.
pub use crate::lm::transformer::NormWeights;
