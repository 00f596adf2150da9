//! Options shared by the commands.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use clap::Args;

use crate::codec::{CodeSanitizer, CodecPrecision, Rates, SolverParams};
use crate::device::{parse_device, DtypeArg};
use crate::lm::{GenerationOptions, KvPrecision, MatrixPrecision, SamplingParams};
use crate::models::{ModelChoice, SyntheticSize};

const DEFAULT_TAGS: &str = include_str!("../../assets/tags.txt");
const DEFAULT_LYRICS: &str = include_str!("../../assets/lyrics.txt");

/// What every generating command takes: the model, the prompt and the sampling.
#[derive(Args, Debug, Clone)]
pub struct SongArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// heartlib checkpoint folder: ckpt/ holding HeartMuLa-oss-3B/, HeartCodec-oss/,
    /// tokenizer.json and gen_config.json
    #[arg(long, value_name = "DIR", conflicts_with = "synthetic")]
    pub model: Option<PathBuf>,

    /// Random weights built in memory, no checkpoint needed (noise, not music). The default
    /// without --model: tiny on a CPU, 3b on a GPU
    #[arg(long, value_enum, value_name = "SIZE")]
    pub synthetic: Option<SyntheticSize>,

    /// Where the LM runs: auto, cpu, cuda or cuda:N (auto picks the first GPU when the binary
    /// was built with --features cuda and one is present)
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    pub device: String,

    /// Precision of the LM and the codec's flow matching (logits are always computed in f32)
    #[arg(long, value_enum, default_value = "auto")]
    pub dtype: DtypeArg,

    /// How the LM's matrices are stored: bf16 (the --dtype), fp8 (E4M3 with a scale per output
    /// channel: half the memory and bytes read per frame), or auto (the --dtype when the run
    /// fits the GPU's free memory, fp8 when only fp8 fits)
    #[arg(long, value_enum, default_value = "auto")]
    pub lm_precision: LmPrecisionArg,

    /// How the flow-matching blocks' matrices are stored: bf16 (the --dtype), fp8 (E4M3 with a
    /// scale per output channel: 1.3 GiB less GPU memory; each product decodes its matrix
    /// first), or auto (fp8 when the LM's matrices are fp8, else the --dtype)
    #[arg(long, value_enum, default_value = "auto")]
    pub flow_precision: LmPrecisionArg,

    /// How the backbone's KV cache is stored: bf16 (the --dtype), fp8 (E4M3 with a power-of-two
    /// scale per 16 values: 47 % less cache memory, half the bytes attention reads), or auto
    /// (fp8 when the LM's matrices are fp8, else the --dtype)
    #[arg(long, value_enum, default_value = "auto")]
    pub kv_precision: LmPrecisionArg,

    /// Precision of the ScalarModel decoder's convolutions: f32 (the reference's), tf32 (f32
    /// values, products on tensor cores: ~40 % faster, relative error ~1e-3; needs --dtype
    /// bf16), bf16, or auto (tf32 on a GPU beside a bf16 LM and flow, else f32)
    #[arg(long, value_enum, default_value = "auto")]
    pub decoder_dtype: DecoderDtypeArg,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderDtypeArg {
    Auto,
    F32,
    Tf32,
    Bf16,
}

impl DecoderDtypeArg {
    /// The dtype the decoder's values are stored in (TF32 products keep f32 values).
    fn scalar(self) -> DType {
        match self {
            DecoderDtypeArg::Bf16 => DType::BF16,
            DecoderDtypeArg::Auto | DecoderDtypeArg::F32 | DecoderDtypeArg::Tf32 => DType::F32,
        }
    }
}

/// `--lm-precision`, `--flow-precision`, `--kv-precision`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LmPrecisionArg {
    Auto,
    Bf16,
    Fp8,
}

impl ModelArgs {
    pub fn device(&self) -> Result<Device> {
        resolve_device(&self.device)
    }

    /// How the LM's matrices are stored: as asked, or for auto dense unless only FP8 `fits`.
    pub fn lm_matrices(&self, fits: impl Fn(MatrixPrecision) -> bool) -> MatrixPrecision {
        match self.lm_precision {
            LmPrecisionArg::Bf16 => MatrixPrecision::Dense,
            LmPrecisionArg::Fp8 => MatrixPrecision::Fp8,
            LmPrecisionArg::Auto if !fits(MatrixPrecision::Dense) && fits(MatrixPrecision::Fp8) => {
                eprintln!(
                    "note: the LM in {} does not fit the free GPU memory; storing its matrices \
                     in fp8 (--lm-precision auto)",
                    self.dtype_name()
                );
                MatrixPrecision::Fp8
            }
            LmPrecisionArg::Auto => MatrixPrecision::Dense,
        }
    }

