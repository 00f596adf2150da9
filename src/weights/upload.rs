//! Checkpoint blocks cross to a GPU from page-locked host memory, asynchronously, through two
//! buffers in turn: while one block's copy runs, the next block is read and checked into the
//! other. A copy from pageable memory (`Tensor::from_slice`) is synchronous and goes
//! through the driver's own staging at a few GB/s; it bounded loading the official files from
//! the page cache (BENCHMARKS.md, issue 11).

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::cuda_backend::cudarc::driver::{
    result, sys, CudaEvent, CudaStream, DevicePtrMut, DeviceRepr, PinnedHostSlice,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, DType, Result, Tensor};

/// Bytes of one buffer: the largest block that goes this way. Two of them are page-locked for
/// as long as the store that made them lives.
pub const UPLOAD_BYTES: usize = 32 << 20;

pub struct Upload {
    buffers: [PinnedHostSlice<u8>; 2],
    /// The copy that last read each buffer.
    copied: [Option<CudaEvent>; 2],
    turn: usize,
}

impl Upload {
    /// The two buffers, page-locked in `dev`'s context.
    pub fn new(dev: &CudaDevice) -> Result<Self> {
        let stream = dev.cuda_stream();
        let context = stream.context();
        // Cached (not write-combined) memory: the host also reads it, checking values.
        let pinned = || unsafe { context.alloc_pinned_with_flags::<u8>(UPLOAD_BYTES, 0) };
        Ok(Self {
            buffers: [pinned().w()?, pinned().w()?],
            copied: [None, None],
            turn: 0,
        })
    }

    /// The next buffer's first `bytes` (at most [`UPLOAD_BYTES`]), once the copy that last
    /// read it has finished, and how long that took.
    pub fn next_buffer(&mut self, bytes: usize) -> Result<(&mut [u8], Duration)> {
        let started = Instant::now();
        if let Some(copy) = self.copied[self.turn].take() {
            copy.synchronize().w()?;
        }
        let buffer = self.buffers[self.turn].as_mut_slice().w()?;
        Ok((&mut buffer[..bytes], started.elapsed()))
    }

    /// A new tensor of `dtype` and `shape` on `dev`, filled from the first bytes of the buffer
    /// [`next_buffer`](Self::next_buffer) gave, asynchronously on `dev`'s stream (later work
    /// on that stream sees it; one model's stores serve devices of several streams, such as
    /// the codec's two); then the other buffer's turn.
    pub fn upload(&mut self, dev: &CudaDevice, dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let stream = dev.cuda_stream();
        let source = &self.buffers[self.turn].as_slice().w()?[..n * dtype.size_in_bytes()];
        let tensor = match dtype {
            DType::F32 => copy_into::<f32>(dev, &stream, source, shape)?,
            DType::BF16 => copy_into::<half::bf16>(dev, &stream, source, shape)?,
            DType::F16 => copy_into::<half::f16>(dev, &stream, source, shape)?,
            other => candle_core::bail!("no upload of {other:?} weights"),
        };
        self.copied[self.turn] = Some(
            stream
                .record_event(Some(sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC))
                .w()?,
        );
        self.turn = 1 - self.turn;
        Ok(tensor)
    }
}

/// A new tensor on `dev` holding `source`, copied on `stream` (`dev`'s).
fn copy_into<T: CudaDType + DeviceRepr>(
    dev: &CudaDevice,
    stream: &Arc<CudaStream>,
    source: &[u8],
    shape: &[usize],
) -> Result<Tensor> {
    let n = source.len() / std::mem::size_of::<T>();
    // SAFETY: the copy below writes all n elements before any later work on the stream.
    let mut slice = unsafe { dev.alloc::<T>(n)? };
    let (dst, guard) = slice.device_ptr_mut(stream);
    // SAFETY: `source` lies in page-locked memory that stays untouched until the event
    // recorded after this copy has completed (`next_buffer` waits for it), and `dst` holds
    // `source.len()` bytes.
    unsafe { result::memcpy_htod_async(dst, source, stream.cu_stream()) }.w()?;
    drop(guard);
    Ok(crate::gpu::tensor_of(slice, dev, shape))
}

impl Drop for Upload {
    /// The buffers are freed only after the copies reading them have finished.
    fn drop(&mut self) {
        for copy in self.copied.iter().flatten() {
            // A failed wait leaves nothing better to do than free the memory anyway.
            let _ = copy.synchronize();
        }
    }
}
