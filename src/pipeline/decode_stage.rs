//! Stage 3: the ScalarModel decoder, latents → PCM, handed to every sink.

use std::time::Instant;

use anyhow::Result;
use candle_core::Tensor;

use super::control::{Aborted, Event, RunControl};
use super::metrics::Metrics;
use super::ring::RingReceiver;
use crate::audio::{interleave, is_closed, Sink};
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

/// Interleaved samples per write to the sinks: 4096 stereo frames, 85 ms of audio.
const DELIVERY_SAMPLES: usize = 8192;

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
        let decoded = self.decode_all(&mut latents, &mut report, control, metrics);
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
        control: &RunControl,
        metrics: &Metrics,
    ) -> Result<()> {
        while let Some(window) = latents.recv()? {
            let n = window.dim(0)?;
            let mut start = 0;
            while start < n {
                control.check()?;
                let len = self.chunk_latents.min(n - start);
                let started = Instant::now();
                let chunk = window.narrow(0, start, len)?;
                let pcm = control.codec_work(|| interleave(&self.scalar.push(&chunk)?))?;
                metrics.decode.record(pcm.len() / 2, started.elapsed());
                self.deliver(&pcm, report, control, metrics)?;
                start += len;
            }
        }
        let started = Instant::now();
        let pcm = control.codec_work(|| interleave(&self.scalar.finish()?))?;
        metrics.decode.record(pcm.len() / 2, started.elapsed());
        self.deliver(&pcm, report, control, metrics)
    }

    /// Hands interleaved PCM to the sinks in short pieces, so that an abort is honoured
    /// even while a slow reader (a real-time pipe) holds a sink's writes back.
    fn deliver(
        &mut self,
        interleaved: &[f32],
        report: &mut DecodeReport,
        control: &RunControl,
        metrics: &Metrics,
    ) -> Result<()> {
        for piece in interleaved.chunks(DELIVERY_SAMPLES) {
            control.check()?;
            metrics.first_audio();
            for sink in &mut self.sinks {
                sink.write(piece)?;
            }
            report.samples += piece.len() / 2;
        }
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
