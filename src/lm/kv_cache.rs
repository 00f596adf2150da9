//! A key/value cache preallocated for the whole run and written in place: its shape never
//! changes, so a frame step sees fixed shapes (a prerequisite for graph capture).

use candle_core::{DType, Device, Result, Tensor};

pub struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    /// Room for `capacity` positions of `batch × kv_heads × head_dim`.
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
    /// returns views of every cached position so far.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let seq = k.dim(2)?;
        if self.len + seq > self.capacity() {
            candle_core::bail!(
                "KV cache overflow: {} cached + {seq} new positions exceed its capacity {}",
                self.len,
                self.capacity()
            );
        }
        self.k.slice_set(&k.contiguous()?, 2, self.len)?;
        self.v.slice_set(&v.contiguous()?, 2, self.len)?;
        self.len += seq;
        Ok((
            self.k.narrow(2, 0, self.len)?,
            self.v.narrow(2, 0, self.len)?,
        ))
    }

    /// The whole preallocated buffers, for kernels that read the live length from the device.
    #[cfg(feature = "cuda")]
    pub fn buffers(&self) -> (&Tensor, &Tensor) {
        (&self.k, &self.v)
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
}
