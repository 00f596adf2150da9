//! A key/value cache preallocated for the whole run and written in place: its shape never
//! changes, so a frame step sees fixed shapes (a prerequisite for graph capture). Dense (the
//! model's dtype) or FP8 (`kv_fp8`: about half the memory, and half the bytes attention reads).

use candle_core::{DType, Device, Result, Tensor};

use super::kv_fp8::{KvCodec, KV_GROUP};

/// How the backbone's cache stores keys and values (`--kv-precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvPrecision {
    /// In the model's dtype.
    #[default]
    Dense,
    /// E4M3 codes with a power-of-two scale per 16 values (`kv_fp8`).
    Fp8,
}

impl KvPrecision {
    /// The cache that goes with an LM whose matrices are stored as `matrices`: FP8 matrices
    /// are the configuration sized for small GPUs, and their cache follows them.
    pub fn matching(matrices: super::MatrixPrecision) -> Self {
        match matrices {
            super::MatrixPrecision::Dense => Self::Dense,
            super::MatrixPrecision::Fp8 => Self::Fp8,
        }
    }

    /// Bytes of `values` cached keys or values stored this way in a model of `dtype`.
    pub fn bytes(self, values: usize, dtype: DType) -> u64 {
        match self {
            Self::Dense => (values * dtype.size_in_bytes()) as u64,
            Self::Fp8 => (values + values / KV_GROUP) as u64,
        }
    }
}

pub struct KvCache {
    /// Values in the model's dtype, or E4M3 codes (U8).
    k: Tensor,
    v: Tensor,
    fp8: Option<Fp8Parts>,
    len: usize,
}

/// What an FP8 cache holds besides its codes.
struct Fp8Parts {
    /// U8 (batch, kv heads, capacity, head_dim / 16): each group's scale exponent.
    k_exps: Tensor,
    v_exps: Tensor,
    /// What `append` returns the cached values in.
    dtype: DType,
    codec: KvCodec,
}

impl KvCache {
    /// Room for `capacity` positions of `batch × kv_heads × head_dim`, in `dtype`.
    pub fn new(
        batch: usize,
        kv_heads: usize,
        capacity: usize,
        head_dim: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (batch, kv_heads, capacity, head_dim);
        Ok(Self {
            k: Tensor::zeros(shape, dtype, device)?,
            v: Tensor::zeros(shape, dtype, device)?,
            fp8: None,
            len: 0,
        })
    }

    /// The same room, in FP8 (`head_dim` a multiple of 16); `append` hands back `dtype`.
    pub fn new_fp8(
        [batch, kv_heads, capacity, head_dim]: [usize; 4],
        dtype: DType,
        codec: KvCodec,
        device: &Device,
    ) -> Result<Self> {
        if head_dim % KV_GROUP != 0 {
            candle_core::bail!(
                "an FP8 KV cache needs a head_dim that is a multiple of {KV_GROUP}, got \
                 {head_dim}: use --kv-precision bf16"
            );
        }
        let zeros = |d: usize| Tensor::zeros((batch, kv_heads, capacity, d), DType::U8, device);
        Ok(Self {
            k: zeros(head_dim)?,
            v: zeros(head_dim)?,
            fp8: Some(Fp8Parts {
                k_exps: zeros(head_dim / KV_GROUP)?,
                v_exps: zeros(head_dim / KV_GROUP)?,
                dtype,
                codec,
            }),
            len: 0,
        })
    }

    pub fn capacity(&self) -> usize {
        self.k.dim(2).unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the cached positions; the storage is kept.
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Writes keys/values (batch, kv_heads, seq, head_dim) after the cached positions and
    /// returns every cached position so far (views, or decoded copies of an FP8 cache).
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        if self.len + seq > self.capacity() {
            candle_core::bail!(
                "KV cache overflow: {} cached + {seq} new positions exceed its capacity {}",
                self.len,
                self.capacity()
            );
        }
        // The length grows only once the positions are written.
        let (at, len) = (self.len, self.len + seq);
        let Some(fp8) = &self.fp8 else {
            self.k.slice_set(&k.contiguous()?, 2, at)?;
            self.v.slice_set(&v.contiguous()?, 2, at)?;
            self.len = len;
            return Ok((self.k.narrow(2, 0, len)?, self.v.narrow(2, 0, len)?));
        };
        let (k_codes, k_exps) = fp8.codec.quantize(k)?;
        let (v_codes, v_exps) = fp8.codec.quantize(v)?;
        self.k.slice_set(&k_codes, 2, at)?;
        self.v.slice_set(&v_codes, 2, at)?;
        fp8.k_exps.slice_set(&k_exps, 2, at)?;
        fp8.v_exps.slice_set(&v_exps, 2, at)?;
        self.len = len;
        let decode = |codes, exps| fp8.codec.dequantize([codes, exps], len, fp8.dtype);
        Ok((decode(&self.k, &fp8.k_exps)?, decode(&self.v, &fp8.v_exps)?))
    }

