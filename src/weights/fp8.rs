//! Weight-only FP8: a matrix stored as E4M3 codes (one byte a weight) with one f32 scale per
//! output channel (row), `w[n, k] ≈ scale[n] · e4m3(code[n, k])`.
//!
//! A per-row scale maps each row's largest magnitude to E4M3's largest finite value (448), so
//! no weight saturates and every row uses the format's whole range. Quantisation runs block by
//! block while loading, on the GPU for a GPU model and on the host otherwise, and gives the
//! same bytes either way: the GPU kernels and the CPU path read the same codes.

use candle_core::{DType, Device, Result, Tensor};
use float8::F8E4M3;

/// The device twin of [`decode`]'s format (`e4m3_code`, `e4m3_bits`), for the CUDA modules
/// that quantise or decode E4M3.
#[cfg(feature = "cuda")]
pub const E4M3_CUDA: &str = include_str!("e4m3.cuh");

/// E4M3's largest finite magnitude.
const E4M3_MAX: f32 = 448.0;

/// Rows per thread below which quantising on more threads does not pay.
const MIN_ROWS_PER_THREAD: usize = 64;

/// How a model's matrices are stored (the LM's: `--lm-precision`; the flow-matching
/// blocks': `--flow-precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MatrixPrecision {
    /// In the model dtype (bf16 on a GPU).
    #[default]
    Dense,
    /// E4M3 codes with an f32 scale per output channel.
    Fp8,
}

#[derive(Clone)]
pub struct Fp8Matrix {
    /// U8 (rows, cols): the E4M3 bit patterns.
    codes: Tensor,
    /// F32 (rows,).
    scales: Tensor,
}

impl Fp8Matrix {
    /// Quantises `values`, `rows × cols` f32 in row-major order, and places the result on
    /// `device`.
    pub fn quantize(values: &[f32], cols: usize, device: &Device) -> Result<Self> {
        if cols == 0 || values.len() % cols != 0 {
            candle_core::bail!("cannot quantise {} values as rows of {cols}", values.len());
        }
        let rows = values.len() / cols;
        let mut codes = vec![0u8; values.len()];
        let mut scales = vec![0f32; rows];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per_thread = rows.div_ceil(threads).max(MIN_ROWS_PER_THREAD);
        std::thread::scope(|s| {
            let parts = codes
                .chunks_mut(per_thread * cols)
                .zip(scales.chunks_mut(per_thread))
                .zip(values.chunks(per_thread * cols));
            for ((codes, scales), values) in parts {
                s.spawn(move || {
                    let rows = codes.chunks_mut(cols).zip(values.chunks(cols));
                    for (scale, (codes, values)) in scales.iter_mut().zip(rows) {
                        *scale = quantize_row(values, codes);
                    }
                });
            }
        });
        Ok(Self {
            codes: Tensor::from_vec(codes, (rows, cols), device)?,
            scales: Tensor::from_vec(scales, rows, device)?,
        })
    }

    /// Quantises a tensor of shape (rows, cols), in any float dtype, onto `device`: on the
    /// GPU when both are that GPU (the same bytes, see `fp8_gpu.rs`), on the host otherwise.
    pub fn quantize_tensor(rows: &Tensor, device: &Device) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let (Device::Cuda(dev), true) = (device, rows.device().same_device(device)) {
            if let Some(m) = super::fp8_gpu::quantize(rows, dev)? {
                return Ok(m);
            }
        }
        let (_, cols) = rows.dims2()?;
        let values = rows.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Self::quantize(&values, cols, device)
    }

    #[cfg(feature = "cuda")]
    pub(super) fn from_parts(codes: Tensor, scales: Tensor) -> Self {
        Self { codes, scales }
    }

    /// The rows of `parts`, stacked in order (matrices with the same number of columns; one
    /// part is returned as it is).
    pub fn cat(parts: &[Fp8Matrix]) -> Result<Self> {
        let codes: Vec<&Tensor> = parts.iter().map(|p| &p.codes).collect();
        let scales: Vec<&Tensor> = parts.iter().map(|p| &p.scales).collect();
        Ok(Self {
            codes: Tensor::cat(&codes, 0)?,
            scales: Tensor::cat(&scales, 0)?,
        })
    }

    /// Rows `first..first + count`, sharing this matrix's storage.
    pub fn rows(&self, first: usize, count: usize) -> Result<Self> {
        Ok(Self {
            codes: self.codes.narrow(0, first, count)?,
            scales: self.scales.narrow(0, first, count)?,
        })
    }

    /// (rows, cols).
    pub fn dims(&self) -> (usize, usize) {
        let d = self.codes.dims();
        (d[0], d[1])
    }

    pub fn codes(&self) -> &Tensor {
        &self.codes
    }

    pub fn scales(&self) -> &Tensor {
        &self.scales
    }

    /// The matrix in `dtype`, decoded through a table of the 256 codes and scaled in f32
    /// before the final rounding (on a GPU, by one kernel that rounds the same way). The
    /// prompt step and the CPU path multiply with this.
    pub fn dequantize(&self, dtype: DType) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let Device::Cuda(dev) = self.codes.device() {
            if let Some(t) = super::fp8_gpu::dequantize(self, dtype, dev)? {
                return Ok(t);
            }
        }
        let table: Vec<f32> = (0..=255u8).map(decode).collect();
        let table = Tensor::from_vec(table, 256, self.codes.device())?;
        let (rows, cols) = self.dims();
        table
            .index_select(&self.codes.flatten_all()?, 0)?
            .reshape((rows, cols))?
            .broadcast_mul(&self.scales.unsqueeze(1)?)?
            .to_dtype(dtype)
    }

    /// Bytes on the device: one a weight and four a row.
    pub fn bytes(rows: usize, cols: usize) -> u64 {
        (rows * cols + 4 * rows) as u64
    }
}

