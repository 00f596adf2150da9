//! What `play`, `generate` and `bench` share: their options, loading both models, and
//! starting the streaming pipeline.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, ValueEnum};

use super::args::{resolve_device, CodecArgs, SongArgs};
use crate::audio::{PcmFormat, PcmSink, Sink, WavSink};
use crate::codec::{
    CodecConfig, FlowStreamConfig, STREAM_CONTEXT_SECONDS, STREAM_FIRST_WINDOW_SECONDS,
    STREAM_WINDOW_SECONDS,
};
use crate::engine::{Engine, EngineConfig, RunInfo, SongRequest};
use crate::files::OutputFile;
use crate::memory::{KvSize, MemoryEstimate};
use crate::models::{codec_config, lm_config, ModelChoice};
use crate::pipeline::{Pipeline, RunControl, DEFAULT_YIELD_LEAD_SECONDS};

#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Longest flow-matching window in seconds, in-context prefix included (heartlib: 29.76)
    #[arg(
        long,
        default_value_t = STREAM_WINDOW_SECONDS,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub window: f64,
    /// In-context prefix of each window after the first, in seconds (heartlib: 4.16)
    #[arg(
        long,
        default_value_t = STREAM_CONTEXT_SECONDS,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub context: f64,
    /// The first window in seconds: shorter means earlier audio; later windows double up
    /// to --window
    #[arg(
        long,
        default_value_t = STREAM_FIRST_WINDOW_SECONDS,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub first_window: f64,
    /// Where the codec runs (default: the LM's GPU on its own CUDA stream, or the CPU)
    #[arg(long, value_name = "DEVICE")]
    pub codec_device: Option<String>,
    /// While less audio than this is buffered ahead of the listener, the LM waits while the
    /// codec computes on its GPU (0: never wait; inf, the default: always)
    #[arg(long, hide = true, default_value_t = DEFAULT_YIELD_LEAD_SECONDS, value_name = "S")]
    pub lm_yield_lead: f64,
    /// Latents per ScalarModel step (to measure the step size; default: 50, or 25 with FP8
    /// LM matrices)
    #[arg(long, hide = true, value_name = "N")]
    pub decode_chunk_latents: Option<std::num::NonZeroUsize>,
    /// Leave the codec's CUDA streams at normal priority (to measure what priority buys)
    #[arg(long, hide = true)]
    pub codec_normal_priority: bool,
}

impl StreamArgs {
    /// The windows in latent frames (rounded to whole codes) for `config`'s latent rate.
    pub fn flow_config(&self, config: &CodecConfig, codec: &CodecArgs) -> Result<FlowStreamConfig> {
        let latents = |flag: &str, seconds: f64, allow_zero: bool| -> Result<usize> {
            if !seconds.is_finite() || seconds < 0.0 || (seconds == 0.0 && !allow_zero) {
                bail!("{flag} {seconds} is invalid: expected a positive number of seconds");
            }
            Ok(config.rates().latents_in(seconds))
        };
        let flow = FlowStreamConfig {
            window_latents: latents("--window", self.window, false)?,
            context_latents: latents("--context", self.context, true)?,
            first_window_latents: latents("--first-window", self.first_window, false)?,
            solver: codec.solver()?,
            ..FlowStreamConfig::streaming(config)
        };
        flow.validate().with_context(|| {
            format!(
                "--window {} --context {} --first-window {}: expected 0 ≤ context < window and \
                 0 < first window ≤ window (in latents of {:.0} ms)",
                self.window,
                self.context,
                self.first_window,
                1e3 * config.rates().seconds_per_latent()
            )
        })?;
        Ok(flow)
    }

    /// `--codec-device`, if given (the default is the engine's: a second stream on the
    /// LM's GPU, so the codec's kernels never queue behind the LM's).
    pub fn codec_device(&self) -> Result<Option<Device>> {
        self.codec_device
            .as_deref()
            .map(|spec| resolve_device(spec).with_context(|| format!("--codec-device {spec}")))
            .transpose()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamTo {
    /// Raw interleaved PCM on standard output (logs stay on stderr)
    Stdout,
}

#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write the song to this WAV file as it is generated (48 kHz stereo, 32-bit float)
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Stream raw PCM (48 kHz, stereo, interleaved) as it is generated
    #[arg(long, value_enum, value_name = "TARGET")]
    pub stream_to: Option<StreamTo>,
    /// Sample format of --stream-to
    #[arg(long, value_enum, default_value = "s16le")]
    pub pcm: PcmFormat,
}

impl OutputArgs {
    /// Whether any file or pipe output was asked for.
    pub fn any(&self) -> bool {
        self.out.is_some() || self.stream_to.is_some()
    }

    /// Checks the outputs before anything slow runs: a bad path or a closed stdout fails in
    /// milliseconds, and nothing is created yet (a run that fails while loading leaves an
    /// existing file untouched).
    pub fn check(&self) -> Result<()> {
        if let Some(path) = &self.out {
            OutputFile::check(path, "--out")?;
        }
        if self.stream_to == Some(StreamTo::Stdout) {
            PcmSink::stdout(self.pcm)?;
        }
        Ok(())
    }