    fn dtype_name(&self) -> &'static str {
        match self.dtype {
            DtypeArg::F32 => "f32",
            DtypeArg::Bf16 | DtypeArg::Auto => "bf16",
        }
    }

    pub fn lm_dtype(&self, device: &Device) -> DType {
        self.dtype.resolve(device)
    }

    /// The codec's precisions on `device`, beside an LM whose matrices are `lm_matrices`
    /// (`Dense` where there is no LM).
    pub fn codec_precision(&self, device: &Device, lm_matrices: MatrixPrecision) -> CodecPrecision {
        CodecPrecision {
            flow: self.dtype.resolve(device),
            flow_matrices: match self.flow_precision {
                LmPrecisionArg::Bf16 => MatrixPrecision::Dense,
                LmPrecisionArg::Fp8 => MatrixPrecision::Fp8,
                LmPrecisionArg::Auto => lm_matrices,
            },
            scalar: self.decoder_dtype.scalar(),
            tf32: self.decoder_tf32(device.is_cuda(), self.dtype.resolve(device)),
        }
    }

    /// How the backbone's KV cache is stored beside an LM whose matrices are `lm_matrices`.
    pub fn kv_precision(&self, lm_matrices: MatrixPrecision) -> KvPrecision {
        match self.kv_precision {
            LmPrecisionArg::Fp8 => KvPrecision::Fp8,
            LmPrecisionArg::Bf16 => KvPrecision::Dense,
            LmPrecisionArg::Auto => KvPrecision::matching(lm_matrices),
        }
    }

    /// Whether the decoder's f32 products run on TF32: when asked, or for auto on a GPU
    /// whose flow (and LM: both follow --dtype) is not f32.
    fn decoder_tf32(&self, on_gpu: bool, flow: DType) -> bool {
        match self.decoder_dtype {
            DecoderDtypeArg::Tf32 => true,
            DecoderDtypeArg::Auto => on_gpu && flow != DType::F32,
            DecoderDtypeArg::F32 | DecoderDtypeArg::Bf16 => false,
        }
    }

    /// The weights to load; synthetic weights take their seed from the sampling seed so a
    /// run is reproducible from its command line.
    pub fn choice(&self, device: &Device, seed: u64) -> ModelChoice {
        match (&self.model, self.synthetic) {
            (Some(dir), _) => ModelChoice::Checkpoint(dir.clone()),
            (None, Some(size)) => ModelChoice::Synthetic { size, seed },
            (None, None) => {
                let size = if device.is_cuda() {
                    SyntheticSize::Full3b
                } else {
                    SyntheticSize::Tiny
                };
                ModelChoice::Synthetic { size, seed }
            }
        }
    }
}

pub fn resolve_device(spec: &str) -> Result<Device> {
    if spec != "auto" {
        return parse_device(spec);
    }
    if cfg!(feature = "cuda") {
        if let Ok(d) = Device::new_cuda(0) {
            return Ok(d);
        }
    }
    Ok(Device::Cpu)
}

#[derive(Args, Debug, Clone)]
pub struct PromptArgs {
    /// Style tags, comma-separated, or @FILE to read them from a file (default: assets/tags.txt)
    #[arg(long, value_name = "TEXT|@FILE")]
    pub tags: Option<String>,

    /// Lyrics with [Verse]/[Chorus] markers, or @FILE (default: assets/lyrics.txt)
    #[arg(long, value_name = "TEXT|@FILE")]
    pub lyrics: Option<String>,
}

impl PromptArgs {
    pub fn tags(&self) -> Result<String> {
        text_or_file(self.tags.as_deref(), "--tags", DEFAULT_TAGS)
    }

    pub fn lyrics(&self) -> Result<String> {
        text_or_file(self.lyrics.as_deref(), "--lyrics", DEFAULT_LYRICS)
    }
}

