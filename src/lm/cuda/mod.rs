//! The GPU frame step: fused kernels and CUDA-graph capture (only with `--features cuda`).

mod kernels;
mod step;
mod timeline;

pub use step::GpuFrameStep;
