//! The engine as a library: load both models once, then make songs — each streamed into
//! sinks, or pulled as PCM chunks by the caller. The command line is one user of this API;
//! a server is another.

use std::sync::Arc;

use anyhow::{anyhow, Result};
use candle_core::{DType, Device, DeviceLocation};
use crossbeam_channel::{Receiver, Sender};

use crate::audio::{OutputClosed, Sink};
use crate::codec::{CodecConfig, CodecPrecision, FlowStreamConfig, HeartCodec, Placement};
use crate::device::{gpu_memory_used, GpuMemory};
use crate::lm::{GenerationOptions, KvPrecision, MatrixPrecision, Prompt, SamplingParams};
use crate::models::{load_codec, load_lm, LmBundle, ModelChoice};
use crate::pipeline::{
    warm_up_codec, warm_up_lm, LmJob, Pipeline, PipelineConfig, RunControl, RunReport,
    DEFAULT_DECODE_CHUNK_LATENTS, DEFAULT_YIELD_LEAD_SECONDS, LEAN_DECODE_CHUNK_LATENTS,
};
use crate::weights::ReadTimes;

/// Which weights, and where each model runs.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model: ModelChoice,
    /// The LM's device.
    pub device: Device,
    /// Flow matching's device; the ScalarModel runs there too, on a CUDA stream of its own.
    pub codec_device: Device,
    /// The LM's dtype (its logits are always f32).
    pub dtype: DType,
    /// How the LM's matrices are stored: in `dtype`, or FP8.
    pub lm_matrices: MatrixPrecision,
    pub codec_precision: CodecPrecision,
    /// Run the codec's CUDA streams at the GPU's highest priority, so its kernels take free
    /// multiprocessors before the LM's.
    pub codec_priority: bool,
}

impl EngineConfig {
    /// `model` on `device`: bf16 on a GPU (the decoder in f32 with TF32 products) and f32 on
    /// the CPU, the codec on a second CUDA stream of the same GPU (its kernels never queue
    /// behind the LM's).
    pub fn new(model: ModelChoice, device: Device) -> Result<Self> {
        let on_gpu = device.is_cuda();
        let dtype = if on_gpu { DType::BF16 } else { DType::F32 };
        Ok(Self {
            model,
            codec_device: own_stream(&device)?,
            device,
            dtype,
            lm_matrices: MatrixPrecision::Dense,
            // On a GPU the f32 decoder's products run on TF32 tensor cores (nothing else is
            // f32 there); `CodecPrecision::tf32`.
            codec_precision: CodecPrecision {
                tf32: on_gpu,
                ..CodecPrecision::with_flow(dtype)
            },
            codec_priority: true,
        })
    }
}

/// The same GPU on a CUDA stream of its own, or the device itself on the CPU.
pub fn own_stream(device: &Device) -> Result<Device> {
    match device.location() {
        DeviceLocation::Cuda { gpu_id } => Ok(Device::new_cuda_with_stream(gpu_id)?),
        _ => Ok(device.clone()),
    }
}

/// Both models, loaded.
pub struct Engine {
    lm: LmBundle,
    codec: Arc<HeartCodec>,
    config: EngineConfig,
    /// Seconds spent loading (weights, and warm-up on a GPU).
    pub load_seconds: f64,
    /// Where the loading time went.
    pub load: LoadReport,
}

