//! `heartstream bench`: one streaming run, measured, printed as one JSON line on stdout.

use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;

use super::run::{stop_on_ctrl_c, RunArgs, StreamTo};
use crate::audio::{ListenerSink, Sink};
use crate::device::{peak_rss, GpuMemory};
use crate::engine::LoadReport;
use crate::memory::MemoryEstimate;
use crate::pipeline::{supervise, Event, RunControl, RunReport, Snapshot, Watcher, WindowTiming};
use crate::stats::FrameTimes;
use crate::tui::Display;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Serialize)]
struct Rtf {
    /// Wall clock from the start of generation to the last sample, per second of audio.
    overall: f64,
    /// Each stage's compute time per second of audio it produced.
    lm: Option<f64>,
    flow: Option<f64>,
    decode: Option<f64>,
}

/// The time to first audio, part by part (milliseconds from the start of generation).
#[derive(Debug, Serialize)]
struct TtfaBudget {
    /// The LM's first frame: reading the prompt.
    prompt: f64,
    /// The rest of the frames the first flow-matching window needs.
    first_window_frames: f64,
    /// Solving the first window (all Euler steps).
    first_flow_window: f64,
    /// From that window's latents to the first PCM in the sinks: the first decoder chunk.
    first_decode: f64,
}

impl TtfaBudget {
    fn of(report: &RunReport) -> Option<Self> {
        let ttfa = report.ttfa_seconds? * 1e3;
        let window = report.windows.first()?;
        let prompt = *report.lm.frame_ms.first()?;
        Some(Self {
            prompt,
            first_window_frames: (window.start_ms - prompt).max(0.0),
            first_flow_window: window.ms,
            first_decode: ttfa - window.start_ms - window.ms,
        })
    }
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    seed: u64,
    device: String,
    codec_device: String,
    dtype: String,
    flow_steps: usize,
    first_window_s: f64,
    outcome: &'static str,
    load_ms: f64,
    /// Where `load_ms` went.
    load: LoadReport,
    /// What the run was estimated to need of the GPU (bytes), checked before loading.
    memory_estimate: MemoryEstimate,
    /// Where `ttfa_ms` went.
    ttfa_budget_ms: Option<TtfaBudget>,
    /// From the start of generation (after loading) to the first PCM handed to the sinks.
    ttfa_ms: Option<f64>,
    rtf: Rtf,
    /// Frames after the first (the first also reads the prompt: `prompt_frame_ms`).
    lm_ms_per_frame: Option<FrameTimes>,
    prompt_frame_ms: Option<f64>,
    frames: usize,
    audio_seconds: f64,
    /// Of a listener starting at the first sample and playing in real time.
    underruns: u64,
    replaced_codes: usize,
    peak_rss_mib: Option<f64>,
    /// Device-wide memory in use on the GPU, sampled every 50 ms.
    peak_gpu_mib: Option<f64>,
    /// The GPU's memory at that peak, with what CUDA's pools held then.
    peak_gpu: Option<GpuMemory>,
    /// Every flow-matching window: size, new latents, start and duration.
    flow_windows: Vec<WindowTiming>,
}

/// Progress lines, and device-wide GPU memory sampled at every tick (every 50 ms).
struct GpuSampler {
    device: candle_core::Device,
    peak: Option<GpuMemory>,
    lines: Box<dyn Watcher>,
}

impl Watcher for GpuSampler {
    fn watch(
        &mut self,
        snapshot: &Snapshot,
        events: &crossbeam_channel::Receiver<Event>,
        tick: std::time::Duration,
    ) -> Result<bool> {
        if let Some(now) = GpuMemory::now(&self.device) {
            if self.peak.is_none_or(|p| now.used_mib > p.used_mib) {
                self.peak = Some(now);
            }
        }
        self.lines.watch(snapshot, events, tick)
    }
}

pub fn run(mut args: BenchArgs) -> Result<()> {
    if args.run.output.stream_to == Some(StreamTo::Stdout) {
        bail!("bench prints its JSON report on stdout: use --out FILE.wav instead of --stream-to stdout");
    }
    let session = args.run.prepare()?;
    let lm_device = session.engine.config().device.clone();
    let control = RunControl::new();
    stop_on_ctrl_c(&control)?;
    let mut sinks = args.run.output.sinks()?;
    let (listener, arrivals) = ListenerSink::new();
    sinks.push(Box::new(listener) as Box<dyn Sink>);
    let pipeline = session.start(sinks, control)?;
    let mut watcher = GpuSampler {
        device: lm_device.clone(),
        peak: GpuMemory::now(&lm_device),
        lines: Display::Lines.watcher(&session.info)?,
    };
    supervise(&pipeline, None, &mut watcher)?;
    let snapshot = Snapshot::read(pipeline.metrics(), pipeline.control(), None);
    let report = pipeline.join()?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let out = BenchReport {
        model: session.info.model.clone(),
        seed: session.info.seed,
        device: session.info.device.clone(),
        codec_device: session.info.codec_device.clone(),
        dtype: session.info.dtype.clone(),
        flow_steps: session.request.flow.solver.num_steps,
        first_window_s: session.request.flow.first_window_latents as f64
            * session.engine.codec_config().rates().seconds_per_latent(),
        outcome: report.outcome.name(),
        load_ms: session.load_seconds() * 1e3,
        load: session.engine.load.clone(),
        memory_estimate: session.memory,
        ttfa_budget_ms: TtfaBudget::of(&report),
        ttfa_ms: report.ttfa_seconds.map(|s| s * 1e3),
        rtf: Rtf {
            overall: report.wall_seconds / report.audio_seconds().max(1e-9),
            lm: snapshot.lm.rtf,
            flow: snapshot.flow.rtf,
            decode: snapshot.decode.rtf,
        },
        lm_ms_per_frame: FrameTimes::steady_state(&report.lm.frame_ms),
        prompt_frame_ms: report.lm.frame_ms.first().copied(),
        frames: report.lm.frame_ms.len(),
        audio_seconds: report.audio_seconds(),
        underruns: arrivals.underruns(),
        replaced_codes: report.lm.replaced_codes,
        peak_rss_mib: peak_rss().map(mib),
        peak_gpu_mib: watcher.peak.map(|p| p.used_mib),
        peak_gpu: watcher.peak,
        flow_windows: report.windows.clone(),
    };
    super::write_stdout(&(serde_json::to_string(&out)? + "\n"), "the bench report")
}
