//! Stage 2: flow matching, window by window as code frames arrive, into the latents ring.

use std::time::Duration;

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::control::{Aborted, RunControl};
use super::metrics::Metrics;
use super::ring::{RingReceiver, RingSender};
use crate::codec::{Cancelled, FlowStream, SolvedWindow};

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
    control: &RunControl,
    metrics: &Metrics,
) -> Result<Vec<WindowTiming>> {
    let mut windows = Vec::new();
    while let Some(frame) = codes.recv()? {
        flow.push(&frame)?;
        emit_ready(
            &mut flow,
            false,
            &mut latents,
            control,
            metrics,
            &mut windows,
        )?;
    }
    // The LM has ended (or was stopped): the last, partial window runs on padded codes.
    if flow.codes_received() > 0 {
        emit_ready(
            &mut flow,
            true,
            &mut latents,
            control,
            metrics,
            &mut windows,
        )?;
    }
    Ok(windows)
}

/// Runs every window whose codes are there (all that are left at the end of the stream)
/// and hands its latents on.
fn emit_ready(
    flow: &mut FlowStream,
    end_of_stream: bool,
    out: &mut RingSender<Tensor>,
    control: &RunControl,
    metrics: &Metrics,
    timings: &mut Vec<WindowTiming>,
) -> Result<()> {
    while let Some(solved) = control.codec_work(|| solve(flow, end_of_stream))? {
        let new = solved.latents.dim(0)?;
        metrics
            .flow
            .record(new, Duration::from_secs_f64(solved.seconds));
        let finished_ms = metrics.start.elapsed().as_secs_f64() * 1e3;
        timings.push(WindowTiming {
            size: solved.window.size(),
            new,
            start_ms: finished_ms - solved.seconds * 1e3,
            ms: solved.seconds * 1e3,
        });
        out.send(to_host(solved.latents)?)?;
    }
    Ok(())
}

/// The window's latents cross to the decoder through the host, copied here while flow
/// matching's stream is idle (the window has just finished). Read from that stream by the
/// decoder instead, a decoder step would also wait for any window queued on it after this one.
fn to_host(latents: Tensor) -> Result<Tensor> {
    Ok(latents.to_device(&Device::Cpu)?)
}

fn solve(flow: &mut FlowStream, end_of_stream: bool) -> Result<Option<SolvedWindow>> {
    flow.solve_next(end_of_stream).map_err(|e| {
        // Cancelled by the run's abort: the abort is the stage's outcome, not a failure.
        if e.downcast_ref::<Cancelled>().is_some() {
            Aborted.into()
        } else {
            e
        }
    })
}
