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
#[cfg(feature = "cuda")]
mod upload;

pub use error::WeightsError;
#[cfg(feature = "cuda")]
pub use fp8::E4M3_CUDA;
pub use fp8::{decode as decode_e4m3, encode as encode_e4m3, Fp8Matrix, MatrixPrecision};
pub use loader::{Loader, Source};
pub use spec::{Init, ModelSpec, TensorSpec};
pub use store::{Blocks, ReadTimes, WeightStore};

/// `values[i] = f(i)` for every i, on every core for large slices (below a million values one
/// thread is started for nothing).
fn fill_parallel<T: Send>(values: &mut [T], f: impl Fn(usize) -> T + Sync) {
    const MIN_CHUNK: usize = 1 << 20;
    if values.len() <= MIN_CHUNK {
        values.iter_mut().enumerate().for_each(|(i, v)| *v = f(i));
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = values.len().div_ceil(threads).max(MIN_CHUNK);
    std::thread::scope(|s| {
        for (c, part) in values.chunks_mut(chunk).enumerate() {
            let f = &f;
            s.spawn(move || {
                for (j, v) in part.iter_mut().enumerate() {
                    *v = f(c * chunk + j);
                }
            });
        }
    });
}
