//! Captured Euler steps. A flow-matching window runs the same ~1,000 kernels per step, and
//! eagerly most of its time goes to launching them; window shapes repeat (the streaming
//! schedule has a handful), so each shape's step is captured once as a CUDA graph over
//! fixed buffers and replayed for every step of every window of that shape.
//!
//! Without CUDA (or for a shape never captured) the same step runs eagerly on buffers of
//! the window's own: the arithmetic is identical either way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Result;

use super::estimator::Estimator;
use super::euler::{StepBuffers, StepRunner, StepShape};

/// A window shape's own buffers, kept between windows, and on CUDA its step captured over
/// them.
struct Captured {
    buffers: StepBuffers,
    #[cfg(feature = "cuda")]
    graph: Option<SendGraph>,
}

/// A CUDA graph handle may be launched from any thread of its context; the cache hands each
/// one to a single solve at a time.
#[cfg(feature = "cuda")]
struct SendGraph(candle_core::cuda_backend::cudarc::driver::CudaGraph);

// SAFETY: see `SendGraph`: the exec handle is only used by the solve that took it out of
// the cache, and cudarc binds the context to the launching thread.
#[cfg(feature = "cuda")]
unsafe impl Send for SendGraph {}

impl StepRunner for Captured {
    fn buffers(&self) -> &StepBuffers {
        &self.buffers
    }

    fn run_step(&self, estimator: &Estimator) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(graph) = &self.graph {
            use candle_core::cuda_backend::WrapErr;
            return Ok(graph.0.launch().w()?);
        }
        self.buffers.step(estimator)
    }
}

/// The prepared steps of one flow-matching model, shared by its clones (the warm-up
/// prepares, the streaming thread replays).
#[derive(Clone, Default)]
pub struct StepGraphs {
    prepared: Arc<Mutex<HashMap<StepShape, Captured>>>,
}

impl StepGraphs {
    /// Prepares each shape not prepared yet: buffers of its own, and on CUDA the step
    /// captured as a graph (unless `HEARTSTREAM_FLOW_GRAPH=0`). `dims`: latent channels and
    /// code-condition width. Returns how many shapes were new.
    pub fn prepare(
        &self,
        estimator: &Estimator,
        shapes: &[StepShape],
        dims: (usize, usize),
    ) -> Result<usize> {
        let mut new = 0;
        for &shape in shapes {
            if self.lock().contains_key(&shape) {
                continue;
            }
            let entry = prepare_one(estimator, shape, dims)?;
            self.lock().insert(shape, entry);
            new += 1;
        }
        Ok(new)
    }

    /// Runs `solve` with the prepared step of `shape` if there is one, else on fresh
    /// buffers, eagerly.
    pub(super) fn with_runner<T>(
        &self,
        estimator: &Estimator,
        shape: StepShape,
        dims: (usize, usize),
        solve: impl FnOnce(&dyn StepRunner) -> Result<T>,
    ) -> Result<T> {
        // Taken out for the window (a concurrent solve of the same shape runs eagerly).
        let Some(prepared) = self.lock().remove(&shape) else {
            return solve(&StepBuffers::new(estimator, shape, dims)?);
        };
        let result = solve(&prepared);
        self.lock().insert(shape, prepared);
        result
    }

    /// Shapes prepared so far.
    pub fn shapes(&self) -> Vec<StepShape> {
        self.lock().keys().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StepShape, Captured>> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn prepare_one(estimator: &Estimator, shape: StepShape, dims: (usize, usize)) -> Result<Captured> {
    let buffers = StepBuffers::new(estimator, shape, dims)?;
    #[cfg(feature = "cuda")]
    if estimator.device().is_cuda() && crate::gpu::graphs_enabled("FLOW") {
        // One eager step first (loading kernels, settling cuBLAS for these shapes).
        buffers.step(estimator)?;
        let graph = crate::gpu::capture(estimator.device(), || {
            buffers
                .step(estimator)
                .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
        })?;
        return Ok(Captured {
            buffers,
            graph: Some(SendGraph(graph)),
        });
    }
    Ok(Captured {
        buffers,
        #[cfg(feature = "cuda")]
        graph: None,
    })
}
