//! Stage 3: the ScalarModel decoder, latents → PCM, handed to every sink.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::control::{Aborted, Event, RunControl};
use super::metrics::Metrics;
use super::ring::RingReceiver;
use crate::audio::{is_closed, Sink};
use crate::codec::ScalarStream;

/// What the decoder stage reports when it ends.
#[derive(Debug, Default, Clone)]
pub struct DecodeReport {
    /// Stereo sample frames handed to the sinks.
    pub samples: usize,
    /// Seconds from the start of generation to the last sample handed to the sinks.
    pub seconds: f64,
    /// A sink's reader went away (e.g. `| head -c`): the run ended early, cleanly.
    pub output_closed: Option<String>,
}

pub struct DecodeStage {
    pub scalar: ScalarStream,
    pub sinks: Vec<Box<dyn Sink>>,
    /// Latents decoded per step: the granularity at which audio reaches the sinks.
    pub chunk_latents: usize,
}

impl DecodeStage {
    pub fn run(
        mut self,
        mut latents: RingReceiver<Tensor>,
        control: &RunControl,
        metrics: &Metrics,
        events: &crossbeam_channel::Sender<Event>,
    ) -> Result<DecodeReport> {
        let mut report = DecodeReport::default();
        let decoded = self.decode_all(&mut latents, &mut report, metrics);
        report.seconds = metrics.start.elapsed().as_secs_f64();
        // Every way out finishes every sink: a stopped run still leaves a valid WAV.
        let finished = self.finish_sinks();
        match decoded {
            Err(e) if is_closed(&e) => {
                report.output_closed = Some(e.to_string());
                let _ = events.send(Event::OutputClosed);
                control.abort();
                finished.map(|()| report)
            }
            // Aborted by the user: what was decoded is in the sinks, which is the result.
            Err(e) if e.downcast_ref::<Aborted>().is_some() => finished.map(|()| report),
            other => other.and(finished).map(|()| report),
        }
    }

    fn decode_all(
        &mut self,
        latents: &mut RingReceiver<Tensor>,
        report: &mut DecodeReport,
        metrics: &Metrics,
    ) -> Result<()> {
        while let Some(window) = latents.recv()? {
            let n = window.dim(0)?;
            let mut start = 0;
            while start < n {
                let len = self.chunk_latents.min(n - start);
                let started = Instant::now();
                let chunk = window.narrow(0, start, len)?;
                let pcm = metrics.codec_work(|| to_host(self.scalar.push(&chunk)?))?;
                self.deliver(&pcm, started, report, metrics)?;
                start += len;
            }
        }
        let started = Instant::now();
        let pcm = metrics.codec_work(|| to_host(self.scalar.finish()?))?;
        self.deliver(&pcm, started, report, metrics)
    }

    /// Hands interleaved PCM to the sinks.
    fn deliver(
        &mut self,
        interleaved: &[f32],
        started: Instant,
        report: &mut DecodeReport,
        metrics: &Metrics,
    ) -> Result<()> {
        let frames = interleaved.len() / 2;
        if frames == 0 {
            return Ok(());
        }
        metrics.decode.record(frames, started.elapsed());
        metrics.first_audio();
        for sink in &mut self.sinks {
            sink.write(interleaved)?;
        }
        report.samples += frames;
        Ok(())
    }

    fn finish_sinks(&mut self) -> Result<()> {
        let mut first_error = None;
        for sink in &mut self.sinks {
            if let Err(e) = sink.finish() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `(2, m)` PCM on any device → interleaved f32 on the host (waits for the decoder's GPU work).
fn to_host(pcm: Tensor) -> Result<Vec<f32>> {
    Ok(pcm.to_dtype(DType::F32)?.t()?.flatten_all()?.to_vec1()?)
}