    /// The file and pipe sinks asked for, opened just before generation starts.
    pub fn sinks(&self) -> Result<Vec<Box<dyn Sink>>> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(path) = &self.out {
            sinks.push(Box::new(WavSink::create(path, "--out")?));
        }
        if self.stream_to == Some(StreamTo::Stdout) {
            sinks.push(Box::new(PcmSink::stdout(self.pcm)?));
        }
        Ok(sinks)
    }
}

/// Every option of a streaming run.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub song: SongArgs,
    #[command(flatten)]
    pub codec: CodecArgs,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Models loaded and inputs checked: ready to start generating.
pub struct Session {
    pub engine: Engine,
    pub request: SongRequest,
    pub info: RunInfo,
    /// What the run was estimated to need of the GPU before loading.
    pub memory: MemoryEstimate,
}

/// KV-cache positions set aside for the prompt in the memory estimate (tags and lyrics of a
/// long song stay under this; the cache itself is sized to the real prompt).
pub(super) const PROMPT_POSITIONS: usize = 1024;

impl RunArgs {
    /// Checks every option, then loads the models (the slow part).
    pub fn prepare(&mut self) -> Result<Session> {
        let seed = self.song.sampling.fix_seed();
        self.codec.solver()?;
        self.output.check()?;
        let device = self.song.model.device()?;
        let choice = self.song.model.choice(&device, seed);
        // Lengths and streaming flags are checked against the checkpoint's config before any
        // weights load.
        let codec = codec_config(&choice)?;
        let mut generation = self.song.sampling.generation(&choice, codec.rates())?;
        let flow = self.stream.flow_config(&codec, &self.codec)?;
        let tags = self.song.prompt.tags()?;
        let lyrics = self.song.prompt.lyrics()?;
        let mut config = EngineConfig::new(choice.clone(), device)?;
        if let Some(codec_device) = self.stream.codec_device()? {
            config.codec_device = codec_device;
        }
        config.dtype = self.song.model.lm_dtype(&config.device);
        config.codec_priority = !self.stream.codec_normal_priority;
        let lm = lm_config(&choice)?;
        // The prompt's length needs the tokenizer; a length beyond the context is refused now.
        let limit = lm.backbone.max_seq_len;
        if generation.max_frames > limit {
            bail!(
                "--max-seconds {}: {} frames are beyond the backbone's context of {limit} \
                 positions (max_seq_len of {}): ask for at most {:.2} s less the prompt",
                self.song.sampling.max_seconds,
                generation.max_frames,
                choice.describe(),
                limit as f64 * codec.rates().seconds_per_frame()
            );
        }
        let codec_elsewhere = config.codec_device.location() != config.device.location();
        let model = &self.song.model;
        let codec_precision = |matrices| model.codec_precision(&config.codec_device, matrices);
        let estimate = |matrices| {
            let kv = KvSize {
                rows: generation.sampling.batch(),
                positions: generation.max_frames + PROMPT_POSITIONS,
                precision: model.kv_precision(matrices),
            };
            MemoryEstimate::of(
                &lm,
                config.dtype,
                matrices,
                kv,
                &codec,
                codec_precision(matrices),
            )
        };
        config.lm_matrices =
            model.lm_matrices(|m| estimate(m).check(&config.device, codec_elsewhere).is_ok());
        config.codec_precision = codec_precision(config.lm_matrices);
        generation.kv = model.kv_precision(config.lm_matrices);
        let memory = estimate(config.lm_matrices);
        memory.check(&config.device, codec_elsewhere)?;
        let request = SongRequest {
            tags,
            lyrics,
            generation,
            flow,
            noise_seed: seed,
            yield_lead_seconds: self.stream.lm_yield_lead,
            decode_chunk_latents: self.stream.decode_chunk_latents.map(|n| n.get()),
        };
        let mut engine = Engine::load(config)?;
        engine.prompt(&request)?;
        engine.warm_up(&request)?;
        let info = engine.describe(&request);
        if matches!(choice, ModelChoice::Synthetic { .. }) {
            eprintln!(
                "note: synthetic random weights make noise, not music (see README: real weights); \
                 their end-of-song tokens are ignored, so the run lasts --max-seconds"
            );
        }
        Ok(Session {
            engine,
            request,
            info,
            memory,
        })
    }
}

impl Session {
    /// Starts generating into `sinks`.
    pub fn start(&self, sinks: Vec<Box<dyn Sink>>, control: Arc<RunControl>) -> Result<Pipeline> {
        self.engine.start(&self.request, sinks, control)
    }

    pub fn load_seconds(&self) -> f64 {
        self.engine.load_seconds
    }
}

/// Ctrl-C, SIGTERM and SIGHUP stop the run (the audio of the frames already generated is
/// finished and every output finalized); a second one aborts it at once. Installed once per
/// process.
pub fn stop_on_ctrl_c(control: &Arc<RunControl>) -> Result<()> {
    let control = control.clone();
    ctrlc::set_handler(move || control.interrupt())
        .context("cannot install the Ctrl-C/SIGTERM handler")
}
