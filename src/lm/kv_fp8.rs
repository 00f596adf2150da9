//! The FP8 KV cache's format (`--kv-precision fp8`): a cached row of `head_dim` values is
//! `head_dim` E4M3 codes, and each group of [`KV_GROUP`] values has one byte `e`, the biased
//! exponent of the group's scale 2^(e − 127) — 1.06 bytes a value instead of bf16's 2.
//!
//! The scale takes the group's largest magnitude to [128, 256): far from E4M3's largest value
//! (448) and its smallest normal (2⁻⁶), so no value saturates and only values below 2⁻¹⁴ of
//! their group's largest lose bits to subnormals. A power of two makes quantising and
//! decoding exact multiplications, so the bytes depend only on E4M3's rounding, which the GPU
//! kernels (`cuda/kernels/kv_fp8.cu`) share with the host: both write the same bytes. `e` is
//! at most 134 (a scale of 2⁷) so that the kernels' decoding factor stays a normal f32;
//! magnitudes beyond 448·2⁷ = 57,344 saturate (a trained model's keys and values are far
//! smaller).

use candle_core::{bail, DType, Result, Tensor};

use crate::weights::{decode_e4m3, encode_e4m3};

/// Values sharing a scale.
pub const KV_GROUP: usize = 16;

/// The exponent byte of a group whose largest magnitude is `largest`.
pub fn group_exponent(largest: f32) -> u8 {
    let biased = ((largest.to_bits() >> 23) & 0xff) as i32;
    (biased - 7).clamp(1, 134) as u8
}

/// 2^(e − 127).
fn scale(e: u8) -> f32 {
    f32::from_bits(u32::from(e) << 23)
}

/// Codes and exponents of `values` (whole groups).
pub fn quantize_groups(values: &[f32], codes: &mut [u8], exps: &mut [u8]) {
    let groups = values
        .chunks(KV_GROUP)
        .zip(codes.chunks_mut(KV_GROUP))
        .zip(exps);
    for ((values, codes), e) in groups {
        *e = group_exponent(values.iter().fold(0f32, |m, v| m.max(v.abs())));
        let inverse = f32::from_bits((254 - u32::from(*e)) << 23);
        for (c, v) in codes.iter_mut().zip(values) {
            *c = encode_e4m3(v * inverse);
        }
    }
}

/// The values of `codes` in groups of exponents `exps`.
pub fn decode_groups(codes: &[u8], exps: &[u8], out: &mut [f32]) {
    let groups = codes
        .chunks(KV_GROUP)
        .zip(exps)
        .zip(out.chunks_mut(KV_GROUP));
    for ((codes, &e), out) in groups {
        for (o, &c) in out.iter_mut().zip(codes) {
            *o = decode_e4m3(c) * scale(e);
        }
    }
}

/// Quantises and decodes cache rows where the cache lives: with the LM's kernels on a GPU,
/// on the host otherwise.
#[derive(Clone, Default)]
pub struct KvCodec {
    #[cfg(feature = "cuda")]
    kernels: Option<std::sync::Arc<super::cuda::Kernels>>,
}

impl KvCodec {
    /// The codec of a model on a GPU, whose kernels it uses.
    #[cfg(feature = "cuda")]
    pub fn on_gpu(kernels: std::sync::Arc<super::cuda::Kernels>) -> Self {
        Self {
            kernels: Some(kernels),
        }
    }

    /// `x` (…, head_dim) as codes (U8, `x`'s shape) and exponents (U8, (…, head_dim / 16)),
    /// on `x`'s device.
    pub fn quantize(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let dims = x.dims();
        let Some(&hd) = dims.last().filter(|&&d| d % KV_GROUP == 0) else {
            bail!("FP8 cache rows need a multiple of {KV_GROUP} values, got shape {dims:?}");
        };
        #[cfg(feature = "cuda")]
        if let (Some(kernels), true) = (&self.kernels, x.device().is_cuda()) {
            return kernels.kv_quantize(x);
        }
        let values = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let mut codes = vec![0u8; values.len()];
        let mut exps = vec![0u8; values.len() / KV_GROUP];
        quantize_groups(&values, &mut codes, &mut exps);
        let mut exp_dims = dims.to_vec();
        if let Some(last) = exp_dims.last_mut() {
            *last = hd / KV_GROUP;
        }
        Ok((
            Tensor::from_vec(codes, dims, x.device())?,
            Tensor::from_vec(exps, exp_dims, x.device())?,
        ))
    }