    /// The whole preallocated buffers, for kernels that read the live length from the device.
    #[cfg(feature = "cuda")]
    pub fn buffers(&self) -> KvBuffers<'_> {
        KvBuffers {
            k: &self.k,
            v: &self.v,
            exponents: self.fp8.as_ref().map(|f| (&f.k_exps, &f.v_exps)),
        }
    }
}

/// A cache's buffers as the frame step's kernels take them.
#[cfg(feature = "cuda")]
#[derive(Clone, Copy)]
pub struct KvBuffers<'a> {
    /// (batch, kv heads, capacity, head_dim): values, or E4M3 codes.
    pub k: &'a Tensor,
    pub v: &'a Tensor,
    /// For an FP8 cache, the groups' exponents of k and v.
    pub exponents: Option<(&'a Tensor, &'a Tensor)>,
}

#[cfg(feature = "cuda")]
impl<'a> KvBuffers<'a> {
    /// Dense caches of keys `k` and values `v`.
    pub fn dense(k: &'a Tensor, v: &'a Tensor) -> Self {
        Self {
            k,
            v,
            exponents: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_in_place_and_refuses_overflow() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 1, 3, 2, DType::F32, &dev).unwrap();
        let a = Tensor::new(&[[[[1f32, 2.], [3., 4.]]]], &dev).unwrap();
        let (k, _) = c.append(&a, &a).unwrap();
        assert_eq!(k.dims(), &[1, 1, 2, 2]);
        let b = Tensor::new(&[[[[5f32, 6.]]]], &dev).unwrap();
        let (k, v) = c.append(&b, &b).unwrap();
        assert_eq!(
            k.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 2., 3., 4., 5., 6.]
        );
        assert_eq!(v.dims(), &[1, 1, 3, 2]);
        assert!(c.append(&b, &b).is_err());
        c.reset();
        assert!(c.is_empty());
    }

    /// An FP8 cache hands back every cached position decoded, the earlier ones unchanged by
    /// later appends, each value within half an E4M3 step (1/16) of what was appended, or of
    /// a subnormal step of its group's scale (< 2⁻¹⁵ for these groups) when it is tiny.
    #[test]
    fn an_fp8_cache_returns_what_was_appended_within_its_rounding() {
        let dev = Device::Cpu;
        let shape = [2, 3, 5, 16];
        let mut c = KvCache::new_fp8(shape, DType::F32, KvCodec::default(), &dev).unwrap();
        let a = Tensor::randn(0f32, 2.0, (2, 3, 2, 16), &dev).unwrap();
        let b = Tensor::randn(0f32, 0.01, (2, 3, 3, 16), &dev).unwrap();
        let (first, _) = c.append(&a, &a).unwrap();
        let (k, v) = c.append(&b, &b).unwrap();
        assert_eq!((k.dims(), c.len()), (&[2, 3, 5, 16][..], 5));
        let close = |got: &Tensor, want: &Tensor| {
            let err = (got - want).unwrap().abs().unwrap();
            let bound = ((want.abs().unwrap() / 16.0).unwrap() + 4e-5).unwrap();
            let over = err.gt(&bound).unwrap().sum_all().unwrap();
            assert_eq!(
                over.to_dtype(DType::U32)
                    .unwrap()
                    .to_scalar::<u32>()
                    .unwrap(),
                0
            );
        };
        close(&k.narrow(2, 0, 2).unwrap(), &a);
        close(&v.narrow(2, 2, 3).unwrap(), &b);
        let again = k.narrow(2, 0, 2).unwrap();
        let same = first.eq(&again).unwrap().to_dtype(DType::U32).unwrap();
        assert_eq!(
            same.sum_all().unwrap().to_scalar::<u32>().unwrap(),
            2 * 3 * 2 * 16
        );
        assert!(
            c.append(&a, &a).is_err(),
            "capacity 5 refuses a sixth and seventh"
        );
        let odd = KvCache::new_fp8([1, 1, 4, 24], DType::F32, KvCodec::default(), &dev);
        assert!(odd.err().unwrap().to_string().contains("got 24"));
    }
}