/// Where start-up time goes, in milliseconds, and what the LM's weights occupy.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoadReport {
    /// Bytes of the LM's weights on its device, and how its matrices are stored.
    pub lm_weight_bytes: u64,
    pub lm_matrices: MatrixPrecision,
    /// How much the GPU's memory in use grew while each model loaded (none on the CPU).
    pub lm_gpu_bytes: Option<u64>,
    pub codec_gpu_bytes: Option<u64>,
    /// The LM's weights (read or generated, converted, uploaded), its kernels included.
    pub lm_weights_ms: f64,
    pub codec_weights_ms: f64,
    /// Where reading each model's checkpoint went (read, finite check, copy to the device);
    /// none for synthetic weights.
    pub lm_read: Option<ReadTimes>,
    pub codec_read: Option<ReadTimes>,
    /// Getting the LM's own kernels (NVRTC, or the disk cache), part of `lm_weights_ms`.
    pub lm_kernels_ms: Option<f64>,
    pub lm_kernels_from_disk_cache: Option<bool>,
    /// A few throw-away frames: kernel loading, cuBLAS handles, the frame step's capture.
    pub lm_warm_up_ms: f64,
    /// Preparing (capturing) the Euler step of every window shape and the decoder's step,
    /// and one small window.
    pub codec_warm_up_ms: f64,
    pub window_shapes_prepared: usize,
    /// Whether the decoder's step (of `decode_chunk_latents`) replays a captured graph.
    pub decoder_step_captured: bool,
    /// The priority the codec's streams run at (lower is more urgent), on a GPU.
    pub codec_stream_priority: Option<i32>,
    /// The LM's GPU memory after each step of start-up (none on the CPU); with the codec on
    /// the same GPU, the codec's too.
    pub gpu_memory: Vec<MemoryStage>,
}

/// The GPU's memory after one step of start-up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemoryStage {
    pub after: &'static str,
    #[serde(flatten)]
    pub memory: GpuMemory,
}

impl LoadReport {
    /// Notes `device`'s memory after `step`.
    fn note_memory(&mut self, device: &Device, after: &'static str) {
        if let Some(memory) = GpuMemory::now(device) {
            self.gpu_memory.push(MemoryStage { after, memory });
        }
    }

    /// Notes `device`'s memory after `step`, then again once the pool's free blocks (the
    /// step's temporaries) are handed back to the GPU.
    fn release_after(
        &mut self,
        device: &Device,
        step: &'static str,
        released: &'static str,
    ) -> Result<()> {
        self.note_memory(device, step);
        #[cfg(feature = "cuda")]
        crate::gpu::release_free_memory(device)?;
        self.note_memory(device, released);
        Ok(())
    }
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

/// One song to make.
#[derive(Debug, Clone)]
pub struct SongRequest {
    pub tags: String,
    pub lyrics: String,
    pub generation: GenerationOptions,
    pub flow: FlowStreamConfig,
    /// Seed of the flow-matching noise (the LM's is `generation.sampling.seed`).
    pub noise_seed: u64,
    /// While less audio than this is buffered ahead of the listener, the LM waits while the
    /// codec computes (when both run on one device; see [`Engine::yield_lead_seconds`]).
    pub yield_lead_seconds: f64,
    /// Latents per ScalarModel step (the size of the pieces audio arrives in); `None`: the
    /// engine's choice for its LM precision ([`Engine::decode_chunk_latents`]).
    pub decode_chunk_latents: Option<usize>,
}

impl SongRequest {
    /// A song of at most `max_frames` frames with heartlib's sampling and the default
    /// streaming windows, seeded by `seed`, with a dense KV cache ([`Engine::request`] makes
    /// the same request with the cache that goes with the engine's LM).
    pub fn new(
        tags: &str,
        lyrics: &str,
        max_frames: usize,
        seed: u64,
        codec: &CodecConfig,
    ) -> Self {
        Self {
            tags: tags.to_string(),
            lyrics: lyrics.to_string(),
            generation: GenerationOptions {
                sampling: SamplingParams {
                    seed,
                    ..SamplingParams::default()
                },
                max_frames,
                stop_at_eos: true,
                kv: KvPrecision::Dense,
            },
            flow: FlowStreamConfig::streaming(codec),
            noise_seed: seed,
            yield_lead_seconds: DEFAULT_YIELD_LEAD_SECONDS,
            decode_chunk_latents: None,
        }
    }
}

impl Engine {
    /// Loads both models (and, on a GPU, pays the one-time kernel and graph costs).
    pub fn load(config: EngineConfig) -> Result<Self> {
        // Refused before anything loads.
        anyhow::ensure!(
            !(config.codec_precision.tf32 && config.dtype == DType::F32),
            "TF32 decoder products (--decoder-dtype tf32) round every f32 product of the \
             process, the LM's in f32 too (--dtype f32): use --dtype bf16 or --decoder-dtype f32"
        );
        let started = std::time::Instant::now();
        let growth = |device: &Device, before: Option<u64>| {
            Some(gpu_memory_used(device)?.saturating_sub(before?))
        };
        let mut start = LoadReport::default();
        start.note_memory(&config.device, "context");
        // Memory saved, not correctness: a driver that refuses leaves its default.
        #[cfg(feature = "cuda")]
        for device in [&config.device, &config.codec_device] {
            if let Err(e) = crate::gpu::size_stacks_on_demand(device) {
                tracing::warn!("the GPU keeps its default call-stack reserve: {e}");
            }
        }
        start.note_memory(&config.device, "stacks on demand");
        let before_lm = gpu_memory_used(&config.device);
        let read_before_lm = ReadTimes::of_this_thread();
        let lm = load_lm(
            &config.model,
            &config.device,
            config.dtype,
            config.lm_matrices,
        )?;
        let lm_gpu_bytes = growth(&config.device, before_lm);
        let scalar_device = own_stream(&config.codec_device)?;
        let mut load = LoadReport {
            lm_weight_bytes: lm.model.weight_bytes(),
            lm_matrices: lm.model.precision(),
            lm_gpu_bytes,
            lm_weights_ms: lm.load_seconds * 1e3,
            lm_read: read_since(read_before_lm),
            ..start
        };
        load.release_after(&config.device, "lm", "lm, released")?;
        #[cfg(feature = "cuda")]
        {
            if config.codec_priority {
                load.codec_stream_priority = crate::gpu::raise_priority(&config.codec_device)?;
                crate::gpu::raise_priority(&scalar_device)?;
            }
            if let Some(build) = crate::lm::cuda::Kernels::build() {
                load.lm_kernels_ms = Some(build.ms);
                load.lm_kernels_from_disk_cache = Some(build.from_disk_cache);
            }
        }
        let placement = Placement {
            flow: config.codec_device.clone(),
            scalar: scalar_device,
        };
        let before_codec = gpu_memory_used(&config.codec_device);
        let read_before_codec = ReadTimes::of_this_thread();
        let (codec, codec_seconds) = load_codec(&config.model, placement, config.codec_precision)?;
        load.codec_read = read_since(read_before_codec);
        load.codec_gpu_bytes = growth(&config.codec_device, before_codec);
        load.codec_weights_ms = codec_seconds * 1e3;
        load.release_after(&config.device, "codec", "codec, released")?;
        Ok(Self {
            lm,
            codec,
            config,
            load_seconds: started.elapsed().as_secs_f64(),
            load,
        })
    }