fn text_or_file(value: Option<&str>, flag: &str, default: &str) -> Result<String> {
    match value {
        None => Ok(default.trim().to_string()),
        Some(v) => match v.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("{flag} @{path}: cannot read the file")),
            None => Ok(v.to_string()),
        },
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Longest song to generate, in seconds (one LM frame is 80 ms)
    #[arg(
        long,
        default_value_t = 60.0,
        value_name = "S",
        allow_negative_numbers = true
    )]
    pub max_seconds: f64,

    /// Keep generating past the end-of-song token: exactly --max-seconds of audio
    #[arg(long)]
    pub ignore_eos: bool,

    /// Random seed (default: drawn from the clock and printed, so a run can be repeated)
    #[arg(long)]
    pub seed: Option<u64>,

    /// Sampling temperature (> 0)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub temperature: f32,

    /// Sample among the k most likely tokens (≥ 1)
    #[arg(long, default_value_t = 50)]
    pub topk: usize,

    /// Classifier-free guidance scale for the LM (≥ 1; 1 disables guidance)
    #[arg(long, default_value_t = 1.5, allow_negative_numbers = true)]
    pub cfg_scale: f32,
}

impl SamplingArgs {
    /// The seed given, else one drawn from the clock and kept, so that every later call
    /// (and the printed seed) agrees.
    pub fn fix_seed(&mut self) -> u64 {
        *self.seed.get_or_insert_with(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos % 1_000_000_007) as u64
        })
    }

    /// The sampling values, checked before any model is loaded.
    pub fn params(&self, seed: u64) -> Result<SamplingParams> {
        let params = SamplingParams {
            temperature: self.temperature,
            topk: self.topk,
            cfg_scale: self.cfg_scale,
            seed,
        };
        params.validate()?;
        Ok(params)
    }

    /// What the LM is asked for (see [`ModelChoice::stops_at_eos`]).
    pub fn generation(&mut self, choice: &ModelChoice, rates: Rates) -> Result<GenerationOptions> {
        let seed = self.fix_seed();
        Ok(GenerationOptions {
            sampling: self.params(seed)?,
            max_frames: self.max_frames(rates)?,
            stop_at_eos: choice.stops_at_eos(!self.ignore_eos),
            // As the LM's matrices decide (`ModelArgs::kv_precision`), once they are known.
            kv: KvPrecision::Dense,
        })
    }

    /// Frames for --max-seconds; refuses a length that is not a positive number.
    pub fn max_frames(&self, rates: Rates) -> Result<usize> {
        let s = self.max_seconds;
        if !(s.is_finite() && s > 0.0) {
            anyhow::bail!("--max-seconds {s} is invalid: expected a positive number of seconds");
        }
        Ok(rates.frames_in(s))
    }
}

#[derive(Args, Debug, Clone)]
pub struct CodecArgs {
    /// Euler steps of the codec's flow-matching solver (the reference uses 10)
    #[arg(long, default_value_t = 10)]
    pub flow_steps: usize,

    /// Classifier-free guidance scale of the flow matching (≥ 1; 1 disables guidance)
    #[arg(long, default_value_t = 1.25, allow_negative_numbers = true)]
    pub guidance_scale: f64,
}

impl CodecArgs {
    pub fn solver(&self) -> Result<SolverParams> {
        if self.flow_steps == 0 {
            anyhow::bail!("--flow-steps 0 is invalid: expected at least 1 Euler step");
        }
        let g = self.guidance_scale;
        if !(g.is_finite() && g >= 1.0) {
            anyhow::bail!("--guidance-scale {g} is invalid: expected a finite value ≥ 1");
        }
        Ok(SolverParams {
            num_steps: self.flow_steps,
            guidance_scale: g,
        })
    }
}

/// What the commands that decode a codes file share: the file, the codec and its solver.
#[derive(Args, Debug, Clone)]
pub struct CodesInputArgs {
    /// Codes JSON written by `heartstream codes`
    #[arg(long, value_name = "FILE")]
    pub codes: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub codec: CodecArgs,
    /// Seed of the flow-matching noise
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The codec and the frames of a codes file, ready to decode.
pub struct LoadedCodes {
    pub codec: std::sync::Arc<crate::codec::HeartCodec>,
    /// Every frame, special codes held at the previous code of their codebook.
    pub frames: Vec<Vec<u32>>,
}

impl CodesInputArgs {
    /// Loads the codec, then reads the codes. As in the streaming pipeline, special ids
    /// (EOS, as `codes --ignore-eos` may write) hold the previous code of their codebook;
    /// how many did is said.
    pub fn load(&self) -> Result<LoadedCodes> {
        let device = self.model.device()?;
        let choice = self.model.choice(&device, self.seed);
        let precision = self.model.codec_precision(&device, MatrixPrecision::Dense);
        let (codec, seconds) = crate::models::load_codec(&choice, &device, precision)?;
        eprintln!(
            "loaded the codec of {} in {seconds:.1} s (seed {})",
            choice.describe(),
            self.seed
        );
        let config = &codec.config;
        let mut frames = crate::codes_file::read(&self.codes, config.num_quantizers)?;
        let mut sanitizer = CodeSanitizer::new(config.codebook_size, config.num_quantizers);
        frames.iter_mut().for_each(|f| sanitizer.clean(f));
        if sanitizer.replaced > 0 {
            eprintln!(
                "{} special codes (≥ codebook size {}) held at the previous code of their codebook",
                sanitizer.replaced, config.codebook_size
            );
        }
        Ok(LoadedCodes { codec, frames })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        model: ModelArgs,
    }

