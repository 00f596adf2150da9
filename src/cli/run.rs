//! What `play`, `generate` and `bench` share: their options, loading both models, and
//! starting the streaming pipeline.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{Device, DeviceLocation};
use clap::{Args, ValueEnum};

use super::args::{resolve_device, CodecArgs, SongArgs};
use crate::audio::{PcmFormat, PcmSink, Sink, WavSink};
use crate::codec::{CodecConfig, FlowStreamConfig, HeartCodec, LATENTS_PER_CODE};
use crate::files::OutputFile;
use crate::lm::{GenerationOptions, Prompt};
use crate::models::{codec_config, load_codec, load_lm, LmBundle, ModelChoice};
use crate::pipeline::{
    warm_up_codec, warm_up_lm, LmJob, Pipeline, PipelineConfig, RunControl,
    DEFAULT_YIELD_LEAD_SECONDS,
};

#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    /// Longest flow-matching window in seconds, in-context prefix included (heartlib: 29.76)
    #[arg(
        long,
        default_value_t = 29.76,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub window: f64,
    /// In-context prefix of each window after the first, in seconds (heartlib: 4.16)
    #[arg(
        long,
        default_value_t = 4.16,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub context: f64,
    /// The first window in seconds: shorter means earlier audio; later windows double up
    /// to --window
    #[arg(
        long,
        default_value_t = 0.64,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub first_window: f64,
    /// Where the codec runs (default: the LM's GPU on its own CUDA stream, or the CPU)
    #[arg(long, value_name = "DEVICE")]
    pub codec_device: Option<String>,
    /// While less audio than this is buffered ahead of the listener, the LM waits for a
    /// running flow-matching window (0: never wait; inf: always)
    #[arg(long, hide = true, default_value_t = DEFAULT_YIELD_LEAD_SECONDS, value_name = "S")]
    pub lm_yield_lead: f64,
}

impl StreamArgs {
    /// The windows in latent frames (rounded to whole codes) for `config`'s latent rate.
    pub fn flow_config(&self, config: &CodecConfig, codec: &CodecArgs) -> Result<FlowStreamConfig> {
        let latents = |flag: &str, seconds: f64, allow_zero: bool| -> Result<usize> {
            if !seconds.is_finite() || seconds < 0.0 || (seconds == 0.0 && !allow_zero) {
                bail!("{flag} {seconds} is invalid: expected a positive number of seconds");
            }
            let codes = (seconds * config.latent_rate_hz() / LATENTS_PER_CODE as f64).round();
            Ok(codes as usize * LATENTS_PER_CODE)
        };
        let flow = FlowStreamConfig {
            window_latents: latents("--window", self.window, false)?,
            context_latents: latents("--context", self.context, true)?,
            first_window_latents: latents("--first-window", self.first_window, false)?,
            solver: codec.solver()?,
            // Streaming never re-solves a whole window for the last few latents.
            pad_last_window: false,
        };
        flow.validate().with_context(|| {
            format!(
                "--window {} --context {} --first-window {}: expected 0 ≤ context < window and \
                 0 < first window ≤ window (in latents of {:.0} ms)",
                self.window,
                self.context,
                self.first_window,
                1e3 / config.latent_rate_hz()
            )
        })?;
        Ok(flow)
    }

    /// The codec's device: `--codec-device`, else a second stream on the LM's GPU (so the
    /// codec's kernels never queue behind the LM's), else the LM's device.
    pub fn codec_device(&self, lm_device: &Device) -> Result<Device> {
        if let Some(spec) = &self.codec_device {
            return resolve_device(spec).with_context(|| format!("--codec-device {spec}"));
        }
        own_stream(lm_device)
    }
}

