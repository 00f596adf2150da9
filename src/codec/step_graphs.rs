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
    graph: Option<crate::gpu::SendGraph>,
}

impl StepRunner for Captured {
    fn buffers(&self) -> &StepBuffers {
        &self.buffers
    }

    fn run_step(&self, estimator: &Estimator) -> Result<()> {
        #[cfg(feature = "cuda")]
        if let Some(graph) = &self.graph {
            return Ok(graph.launch()?);
        }
        self.buffers.step(estimator)
    }
}

/// The prepared steps of one flow-matching model, shared by its clones (the warm-up
/// prepares, the streaming thread replays).
#[derive(Clone, Default)]
pub struct StepGraphs {
    // Declared first, dropped first: the graphs go before the thread whose memory they read.
    prepared: Arc<Mutex<HashMap<StepShape, Captured>>>,
    #[cfg(feature = "cuda")]
    capturer: Arc<crate::gpu::CaptureThread>,
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
            let entry = match self.prepare_one(estimator, shape, dims) {
                Ok(entry) => entry,
                // A step that cannot be captured still runs: eagerly, on buffers of its own.
                Err(e) => {
                    tracing::warn!("flow-matching step {shape:?} runs eagerly: {e:#}");
                    self.eager(estimator, shape, dims)?
                }
            };
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

    fn prepare_one(
        &self,
        estimator: &Estimator,
        shape: StepShape,
        dims: (usize, usize),
    ) -> Result<Captured> {
        #[cfg(feature = "cuda")]
        if estimator.device().is_cuda() && crate::gpu::graphs_enabled("FLOW") {
            crate::gpu::order_streams_manually(estimator.device());
            let estimator = estimator.clone();
            return self.capturer.run(move || {
                let buffers = StepBuffers::new(&estimator, shape, dims)?;
                let graph = crate::gpu::run_and_capture(estimator.device(), || {
                    buffers
                        .step(&estimator)
                        .map_err(|e| candle_core::Error::Msg(format!("{e:#}")))
                })?;
                Ok(Captured {
                    buffers,
                    graph: Some(graph.into()),
                })
            });
        }
        self.eager(estimator, shape, dims)
    }

    fn eager(
        &self,
        estimator: &Estimator,
        shape: StepShape,
        dims: (usize, usize),
    ) -> Result<Captured> {
        Ok(Captured {
            buffers: StepBuffers::new(estimator, shape, dims)?,
            #[cfg(feature = "cuda")]
            graph: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StepShape, Captured>> {
        self.prepared.lock().unwrap_or_else(|e| e.into_inner())
    }
}