    /// The first `len` positions of a cache, `[codes, exponents]` as `quantize` makes them
    /// (the codes (batch, kv heads, capacity, head_dim)), decoded to `dtype`:
    /// (batch, kv heads, len, head_dim).
    pub fn dequantize(
        &self,
        [codes, exps]: [&Tensor; 2],
        len: usize,
        dtype: DType,
    ) -> Result<Tensor> {
        #[cfg(feature = "cuda")]
        if let (Some(kernels), true) = (&self.kernels, codes.device().is_cuda()) {
            return kernels.kv_dequantize(codes, exps, len, dtype);
        }
        let host =
            |t: &Tensor| -> Result<Vec<u8>> { t.narrow(2, 0, len)?.flatten_all()?.to_vec1() };
        let (codes_host, exps_host) = (host(codes)?, host(exps)?);
        let mut values = vec![0f32; codes_host.len()];
        decode_groups(&codes_host, &exps_host, &mut values);
        let (b, kv_heads, _, hd) = codes.dims4()?;
        Tensor::from_vec(values, (b, kv_heads, len, hd), codes.device())?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's largest value keeps its 4 significant bits; every value is within half an
    /// E4M3 step of itself (1/16 of its magnitude) or, below the normal range, of 2⁻¹⁰ of
    /// the group's scale.
    #[test]
    fn groups_round_trip_within_half_a_step() {
        let values: Vec<f32> = (0..8 * KV_GROUP)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 10f32.powi((i / KV_GROUP) as i32 - 6))
            .collect();
        let mut codes = vec![0u8; values.len()];
        let mut exps = vec![0u8; values.len() / KV_GROUP];
        quantize_groups(&values, &mut codes, &mut exps);
        let mut back = vec![0f32; values.len()];
        decode_groups(&codes, &exps, &mut back);
        for (g, (want, got)) in values
            .chunks(KV_GROUP)
            .zip(back.chunks(KV_GROUP))
            .enumerate()
        {
            let s = scale(exps[g]);
            let largest = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                (128.0..256.0).contains(&(largest / s)),
                "group {g}: {largest} / {s}"
            );
            for (w, b) in want.iter().zip(got) {
                let bound = (w.abs() / 16.0).max(s * 2f32.powi(-10));
                assert!((w - b).abs() <= bound, "group {g}: {w} decoded as {b}");
            }
        }
    }

    #[test]
    fn exponents_stay_in_the_decodable_range() {
        assert_eq!(group_exponent(0.0), 1);
        assert_eq!(group_exponent(1.0), 120);
        assert_eq!(group_exponent(1.0e30), 134);
        assert_eq!(group_exponent(f32::MIN_POSITIVE / 4.0), 1);
        // Zeros stay zeros, and a huge group saturates instead of overflowing.
        let mut codes = [9u8; KV_GROUP];
        let mut exps = [0u8; 1];
        quantize_groups(&[0.0; KV_GROUP], &mut codes, &mut exps);
        assert_eq!(codes, [0; KV_GROUP]);
        quantize_groups(&[1.0e6; KV_GROUP], &mut codes, &mut exps);
        let mut back = [0f32; KV_GROUP];
        decode_groups(&codes, &exps, &mut back);
        assert_eq!(back[0], 448.0 * 128.0);
    }

    #[test]
    fn the_host_codec_keeps_a_cache_layout() {
        let dev = candle_core::Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 3, 5, 32), &dev).unwrap();
        let codec = KvCodec::default();
        let (codes, exps) = codec.quantize(&x).unwrap();
        assert_eq!(
            (codes.dims(), exps.dims()),
            (&[2, 3, 5, 32][..], &[2, 3, 5, 2][..])
        );
        let back = codec.dequantize([&codes, &exps], 4, DType::F32).unwrap();
        let want = x.narrow(2, 0, 4).unwrap();
        let err = (back - &want).unwrap().abs().unwrap().max_all().unwrap();
        let peak = want.abs().unwrap().max_all().unwrap();
        let (err, peak) = (
            err.to_scalar::<f32>().unwrap(),
            peak.to_scalar::<f32>().unwrap(),
        );
        assert!(err <= peak / 16.0, "{err} of {peak}");
        assert!(codec.quantize(&x.narrow(3, 0, 24).unwrap()).is_err());
    }
}
