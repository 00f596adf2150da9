//! Host values of the codec's own ops (`CustomOp`s with kernels of ours on CUDA): their
//! CPU implementations compute in f32 on the inputs' values and store the result in the
//! inputs' dtype.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result};

/// A contiguous f32 or bf16 host tensor's values as f32 (exact for both).
pub(super) fn host_f32(storage: &CpuStorage, layout: &Layout) -> Result<Vec<f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("the codec's own ops need contiguous inputs");
    };
    Ok(match storage {
        CpuStorage::F32(v) => v[start..end].to_vec(),
        CpuStorage::BF16(v) => v[start..end].iter().map(|x| x.to_f32()).collect(),
        other => candle_core::bail!(
            "the codec's own ops take f32 or bf16, not {:?}",
            other.dtype()
        ),
    })
}

/// f32 results stored as `dtype` (bf16 rounded to nearest even).
pub(super) fn host_storage(values: Vec<f32>, dtype: DType) -> Result<CpuStorage> {
    Ok(match dtype {
        DType::F32 => CpuStorage::F32(values),
        DType::BF16 => CpuStorage::BF16(values.into_iter().map(half::bf16::from_f32).collect()),
        other => candle_core::bail!("the codec's own ops take f32 or bf16, not {other:?}"),
    })
}
