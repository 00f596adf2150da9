//! The streaming run: three threads joined by lock-free rings.
//!
//! ```text
//!  LM thread ──codes ring──▶ flow thread ──latents ring──▶ decoder thread ──▶ sinks
//!  (a frame / 80 ms)        (FlowStream windows)          (ScalarStream)     (device, stdout, WAV)
//! ```
//!
//! Each ring is bounded: a stage that runs ahead blocks on a full ring, so memory stays
//! bounded and nothing is dropped. Stages report over a crossbeam channel; any error stops
//! the others (`RunControl::abort`) and reaches the user as one message.

mod control;
mod decode_stage;
mod flow_stage;
mod lm_stage;
mod metrics;
mod ring;
mod snapshot;
mod supervisor;
mod warm_up;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use crossbeam_channel::{Receiver, Sender};

use crate::audio::Sink;
use crate::codec::{
    Cancel, CodeSanitizer, FlowStream, FlowStreamConfig, GaussianNoise, HeartCodec, Rates,
};

pub use self::control::{Aborted, Event, RunControl, Stage};
pub use self::decode_stage::DecodeReport;
pub use self::flow_stage::WindowTiming;
pub use self::lm_stage::{LmJob, LmReport};
pub use self::metrics::{Levels, Metrics, StageMeter};
pub use self::ring::{ring, RingReceiver, RingSender};
pub use self::snapshot::{Fill, Snapshot, StageRate};
pub use self::supervisor::{supervise, Watcher};
pub use self::warm_up::{warm_up_codec, warm_up_lm, CodecWarmUp};

/// Streaming settings of a run.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    pub flow: FlowStreamConfig,
    /// Seed of the flow-matching noise.
    pub noise_seed: u64,
    /// Latents per decoder step (audio reaches the sinks in pieces of this many).
    pub decode_chunk_latents: usize,
    /// Capacity of the codes ring, in frames.
    pub codes_capacity: usize,
    /// Capacity of the latents ring, in flow windows.
    pub latents_capacity: usize,
}

/// Latents per decoder step. A captured step costs ~2.7 ms whatever its size plus ~0.07 ms a
/// latent on an H200 (`benches/codec.rs`: 3.9 ms at 25 latents, 9.9 at 100), and each latent
/// of a step holds ~22 MiB of convolution workspace: 50-latent steps cut a 3-minute song's
/// decoder stage time by a third, and the song's time by ~1 %, for 544 MiB more at its peak
/// (BENCHMARKS.md).
pub const DEFAULT_DECODE_CHUNK_LATENTS: usize = 50;

/// Latents per decoder step where memory comes first (`--lm-precision fp8`, the configuration
/// for small GPUs): 544 MiB less than the default at the peak.
pub const LEAN_DECODE_CHUNK_LATENTS: usize = 25;

/// Audio lead (seconds) under which the LM waits while the codec computes: always. Sharing
/// one GPU, the LM's back-to-back frame steps and the codec's kernels slow each other so much
/// that running them in turn costs little: on an H200 a 3-minute song took ~1 % longer (RTF
/// 0.0694 against 0.0685 in one call), with the codec's stages at their alone speed (flow
/// 0.005 and decoder 0.004 of real time, against 0.022 and 0.044) — every window ready
/// sooner, and first audio as early (BENCHMARKS.md, eleventh session).
pub const DEFAULT_YIELD_LEAD_SECONDS: f64 = f64::INFINITY;

impl PipelineConfig {
    pub fn new(flow: FlowStreamConfig, noise_seed: u64) -> Self {
        Self {
            flow,
            noise_seed,
            decode_chunk_latents: DEFAULT_DECODE_CHUNK_LATENTS,
            // Two full windows of codes (a window holds window_latents / 2 frames): the LM is
            // never held back by a window in progress.
            codes_capacity: flow.window_latents,
            latents_capacity: 4,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The song ended (EOS) or reached its length.
    Completed,
    /// Stopped by the user (Ctrl-C, `q`); the audio generated so far was delivered.
    Stopped,
    /// The output went away (closed pipe, lost device).
    OutputClosed,
}

/// Everything measured over one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub outcome: Outcome,
    pub lm: LmReport,
    /// The flow-matching windows in order (empty if that stage was aborted).
    pub windows: Vec<WindowTiming>,
    pub decode: DecodeReport,
    /// From the start of generation to the last sample handed to the sinks.
    pub wall_seconds: f64,
    /// From the start of generation to the first sample handed to the sinks.
    pub ttfa_seconds: Option<f64>,
    pub rates: Rates,
}

impl RunReport {
    /// Seconds of stereo audio handed to the sinks.
    pub fn audio_seconds(&self) -> f64 {
        self.decode.samples as f64 * self.rates.seconds_per_sample()
    }
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Stopped => "stopped",
            Outcome::OutputClosed => "output closed",
        }
    }
}

/// A run in progress.
pub struct Pipeline {
    control: Arc<RunControl>,
    metrics: Arc<Metrics>,
    events: Receiver<Event>,
    failure: Arc<Mutex<Option<(Stage, anyhow::Error)>>>,
    lm: JoinHandle<Option<LmReport>>,
    flow: JoinHandle<Option<Vec<WindowTiming>>>,
    decode: JoinHandle<Option<DecodeReport>>,
}

