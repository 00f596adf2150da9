//! Stage 1: the LM, one code frame per step, into the codes ring.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::control::RunControl;
use super::metrics::Metrics;
use super::ring::RingSender;
use crate::codec::CodeSanitizer;
use crate::lm::{FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, Prompt};

/// What the LM thread needs to make its generator (made on the thread that runs it: a
/// captured CUDA graph belongs to the thread that captured it).
pub struct LmJob {
    pub model: Arc<HeartMuLa>,
    pub gen: GenConfig,
    pub prompt: Prompt,
    pub options: GenerationOptions,
    /// While less than this much audio is buffered ahead of the listener, the LM pauses
    /// whenever the codec is computing (see `yield_to_codec`); 0 when they share nothing.
    pub yield_lead_seconds: f64,
}

/// Sharing one GPU, the LM's back-to-back frame steps slow the codec's kernels several-fold,
/// and the codec decides when audio starts. While the listener's buffer is shorter than the
/// lead (by default always), the LM, already far ahead of real time, waits while the codec
/// computes.
fn yield_to_codec(lead_seconds: f64, control: &RunControl, metrics: &Metrics) {
    while control.codec_busy()
        && metrics.audio_lead_seconds() < lead_seconds
        && !control.stop_requested()
    {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// What the LM stage reports when it ends.
#[derive(Debug, Default, Clone)]
pub struct LmReport {
    /// Milliseconds of each frame (the first includes reading the prompt).
    pub frame_ms: Vec<f64>,
    /// Special codes replaced before the codec (see [`CodeSanitizer`]).
    pub replaced_codes: usize,
}

pub fn run(
    job: LmJob,
    mut sanitizer: CodeSanitizer,
    mut codes: RingSender<Vec<u32>>,
    control: &RunControl,
    metrics: &Metrics,
) -> Result<LmReport> {
    let yield_below = job.yield_lead_seconds;
    let mut generator = FrameGenerator::new(job.model, job.gen, job.prompt, job.options)?;
    let mut report = LmReport::default();
    while !control.stop_requested() {
        yield_to_codec(yield_below, control, metrics);
        let started = Instant::now();
        let Some(mut frame) = generator.next_frame()? else {
            break;
        };
        sanitizer.clean(&mut frame);
        let took = started.elapsed();
        metrics.lm.record(1, took);
        report.frame_ms.push(took.as_secs_f64() * 1e3);
        if codes.send(frame).is_err() {
            break; // aborted: the report still says what was generated
        }
    }
    report.replaced_codes = sanitizer.replaced;
    Ok(report)
}
