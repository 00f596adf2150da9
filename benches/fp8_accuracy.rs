//! How far FP8 matrices, an FP8 KV cache or both move the LM from the dense model on random
//! weights: both models (same seed) read the same prompt and then the same frames — those the
//! dense model samples — and each frame's codebook-0 logits (conditional row) are compared:
//! cosine similarity and the overlap of the top 50 tokens (the sampler's top-k). One table on
//! stdout.
//!
//! `cargo bench --bench fp8_accuracy -- [3b|tiny] [FRAMES] [matrices|kv|both]`: full size,
//! FP8 matrices by default, on the first GPU when built with `--features cuda`, else on the
//! CPU (where `tiny` is the practical size).

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use heartstream::lm::kv_cache::KvCache;
use heartstream::lm::{
    FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, KvPrecision, LmConfig,
    MatrixPrecision, Prompt, SamplingParams,
};

const SEED: u64 = 11;
const TOP_K: usize = 50;

struct Side {
    model: HeartMuLa,
    backbone: Vec<KvCache>,
}

impl Side {
    fn new(config: &LmConfig, fp8: Fp8Parts, on: &Device, positions: usize) -> Result<Self> {
        let dtype = activations(on);
        let model = HeartMuLa::synthetic(config.clone(), SEED, on, dtype, fp8.matrices)?;
        let (backbone, _) = model.new_caches(1, positions, fp8.kv)?;
        Ok(Self { model, backbone })
    }

    /// Codebook-0 logits after feeding `input` (1, positions, dim) to the backbone.
    fn logits(&mut self, input: &Tensor) -> Result<Vec<f32>> {
        let last = self.model.backbone_step(input, &mut self.backbone)?;
        Ok(self.model.codebook0_logits(&last)?.get(0)?.to_vec1()?)
    }
}

/// What the compared side stores in FP8.
#[derive(Debug, Clone, Copy)]
struct Fp8Parts {
    matrices: MatrixPrecision,
    kv: KvPrecision,
}

impl Fp8Parts {
    const NONE: Self = Self {
        matrices: MatrixPrecision::Dense,
        kv: KvPrecision::Dense,
    };

    fn parse(arg: Option<&str>) -> Result<Self> {
        let (matrices, kv) = match arg.unwrap_or("matrices") {
            "matrices" => (MatrixPrecision::Fp8, KvPrecision::Dense),
            "kv" => (MatrixPrecision::Dense, KvPrecision::Fp8),
            "both" => (MatrixPrecision::Fp8, KvPrecision::Fp8),
            other => anyhow::bail!("expected matrices, kv or both, got {other:?}"),
        };
        Ok(Self { matrices, kv })
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (config, gen) = match args.first().map(String::as_str) {
        Some("tiny") => LmConfig::tiny(),
        _ => (LmConfig::oss_3b(), GenConfig::default()),
    };
    let frames: usize = args.get(1).map_or(Ok(100), |f| f.parse())?;
    let compared = Fp8Parts::parse(args.get(2).map(String::as_str))?;
    let device = if cfg!(feature = "cuda") {
        Device::new_cuda(0).unwrap_or(Device::Cpu)
    } else {
        Device::Cpu
    };
    let dtype = activations(&device);
    let tags: Vec<u32> = b"piano, happy"
        .iter()
        .map(|&b| 100 + u32::from(b))
        .collect();
    let lyrics: Vec<u32> = b"[verse] la la la"
        .iter()
        .map(|&b| 100 + u32::from(b))
        .collect();
    let prompt = Prompt::from_ids(tags, lyrics, &gen);

    // The frames both sides read: sampled by the dense model without guidance.
    let sampler = Arc::new(HeartMuLa::synthetic(
        config.clone(),
        SEED,
        &device,
        dtype,
        MatrixPrecision::Dense,
    )?);
    let options = GenerationOptions {
        sampling: SamplingParams {
            temperature: 1.0,
            topk: TOP_K,
            cfg_scale: 1.0,
            seed: SEED,
        },
        max_frames: frames,
        stop_at_eos: false,
        kv: KvPrecision::Dense,
    };
    let mut generator = FrameGenerator::new(sampler, gen, prompt.clone(), options)?;
    let tokens: Vec<Vec<u32>> =
        std::iter::from_fn(|| generator.next_frame().transpose()).collect::<Result<_>>()?;
    drop(generator);

    let positions = prompt.len() + tokens.len();
    let mut dense = Side::new(&config, Fp8Parts::NONE, &device, positions)?;
    let mut fp8 = Side::new(&config, compared, &device, positions)?;
    let mut rows = Vec::with_capacity(tokens.len());
    // Embeddings are dense on both sides: one side embeds for both.
    let mut input = dense.model.prompt_embeddings(&prompt, 1)?;
    for frame in &tokens {
        let (want, got) = (dense.logits(&input)?, fp8.logits(&input)?);
        rows.push((cosine(&got, &want), top_overlap(&got, &want)));
        let ids = Tensor::new(frame.as_slice(), &device)?.unsqueeze(0)?;
        input = dense.model.frame_embeddings(&ids)?;
    }
    report(&config, compared, &device, dtype, &rows);
    Ok(())
}

/// bf16 on a GPU, f32 on the CPU (as the engine runs).
fn activations(device: &Device) -> DType {
    if device.is_cuda() {
        DType::BF16
    } else {
        DType::F32
    }
}

fn report(
    config: &LmConfig,
    compared: Fp8Parts,
    device: &Device,
    dtype: DType,
    rows: &[(f64, f64)],
) {
    let sorted = |f: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (cosines, overlaps) = (sorted(|r| r.0), sorted(|r| r.1));
    let median = |v: &[f64]| v[v.len() / 2];
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "FP8 ({:?} matrices, {:?} KV cache) against dense: {} backbone layers, {:?} \
         activations on {:?}, {} frames",
        compared.matrices,
        compared.kv,
        config.backbone.num_layers,
        dtype,
        device.location(),
        rows.len()
    );
    println!(
        "c0 logits cosine: min {:.5} · median {:.5}; top-{TOP_K} overlap: min {:.3} · mean {:.3}",
        cosines[0],
        median(&cosines),
        overlaps[0],
        mean(&overlaps)
    );
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// The fraction of `want`'s top-K tokens that are among `got`'s top-K.
fn top_overlap(got: &[f32], want: &[f32]) -> f64 {
    let top = |v: &[f32]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        order.truncate(TOP_K);
        order
    };
    let (g, w) = (top(got), top(want));
    w.iter().filter(|t| g.contains(t)).count() as f64 / TOP_K as f64
}