    fn matrices(flag: &[&str], fits: impl Fn(MatrixPrecision) -> bool) -> MatrixPrecision {
        let args = std::iter::once("heartstream").chain(flag.iter().copied());
        Cli::parse_from(args).model.lm_matrices(fits)
    }

    #[test]
    fn auto_stores_the_lm_in_fp8_only_when_the_dense_run_does_not_fit() {
        use MatrixPrecision::{Dense, Fp8};
        assert_eq!(matrices(&[], |_| true), Dense);
        assert_eq!(matrices(&[], |m| m == Fp8), Fp8);
        // Nothing fits: dense, whose memory check then names --lm-precision fp8 among the ways out.
        assert_eq!(matrices(&[], |_| false), Dense);
        assert_eq!(matrices(&["--lm-precision", "fp8"], |_| true), Fp8);
        assert_eq!(matrices(&["--lm-precision", "bf16"], |m| m == Fp8), Dense);
    }

    fn flow_matrices(flag: &[&str], lm: MatrixPrecision) -> MatrixPrecision {
        let args = std::iter::once("heartstream").chain(flag.iter().copied());
        let model = Cli::parse_from(args).model;
        model.codec_precision(&Device::Cpu, lm).flow_matrices
    }

    #[test]
    fn auto_stores_the_flow_blocks_as_the_lm_matrices_are_stored() {
        use MatrixPrecision::{Dense, Fp8};
        assert_eq!(flow_matrices(&[], Dense), Dense);
        assert_eq!(flow_matrices(&[], Fp8), Fp8);
        assert_eq!(flow_matrices(&["--flow-precision", "bf16"], Fp8), Dense);
        assert_eq!(flow_matrices(&["--flow-precision", "fp8"], Dense), Fp8);
    }

    fn kv(flag: &[&str], lm: MatrixPrecision) -> KvPrecision {
        let args = std::iter::once("heartstream").chain(flag.iter().copied());
        Cli::parse_from(args).model.kv_precision(lm)
    }

    #[test]
    fn auto_stores_the_kv_cache_as_the_lm_matrices_are_stored() {
        use MatrixPrecision::{Dense, Fp8};
        assert_eq!(kv(&[], Dense), KvPrecision::Dense);
        assert_eq!(kv(&[], Fp8), KvPrecision::Fp8);
        assert_eq!(kv(&["--kv-precision", "bf16"], Fp8), KvPrecision::Dense);
        assert_eq!(kv(&["--kv-precision", "fp8"], Dense), KvPrecision::Fp8);
    }

    fn decoder(flag: &[&str], on_gpu: bool, flow: DType) -> (DType, bool) {
        let args = std::iter::once("heartstream").chain(flag.iter().copied());
        let model = Cli::parse_from(args).model;
        (
            model.decoder_dtype.scalar(),
            model.decoder_tf32(on_gpu, flow),
        )
    }

    #[test]
    fn auto_decodes_with_tf32_products_only_on_a_gpu_beside_a_bf16_flow() {
        use DType::{BF16, F32};
        assert_eq!(decoder(&[], true, BF16), (F32, true));
        assert_eq!(decoder(&[], true, F32), (F32, false));
        assert_eq!(decoder(&[], false, F32), (F32, false));
        assert_eq!(
            decoder(&["--decoder-dtype", "f32"], true, BF16),
            (F32, false)
        );
        assert_eq!(
            decoder(&["--decoder-dtype", "tf32"], true, BF16),
            (F32, true)
        );
        assert_eq!(
            decoder(&["--decoder-dtype", "bf16"], true, BF16),
            (BF16, false)
        );
    }
}