/// The same GPU on a CUDA stream of its own (work on it never queues behind other stages'),
/// or the device itself on the CPU.
fn own_stream(device: &Device) -> Result<Device> {
    match device.location() {
        DeviceLocation::Cuda { gpu_id } => Ok(Device::new_cuda_with_stream(gpu_id)?),
        _ => Ok(device.clone()),
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
    pub lm: LmBundle,
    pub codec: Arc<HeartCodec>,
    pub job_options: GenerationOptions,
    pub prompt: Prompt,
    pub pipeline: PipelineConfig,
    pub info: RunInfo,
    pub load_seconds: f64,
    pub yield_lead_seconds: f64,
}

/// What the UI and the report say about a run's setup.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub model: String,
    pub device: String,
    pub codec_device: String,
    pub dtype: String,
    pub sampling: String,
    pub codec: String,
    pub seed: u64,
}

impl RunArgs {
    /// Checks every option, then loads the models (the slow part).
    pub fn prepare(&mut self) -> Result<Session> {
        let seed = self.song.sampling.fix_seed();
        self.codec.solver()?;
        self.output.check()?;
        let device = self.song.model.device()?;
        let codec_device = self.stream.codec_device(&device)?;
        let choice = self.song.model.choice(&device, seed);
        let options = self.song.sampling.generation(&choice)?;
        let sampling = options.sampling;
        // The streaming flags are checked against the checkpoint's config before any weights load.
        let flow = self
            .stream
            .flow_config(&codec_config(&choice)?, &self.codec)?;
        let tags = self.song.prompt.tags()?;
        let lyrics = self.song.prompt.lyrics()?;
        let dtype = self.song.model.lm_dtype(&device);
        let lm = load_lm(&choice, &device, dtype)?;
        let prompt = Prompt::from_text(&tags, &lyrics, &lm.tokenizer, &lm.gen)?;
        options.check_fits(&prompt, &lm.model.config)?;
        let scalar_device = own_stream(&codec_device)?;
        let (codec, codec_seconds) = load_codec(
            &choice,
            &codec_device,
            &scalar_device,
            self.song.model.codec_precision(&codec_device),
        )?;
        let info = RunInfo {
            model: choice.describe(),
            device: crate::device::describe(&device),
            codec_device: crate::device::describe(&codec_device),
            dtype: dtype.as_str().into(),
            sampling: format!(
                "temperature {} · top-k {} · cfg {} · seed {seed}",
                sampling.temperature, sampling.topk, sampling.cfg_scale
            ),
            codec: format!(
                "{} flow steps · guidance {} · first window {:.2} s",
                flow.solver.num_steps,
                flow.solver.guidance_scale,
                flow.first_window_latents as f64 / codec.config.latent_rate_hz()
            ),
            seed,
        };
        let mut load_seconds = lm.load_seconds + codec_seconds;
        if device.is_cuda() || codec_device.is_cuda() {
            let started = std::time::Instant::now();
            warm_up_lm(&lm.model, lm.gen, &prompt, options)?;
            warm_up_codec(&codec, &flow)?;
            load_seconds += started.elapsed().as_secs_f64();
        }
        if matches!(choice, ModelChoice::Synthetic { .. }) {
            eprintln!(
                "note: synthetic random weights make noise, not music (see README: real weights); \
                 their end-of-song tokens are ignored, so the run lasts --max-seconds"
            );
        }
        Ok(Session {
            job_options: options,
            prompt,
            pipeline: PipelineConfig::new(flow, seed),
            codec,
            lm,
            info,
            load_seconds,
            yield_lead_seconds: self.stream.lm_yield_lead,
        })
    }
}

impl Session {
    /// Starts generating into `sinks`.
    pub fn start(&self, sinks: Vec<Box<dyn Sink>>, control: Arc<RunControl>) -> Result<Pipeline> {
        let job = LmJob {
            model: self.lm.model.clone(),
            gen: self.lm.gen,
            prompt: self.prompt.clone(),
            options: self.job_options,
            yield_lead_seconds: self.yield_lead_seconds,
        };
        Pipeline::start(job, self.codec.clone(), self.pipeline, sinks, control)
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
