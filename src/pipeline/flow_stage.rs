//! Stage 2: flow matching, window by window as code frames arrive, into the latents ring.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;

use super::metrics::Metrics;
use super::ring::{RingReceiver, RingSender};
use crate::codec::FlowStream;

pub fn run(
    mut flow: FlowStream,
    mut codes: RingReceiver<Vec<u32>>,
    mut latents: RingSender<Tensor>,
    metrics: &Metrics,
) -> Result<()> {
    while let Some(frame) = codes.recv()? {
        flow.push(&frame)?;
        emit_ready(&mut flow, false, &mut latents, metrics)?;
    }
    // The LM has ended (or was stopped): the last, partial window runs on padded codes.
    if flow.codes_received() > 0 {
        emit_ready(&mut flow, true, &mut latents, metrics)?;
    }
    Ok(())
}

fn emit_ready(
    flow: &mut FlowStream,
    end_of_stream: bool,
    out: &mut RingSender<Tensor>,
    metrics: &Metrics,
) -> Result<()> {
    loop {
        let started = Instant::now();
        let Some(window) = flow.next_window(end_of_stream)? else {
            return Ok(());
        };
        // Wait for the GPU so the stage's busy time is its real cost.
        window.device().synchronize()?;
        metrics.flow.record(window.dim(0)?, started.elapsed());
        out.send(window)?;
    }
}
