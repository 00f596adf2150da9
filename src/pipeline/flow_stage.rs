//! Stage 2: flow matching, window by window as code frames arrive, into the latents ring.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;

use super::control::Aborted;
use super::metrics::Metrics;
use super::ring::{RingReceiver, RingSender};
use crate::codec::{Cancelled, FlowStream};

/// One flow-matching window as it ran.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct WindowTiming {
    /// Latents solved (in-context prefix included) and new latents emitted.
    pub size: usize,
    pub new: usize,
    /// When it started, from the start of generation, and how long it took.
    pub start_ms: f64,
    pub ms: f64,
}

pub fn run(
    mut flow: FlowStream,
    mut codes: RingReceiver<Vec<u32>>,
    mut latents: RingSender<Tensor>,
    metrics: &Metrics,
) -> Result<Vec<WindowTiming>> {
    let mut windows = Vec::new();
    while let Some(frame) = codes.recv()? {
        flow.push(&frame)?;
        emit_ready(&mut flow, false, &mut latents, metrics, &mut windows)?;
    }
    // The LM has ended (or was stopped): the last, partial window runs on padded codes.
    if flow.codes_received() > 0 {
        emit_ready(&mut flow, true, &mut latents, metrics, &mut windows)?;
    }
    Ok(windows)
}

fn emit_ready(
    flow: &mut FlowStream,
    end_of_stream: bool,
    out: &mut RingSender<Tensor>,
    metrics: &Metrics,
    timings: &mut Vec<WindowTiming>,
) -> Result<()> {
    loop {
        let ready = end_of_stream || flow.codes_received() >= flow.next_plan().codes_needed();
        if !ready {
            return Ok(());
        }
        let started = Instant::now();
        let window = metrics.codec_work(|| run_window(flow, end_of_stream));
        let Some(window) = window? else {
            return Ok(());
        };
        metrics.flow.record(window.dim(0)?, started.elapsed());
        let ran = flow.last_window().unwrap_or(flow.next_plan());
        timings.push(WindowTiming {
            size: ran.size(),
            new: window.dim(0)?,
            start_ms: (started - metrics.start).as_secs_f64() * 1e3,
            ms: started.elapsed().as_secs_f64() * 1e3,
        });
        out.send(window)?;
    }
}

fn run_window(flow: &mut FlowStream, end_of_stream: bool) -> Result<Option<Tensor>> {
    let window = flow.next_window(end_of_stream).map_err(|e| {
        // Cancelled by the run's abort: the abort is the stage's outcome, not a failure.
        if e.downcast_ref::<Cancelled>().is_some() {
            Aborted.into()
        } else {
            e
        }
    })?;
    if let Some(w) = &window {
        // Wait for the GPU: the stage's busy time is its real cost, and the LM may resume.
        w.device().synchronize()?;
    }
    Ok(window)
}