/// Writes the codes of one row and returns its scale. An all-zero row gets scale 1 (codes 0).
fn quantize_row(values: &[f32], codes: &mut [u8]) -> f32 {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / E4M3_MAX } else { 1.0 };
    let inverse = 1.0 / scale;
    for (c, v) in codes.iter_mut().zip(values) {
        *c = encode(v * inverse);
    }
    scale
}

/// The E4M3 code of `v`: rounded to nearest even, saturating at ±448.
pub fn encode(v: f32) -> u8 {
    F8E4M3::from_f32(v).to_bits()
}

/// The value of an E4M3 code.
pub fn decode(code: u8) -> f32 {
    F8E4M3::from_bits(code).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The GPU kernels decode a code with integer operations: its 7 magnitude bits go where
    /// an f32 keeps the top of exponent and mantissa, its sign to the sign bit, giving the
    /// value times 2⁻¹²⁰ (subnormal codes become f32 subnormals). That must agree with the
    /// E4M3 definition for every code quantisation can produce (all but NaN).
    #[test]
    fn the_kernels_integer_decoding_is_exact_for_every_finite_code() {
        for code in (0..=255u8).filter(|c| c & 0x7f != 0x7f) {
            let c = u32::from(code);
            let bits = ((c & 0x7f) << 20) | ((c & 0x80) << 24);
            let decoded = f32::from_bits(bits) * 2f32.powi(120);
            assert_eq!(
                decoded.to_bits(),
                decode(code).to_bits(),
                "code {code:#04x}"
            );
        }
    }

    #[test]
    fn each_row_keeps_its_largest_weight_exactly_and_the_rest_within_half_a_step() {
        let cols = 37;
        let values: Vec<f32> = (0..5 * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 10f32.powi((i / cols) as i32 - 3))
            .collect();
        let q = Fp8Matrix::quantize(&values, cols, &Device::Cpu).unwrap();
        let back = q.dequantize(DType::F32).unwrap().flatten_all().unwrap();
        let back = back.to_vec1::<f32>().unwrap();
        for (row, (want, got)) in values.chunks(cols).zip(back.chunks(cols)).enumerate() {
            let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let at = want.iter().position(|v| v.abs() == max).unwrap();
            assert!((got[at].abs() - max).abs() <= max * 1e-6, "row {row}: peak");
            for (w, g) in want.iter().zip(got) {
                // Three mantissa bits: half a step is 1/16 of the value, and values below
                // E4M3's normal range are spaced by 2⁻⁹ of the full scale.
                let bound = (w.abs() / 16.0).max(max / E4M3_MAX * 2f32.powi(-10));
                assert!((w - g).abs() <= bound * 1.0001, "row {row}: {w} → {g}");
            }
        }
    }

    #[test]
    fn a_zero_row_stays_zero_and_shapes_are_checked() {
        let q = Fp8Matrix::quantize(&[0.0; 6], 3, &Device::Cpu).unwrap();
        let back = q.dequantize(DType::F32).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0; 6]
        );
        assert!(Fp8Matrix::quantize(&[1.0; 7], 3, &Device::Cpu).is_err());
    }

    #[test]
    fn cat_stacks_rows_with_their_scales() {
        let a = Fp8Matrix::quantize(&[1.0, -2.0], 2, &Device::Cpu).unwrap();
        let b = Fp8Matrix::quantize(&[0.5, 0.25, 100.0, 3.0], 2, &Device::Cpu).unwrap();
        let both = Fp8Matrix::cat(&[a, b]).unwrap();
        assert_eq!(both.dims(), (3, 2));
        let back = both
            .dequantize(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(back[0], [1.0, -2.0]);
        assert_eq!(back[1], [0.5, 0.25]);
        assert!((back[2][0] - 100.0).abs() < 1e-4 && (back[2][1] - 3.0).abs() < 3.0 / 16.0);
    }
}
