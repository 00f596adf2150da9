//! Where the milliseconds of a frame go: CUDA events recorded between the operations of an
//! eagerly run frame step (`HEARTSTREAM_PROFILE=1`), summed per operation over all frames.
//! Events serialise nothing and add no copies, so the eager step keeps its timing; the
//! captured graph is only a few percent faster (launch gaps), which `bench` measures apart.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream};
use candle_core::cuda_backend::WrapErr;
use candle_core::Result;

pub struct Timeline {
    stream: Arc<CudaStream>,
    marks: RefCell<Vec<(String, CudaEvent)>>,
    /// label -> total ms
    totals: RefCell<BTreeMap<String, f64>>,
    frames: RefCell<usize>,
}

impl Timeline {
    pub fn new(stream: Arc<CudaStream>) -> Self {
        Self {
            stream,
            marks: RefCell::new(Vec::new()),
            totals: RefCell::new(BTreeMap::new()),
            frames: RefCell::new(0),
        }
    }

    /// Attributes the GPU time since the previous mark to `label`.
    pub fn mark(&self, label: impl Into<String>) -> Result<()> {
        let event = self
            .stream
            .record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .w()?;
        self.marks.borrow_mut().push((label.into(), event));
        Ok(())
    }

    /// Closes a frame: waits for its events and adds each interval to its label.
    pub fn end_frame(&self) -> Result<()> {
        let marks = std::mem::take(&mut *self.marks.borrow_mut());
        let mut totals = self.totals.borrow_mut();
        for pair in marks.windows(2) {
            let ms = pair[0].1.elapsed_ms(&pair[1].1).w()? as f64;
            *totals.entry(pair[1].0.clone()).or_insert(0.0) += ms;
        }
        *self.frames.borrow_mut() += 1;
        Ok(())
    }

    /// Mean milliseconds per frame of each label, largest first.
    pub fn report(&self) -> Vec<(String, f64)> {
        let frames = (*self.frames.borrow()).max(1) as f64;
        let mut rows: Vec<(String, f64)> = self
            .totals
            .borrow()
            .iter()
            .map(|(k, ms)| (k.clone(), ms / frames))
            .collect();
        rows.sort_by(|a, b| b.1.total_cmp(&a.1));
        rows
    }
}