impl Pipeline {
    /// Starts the three threads; generation begins at once.
    pub fn start(
        job: LmJob,
        codec: Arc<HeartCodec>,
        config: PipelineConfig,
        sinks: Vec<Box<dyn Sink>>,
        control: Arc<RunControl>,
    ) -> Result<Pipeline> {
        let mut flow = FlowStream::new(
            &codec,
            config.flow,
            Box::new(GaussianNoise::new(config.noise_seed)),
        )?;
        // An aborted run stops a window between Euler steps, not after its last one.
        let watched = control.clone();
        flow.set_cancel(Cancel::when(move || watched.aborted()));
        let sanitizer = CodeSanitizer::new(
            codec.config.codebook_size,
            job.model.config.audio_num_codebooks,
        );
        let decode = decode_stage::DecodeStage {
            scalar: codec.scalar.stream()?,
            sinks,
            chunk_latents: config.decode_chunk_latents.max(1),
        };
        let metrics = Arc::new(Metrics::new(Instant::now(), codec.config.rates()));
        let (codes_tx, codes_rx, codes_level) = ring(config.codes_capacity, &control);
        let (latents_tx, latents_rx, latents_level) = ring(config.latents_capacity, &control);
        metrics.set_levels(Levels {
            codes: Some(codes_level),
            latents: Some(latents_level),
            playback: None,
        });
        let (events_tx, events) = crossbeam_channel::unbounded();
        let failure = Arc::new(Mutex::new(None));
        let spawner = Spawner {
            control: &control,
            metrics: &metrics,
            events: &events_tx,
            failure: &failure,
        };
        let lm = spawner.spawn(Stage::Lm, move |c, m, _| {
            lm_stage::run(job, sanitizer, codes_tx, c, m)
        })?;
        let flow = spawner.spawn(Stage::Flow, move |c, m, _| {
            flow_stage::run(flow, codes_rx, latents_tx, c, m)
        })?;
        let decode = spawner.spawn(Stage::Decode, move |c, m, e| {
            decode.run(latents_rx, c, m, e)
        })?;
        Ok(Pipeline {
            control,
            metrics,
            events,
            failure,
            lm,
            flow,
            decode,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn control(&self) -> &Arc<RunControl> {
        &self.control
    }

    /// Stage notifications, for whoever watches the run.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// Whether all three stages have ended.
    pub fn is_done(&self) -> bool {
        self.lm.is_finished() && self.flow.is_finished() && self.decode.is_finished()
    }

    /// Waits for the stages; the first stage error, if any, is the run's error.
    pub fn join(self) -> Result<RunReport> {
        let lm = join_stage(self.lm, Stage::Lm)?;
        let flow = join_stage(self.flow, Stage::Flow)?;
        let decode = join_stage(self.decode, Stage::Decode)?;
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((stage, error)) = failure {
            return Err(error.context(format!("the {} stage failed", stage.name())));
        }
        // Without a failure, a stage that saw the abort was stopped by the user: the LM and
        // the decoder still report what they delivered.
        let (Some(lm), Some(decode)) = (lm, decode) else {
            return Err(anyhow!("the run was aborted"));
        };
        let outcome = if decode.output_closed.is_some() {
            Outcome::OutputClosed
        } else if self.control.stop_requested() {
            Outcome::Stopped
        } else {
            Outcome::Completed
        };
        Ok(RunReport {
            outcome,
            lm,
            windows: flow.unwrap_or_default(),
            wall_seconds: decode.seconds,
            decode,
            ttfa_seconds: self.metrics.ttfa().map(|d| d.as_secs_f64()),
            rates: self.metrics.rates,
        })
    }
}

fn join_stage<T>(handle: JoinHandle<Option<T>>, stage: Stage) -> Result<Option<T>> {
    handle
        .join()
        .map_err(|_| anyhow!("the {} thread panicked", stage.name()))
}

/// Starts stage threads that report their end and turn an error into an abort.
struct Spawner<'a> {
    control: &'a Arc<RunControl>,
    metrics: &'a Arc<Metrics>,
    events: &'a Sender<Event>,
    failure: &'a Arc<Mutex<Option<(Stage, anyhow::Error)>>>,
}

impl Spawner<'_> {
    fn spawn<T, F>(&self, stage: Stage, body: F) -> Result<JoinHandle<Option<T>>>
    where
        T: Send + 'static,
        F: FnOnce(&RunControl, &Metrics, &Sender<Event>) -> Result<T> + Send + 'static,
    {
        let control = self.control.clone();
        let metrics = self.metrics.clone();
        let events = self.events.clone();
        let failure = self.failure.clone();
        std::thread::Builder::new()
            .name(format!("heartstream {}", stage.name()))
            .spawn(move || match body(&control, &metrics, &events) {
                Ok(value) => {
                    let _ = events.send(Event::Finished(stage));
                    Some(value)
                }
                Err(e) => {
                    // An abort seen by this stage is another stage's failure, or the user's.
                    if e.downcast_ref::<Aborted>().is_none() {
                        control.abort();
                        let message = format!("{e:#}");
                        failure
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert((stage, e));
                        let _ = events.send(Event::Failed(stage, message));
                    }
                    None
                }
            })
            .with_context(|| format!("cannot start the {} thread", stage.name()))
    }
}
