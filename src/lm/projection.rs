//! The LM's matrices (attention and MLP projections, the decoder's input projection and the
//! output heads), stored dense in the model dtype or as FP8 codes with one scale per output.
//!
//! The per-frame step reads every matrix once per frame, so its time is bound by their bytes:
//! FP8 halves them against bf16. The fused GPU step multiplies the codes directly (dequantising
//! in registers); everywhere else a matrix is expanded to the activations' dtype first.

use std::borrow::Cow;

use candle_core::{DType, Module, Result, Tensor};

pub use crate::weights::MatrixPrecision;
use crate::weights::{Fp8Matrix, Loader};

/// Whether a tensor of the checkpoint is one of the matrices [`MatrixPrecision`] applies to.
/// Embeddings (looked up, not multiplied), norms and the small muq projection stay dense.
pub fn is_matrix(name: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        ".q_proj.weight",
        ".k_proj.weight",
        ".v_proj.weight",
        ".output_proj.weight",
        ".mlp.w1.weight",
        ".mlp.w2.weight",
        ".mlp.w3.weight",
    ];
    SUFFIXES.iter().any(|s| name.ends_with(s))
        || matches!(
            name,
            "projection.weight" | "codebook0_head.weight" | "audio_head"
        )
}

/// A row-major (outputs, inputs) matrix.
pub enum Projection {
    Dense(Tensor),
    Fp8(Fp8Matrix),
}

impl Projection {
    /// The checkpoint tensors `names` (each (outputs, inputs), same inputs) stacked by rows
    /// into one matrix, so projections of the same input run as one product.
    pub fn load(
        w: &Loader,
        names: &[&str],
        precision: MatrixPrecision,
        dtype: DType,
    ) -> anyhow::Result<Self> {
        Ok(match precision {
            MatrixPrecision::Dense => {
                let parts = names
                    .iter()
                    .map(|n| w.get(n, dtype))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Self::Dense(Tensor::cat(&parts, 0)?)
            }
            MatrixPrecision::Fp8 => {
                let parts = names
                    .iter()
                    .map(|n| w.get_fp8(n))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Self::Fp8(Fp8Matrix::cat(&parts)?)
            }
        })
    }

    /// Heads stored as one (heads, inputs, outputs) tensor, as `audio_head` is: each head
    /// transposed to (outputs, inputs).
    pub fn load_heads(
        w: &Loader,
        name: &str,
        precision: MatrixPrecision,
        dtype: DType,
    ) -> anyhow::Result<Vec<Self>> {
        if precision == MatrixPrecision::Dense {
            let all = w.get(name, dtype)?.transpose(1, 2)?.contiguous()?;
            return Ok((0..all.dim(0)?)
                .map(|i| all.get(i).map(Self::Dense))
                .collect::<Result<_>>()?);
        }
        // Quantised a block of heads at a time, on the model's device: a head's rows are its
        // outputs.
        let mut heads = Vec::new();
        for block in w.blocks_f32(name)? {
            let block = block?;
            for i in 0..block.dim(0)? {
                let head = block.get(i)?.t()?.contiguous()?;
                heads.push(Self::Fp8(Fp8Matrix::quantize_tensor(&head, w.device())?));
            }
        }
        Ok(heads)
    }

    /// `x · Wᵀ` for `x` (…, inputs) in its own dtype.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::Linear::new(self.weight(x.dtype())?.into_owned(), None).forward(x)
    }

    /// The matrix in `dtype`: the stored tensor when it already is, expanded otherwise.
    pub fn weight(&self, dtype: DType) -> Result<Cow<'_, Tensor>> {
        match self {
            Self::Dense(w) if w.dtype() == dtype => Ok(Cow::Borrowed(w)),
            Self::Dense(w) => Ok(Cow::Owned(w.to_dtype(dtype)?)),
            Self::Fp8(m) => Ok(Cow::Owned(m.dequantize(dtype)?)),
        }
    }

    /// Bytes it occupies.
    pub fn bytes(&self) -> u64 {
        match self {
            Self::Dense(w) => tensor_bytes(w),
            Self::Fp8(m) => {
                let (rows, cols) = m.dims();
                Fp8Matrix::bytes(rows, cols)
            }
        }
    }
}

/// Bytes of a tensor's elements.
pub(super) fn tensor_bytes(t: &Tensor) -> u64 {
    (t.elem_count() * t.dtype().size_in_bytes()) as u64
}