    /// Runs a few frames and a small window with `request`'s settings, so that kernel
    /// loading, handle creation and graph capture happen now rather than in a song.
    pub fn warm_up(&mut self, request: &SongRequest) -> Result<()> {
        if !(self.config.device.is_cuda() || self.config.codec_device.is_cuda()) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let prompt = self.prompt(request)?;
        warm_up_lm(&self.lm.model, self.lm.gen, &prompt, request.generation)?;
        let lm_done = std::time::Instant::now();
        let chunk = self.decode_chunk_latents(request);
        let codec = warm_up_codec(&self.codec, &request.flow, chunk)?;
        self.load.window_shapes_prepared = codec.window_shapes;
        self.load.decoder_step_captured = codec.decoder_step_captured;
        self.load.lm_warm_up_ms = (lm_done - started).as_secs_f64() * 1e3;
        self.load.codec_warm_up_ms = lm_done.elapsed().as_secs_f64() * 1e3;
        let device = self.config.device.clone();
        self.load
            .release_after(&device, "warm-up", "warm-up, released")?;
        self.load_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// What the UI and the reports say about `request` on this engine.
    pub fn describe(&self, request: &SongRequest) -> RunInfo {
        let config = &self.config;
        let sampling = request.generation.sampling;
        let flow = request.flow;
        RunInfo {
            model: config.model.describe(),
            device: crate::device::describe(&config.device),
            codec_device: crate::device::describe(&config.codec_device),
            dtype: match (config.lm_matrices, request.generation.kv) {
                (MatrixPrecision::Dense, KvPrecision::Dense) => config.dtype.as_str().into(),
                (MatrixPrecision::Fp8, KvPrecision::Dense) => {
                    format!("{} (fp8 matrices)", config.dtype.as_str())
                }
                (MatrixPrecision::Dense, KvPrecision::Fp8) => {
                    format!("{} (fp8 KV cache)", config.dtype.as_str())
                }
                (MatrixPrecision::Fp8, KvPrecision::Fp8) => {
                    format!("{} (fp8 matrices and KV cache)", config.dtype.as_str())
                }
            },
            sampling: format!(
                "temperature {} · top-k {} · cfg {} · seed {}",
                sampling.temperature, sampling.topk, sampling.cfg_scale, sampling.seed
            ),
            codec: format!(
                "{} flow steps · guidance {} · first window {:.2} s",
                flow.solver.num_steps,
                flow.solver.guidance_scale,
                flow.first_window_latents as f64 * self.codec.config.rates().seconds_per_latent()
            ),
            seed: sampling.seed,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn codec_config(&self) -> &CodecConfig {
        &self.codec.config
    }

    /// [`SongRequest::new`] for this engine: its codec's windows, and the KV cache that goes
    /// with its LM's matrices (FP8 with FP8 matrices).
    pub fn request(&self, tags: &str, lyrics: &str, max_frames: usize, seed: u64) -> SongRequest {
        let mut request = SongRequest::new(tags, lyrics, max_frames, seed, self.codec_config());
        request.generation.kv = KvPrecision::matching(self.config.lm_matrices);
        request
    }

    /// Latents per decoder step for `request`: its own, or the choice for this engine's LM
    /// precision (FP8 is the configuration for small GPUs, where the larger step's workspace
    /// would spend the budget).
    pub fn decode_chunk_latents(&self, request: &SongRequest) -> usize {
        request
            .decode_chunk_latents
            .unwrap_or(match self.config.lm_matrices {
                MatrixPrecision::Dense => DEFAULT_DECODE_CHUNK_LATENTS,
                MatrixPrecision::Fp8 => LEAN_DECODE_CHUNK_LATENTS,
            })
    }

    /// How far ahead of the listener the LM waits for the codec in `request`: its own lead
    /// where the codec shares the LM's device, else 0 (on another GPU, or on the CPU beside a
    /// GPU's LM, the codec's work slows nothing of the LM's, and waiting would only delay it).
    pub fn yield_lead_seconds(&self, request: &SongRequest) -> f64 {
        // A location is a processor, whatever the streams of the devices on it.
        if self.config.device.location() == self.config.codec_device.location() {
            request.yield_lead_seconds
        } else {
            0.0
        }
    }

    /// The prompt of `request`, checked against the model (vocabulary, context length).
    pub fn prompt(&self, request: &SongRequest) -> Result<Prompt> {
        let prompt = Prompt::from_text(
            &request.tags,
            &request.lyrics,
            &self.lm.tokenizer,
            &self.lm.gen,
        )?;
        request.generation.check_fits(
            &prompt,
            &self.lm.model.config,
            Some(self.codec.config.rates().seconds_per_frame()),
        )?;
        request.flow.validate()?;
        Ok(prompt)
    }

    /// Starts `request` streaming into `sinks`; `control` stops it.
    pub fn start(
        &self,
        request: &SongRequest,
        sinks: Vec<Box<dyn Sink>>,
        control: Arc<RunControl>,
    ) -> Result<Pipeline> {
        let options = GenerationOptions {
            stop_at_eos: self
                .config
                .model
                .stops_at_eos(request.generation.stop_at_eos),
            ..request.generation
        };
        let job = LmJob {
            model: self.lm.model.clone(),
            gen: self.lm.gen,
            prompt: self.prompt(request)?,
            options,
            yield_lead_seconds: self.yield_lead_seconds(request),
        };
        let config = PipelineConfig {
            decode_chunk_latents: self.decode_chunk_latents(request),
            ..PipelineConfig::new(request.flow, request.noise_seed)
        };
        Pipeline::start(job, self.codec.clone(), config, sinks, control)
    }

    /// Starts `request` with its audio delivered to the caller, chunk by chunk.
    pub fn song(&self, request: &SongRequest) -> Result<Song> {
        let (sender, chunks) = crossbeam_channel::bounded(CHUNKS_IN_FLIGHT);
        let control = RunControl::new();
        let pipeline = self.start(request, vec![Box::new(ChunkSink { sender })], control)?;
        Ok(Song { pipeline, chunks })
    }
}

/// Chunks buffered between the decoder and a caller that reads slowly: the decoder waits
/// beyond that, which holds generation back to the reader's pace.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A song being made; its audio arrives as interleaved stereo f32 chunks at 48 kHz.
pub struct Song {
    pipeline: Pipeline,
    chunks: Receiver<Vec<f32>>,
}

impl Song {
    /// The next chunk, waiting for it; `None` once the song has ended (or was stopped).
    pub fn next_chunk(&self) -> Option<Vec<f32>> {
        self.chunks.recv().ok()
    }

    /// Stops generating; the audio of the frames already made still arrives.
    pub fn stop(&self) {
        self.pipeline.control().stop();
    }

    /// Ends the song (whatever was not read is dropped) and reports on it.
    pub fn finish(self) -> Result<RunReport> {
        let Song { pipeline, chunks } = self;
        // A reader that went away ends the run cleanly instead of blocking the decoder.
        drop(chunks);
        pipeline.join()
    }
}

/// The decoder's end of a [`Song`]'s chunk channel.
struct ChunkSink {
    sender: Sender<Vec<f32>>,
}

impl Sink for ChunkSink {
    fn write(&mut self, interleaved: &[f32]) -> Result<()> {
        self.sender
            .send(interleaved.to_vec())
            .map_err(|_| anyhow!(OutputClosed("the song's reader".into())))
    }

    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What this thread read from checkpoints since `before`, if anything.
fn read_since(before: ReadTimes) -> Option<ReadTimes> {
    let read = ReadTimes::of_this_thread().since(before);
    (read.bytes > 0).then_some(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::SyntheticSize;

    fn tiny() -> ModelChoice {
        ModelChoice::Synthetic {
            size: SyntheticSize::Tiny,
            seed: 3,
        }
    }

    /// A request that leaves the decoder's step to the engine gets the step of the engine's
    /// LM precision (the lean one with FP8 matrices); a step the request sets wins. The
    /// engine's own requests take the KV cache of its precision.
    #[test]
    fn the_decoder_step_and_cache_follow_the_engines_precision_unless_the_request_sets_them() {
        let cases = [
            (
                MatrixPrecision::Dense,
                DEFAULT_DECODE_CHUNK_LATENTS,
                KvPrecision::Dense,
            ),
            (
                MatrixPrecision::Fp8,
                LEAN_DECODE_CHUNK_LATENTS,
                KvPrecision::Fp8,
            ),
        ];
        for (lm_matrices, step, kv) in cases {
            let config = EngineConfig {
                lm_matrices,
                ..EngineConfig::new(tiny(), Device::Cpu).unwrap()
            };
            let engine = Engine::load(config).unwrap();
            let mut request = engine.request("piano", "[verse] la", 7, 1);
            assert_eq!(request.generation.kv, kv, "{lm_matrices:?}");
            assert_eq!(
                engine.decode_chunk_latents(&request),
                step,
                "{lm_matrices:?}"
            );
            request.decode_chunk_latents = Some(7);
            assert_eq!(engine.decode_chunk_latents(&request), 7, "{lm_matrices:?}");
        }
    }

    /// With the codec on the LM's device the LM waits for it as far ahead as the request
    /// says (by default always).
    #[test]
    fn the_lm_yields_to_a_codec_on_its_own_device_as_the_request_says() {
        let engine = Engine::load(EngineConfig::new(tiny(), Device::Cpu).unwrap()).unwrap();
        let mut request = engine.request("piano", "[verse] la", 7, 1);
        assert_eq!(engine.yield_lead_seconds(&request), f64::INFINITY);
        request.yield_lead_seconds = 2.5;
        assert_eq!(engine.yield_lead_seconds(&request), 2.5);
    }
}
