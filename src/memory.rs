//! What a run needs of a GPU's memory, estimated from the configs before anything loads, so
//! that a card too small is refused at once with the need, what is free and what to change —
//! not after a minute of loading, with an allocation error.

use anyhow::{bail, Result};
use candle_core::{DType, Device};

use crate::codec::{codec_spec, is_fp8_matrix, CodecConfig, CodecPrecision};
use crate::lm::projection::is_matrix;
use crate::lm::spec::{lm_spec, TEXT_EMBEDDINGS};
use crate::lm::{KvPrecision, LmConfig, MatrixPrecision};
use crate::weights::{Fp8Matrix, ModelSpec, TensorSpec};

/// Working memory beyond weights and caches, measured on an H200 (BENCHMARKS.md: 12.7 GiB
/// peak for 10.4 GiB of weights and a 20 s cache): the CUDA context, cuBLAS workspaces, the
/// flow windows' activations and graphs, the decoder's convolution buffers.
const WORKING_BYTES: u64 = 2_400 << 20;

/// Bytes, by what holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    /// How the LM's matrices are stored in this estimate.
    pub lm_matrices: MatrixPrecision,
    /// How the flow-matching DiT's large matrices are stored in this estimate.
    pub flow_matrices: MatrixPrecision,
    /// How the backbone's KV cache is stored in this estimate.
    pub kv: KvPrecision,
    pub lm_weights: u64,
    pub kv_cache: u64,
    pub codec_weights: u64,
    pub working: u64,
}

/// A song's KV cache: `rows` (2 with CFG) of `positions`, stored as `precision`.
#[derive(Debug, Clone, Copy)]
pub struct KvSize {
    pub rows: usize,
    pub positions: usize,
    pub precision: KvPrecision,
}

impl MemoryEstimate {
    /// The estimate for `lm` in `lm_dtype`, its matrices stored as `matrices`, with the KV
    /// cache `kv`, and `codec` in `precision`.
    pub fn of(
        lm: &LmConfig,
        lm_dtype: DType,
        matrices: MatrixPrecision,
        kv: KvSize,
        codec: &CodecConfig,
        precision: CodecPrecision,
    ) -> Self {
        let flavor = &lm.backbone;
        let kv_values = 2
            * flavor.num_layers
            * kv.rows
            * flavor.num_kv_heads
            * flavor.head_dim()
            * kv.positions;
        let codec_spec = codec_spec(codec);
        Self {
            lm_matrices: matrices,
            flow_matrices: precision.flow_matrices,
            kv: kv.precision,
            lm_weights: lm_bytes(&lm_spec(lm), lm_dtype, matrices),
            kv_cache: kv.precision.bytes(kv_values, lm_dtype),
            codec_weights: stored_bytes(
                &codec_spec,
                |n| n.starts_with("flow_matching."),
                precision.flow,
                precision.flow_matrices,
                is_fp8_matrix,
            ) + bytes(&codec_spec, "scalar_model.decoder", precision.scalar),
            working: WORKING_BYTES,
        }
    }

    pub fn total(&self) -> u64 {
        self.lm_weights + self.kv_cache + self.codec_weights + self.working
    }

    /// Refuses a run whose estimate exceeds the free memory of `device` (a GPU; the CPU's
    /// memory is not checked). `codec_elsewhere`: the codec is on another device.
    pub fn check(&self, device: &Device, codec_elsewhere: bool) -> Result<()> {
        let Some(free) = free_gpu_memory(device) else {
            return Ok(());
        };
        let need = if codec_elsewhere {
            self.total() - self.codec_weights
        } else {
            self.total()
        };
        if need > free {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let fp8 = match (self.lm_matrices, self.flow_matrices) {
                (MatrixPrecision::Dense, _) => {
                    "store the matrices in fp8 (--lm-precision fp8; the flow-matching model's \
                     and the KV cache follow unless --flow-precision or --kv-precision bf16), "
                }
                (MatrixPrecision::Fp8, MatrixPrecision::Dense) if !codec_elsewhere => {
                    "store the flow-matching model's matrices in fp8 (--flow-precision fp8), "
                }
                _ => "",
            };
            bail!(
                "this run needs about {:.1} GiB of GPU memory (LM weights {:.1}, KV cache {:.1}, \
                 codec {:.1}{}, working memory {:.1}) but {:.1} GiB is free: {fp8}ask for a \
                 shorter --max-seconds (the KV cache grows with the song), put the codec on \
                 another GPU (--codec-device cuda:1), or free the GPU",
                gib(need),
                gib(self.lm_weights),
                gib(self.kv_cache),
                gib(self.codec_weights),
                if codec_elsewhere { ", elsewhere" } else { "" },
                gib(self.working),
                gib(free),
            );
        }
        Ok(())
    }
}

/// Bytes of the LM's tensors on a GPU: the matrices as `matrices` says, the rest in `dtype`,
/// but for the text embeddings, which stay in host memory.
fn lm_bytes(spec: &ModelSpec, dtype: DType, matrices: MatrixPrecision) -> u64 {
    stored_bytes(spec, |n| n != TEXT_EMBEDDINGS, dtype, matrices, is_matrix)
}

/// Bytes of the spec's tensors that `kept` selects: those `fp8` names stored as FP8 when
/// `matrices` says so, the rest in `dtype`.
fn stored_bytes(
    spec: &ModelSpec,
    kept: impl Fn(&str) -> bool,
    dtype: DType,
    matrices: MatrixPrecision,
    fp8: fn(&str) -> bool,
) -> u64 {
    let dense = |t: &TensorSpec| (t.shape.iter().product::<usize>() * dtype.size_in_bytes()) as u64;
    spec.required
        .iter()
        .filter(|t| kept(&t.name))
        .map(|t| match matrices {
            MatrixPrecision::Fp8 if fp8(&t.name) => fp8_bytes(t),
            _ => dense(t),
        })
        .sum()
}

/// An FP8 matrix's bytes: rows are its outputs, columns its inputs (the middle dimension of
/// `audio_head`, stored as (heads, inputs, outputs); the last one elsewhere).
fn fp8_bytes(t: &TensorSpec) -> u64 {
    let values: usize = t.shape.iter().product();
    let cols = match t.shape.as_slice() {
        [_, inputs, _] => *inputs,
        shape => shape.last().copied().unwrap_or(1),
    };
    Fp8Matrix::bytes(values / cols.max(1), cols)
}

/// Bytes of the spec's tensors whose names start with `prefix`, stored as `dtype`.
fn bytes(spec: &ModelSpec, prefix: &str, dtype: DType) -> u64 {
    let values: usize = spec
        .required
        .iter()
        .filter(|t| t.name.starts_with(prefix))
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    (values * dtype.size_in_bytes()) as u64
}

fn free_gpu_memory(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, _) = d.cuda_stream().context().mem_get_info().ok()?;
        return Some(free as u64);
    }
    let _ = device;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(rows: usize, positions: usize, precision: KvPrecision) -> KvSize {
        KvSize {
            rows,
            positions,
            precision,
        }
    }

    /// A 4-minute song (3,000 frames after a 322-position prompt): bf16 keys and values take
    /// 2 bytes each; FP8 ones 1, and a byte of scale per 16.
    #[test]
    fn an_fp8_kv_cache_takes_17_bytes_for_16_values() {
        let of = |precision| {
            MemoryEstimate::of(
                &LmConfig::oss_3b(),
                DType::BF16,
                MatrixPrecision::Fp8,
                kv(2, 3322, precision),
                &CodecConfig::default(),
                CodecPrecision::with_flow(DType::BF16),
            )
            .kv_cache
        };
        let values = 28 * 2 * 2 * 8 * 128 * 3322;
        assert_eq!(of(KvPrecision::Dense), 2 * values);
        assert_eq!(of(KvPrecision::Fp8), values + values / 16);
    }

    #[test]
    fn the_released_models_in_bf16_need_about_twelve_gib() {
        let e = MemoryEstimate::of(
            &LmConfig::oss_3b(),
            DType::BF16,
            MatrixPrecision::Dense,
            kv(2, 322 + 250, KvPrecision::Dense),
            &CodecConfig::default(),
            CodecPrecision::with_flow(DType::BF16),
        );
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        // 3.94 B LM parameters, 1.49 B flow-matching and 84 M decoder parameters.
        // Less the 394 M text-embedding values, which stay on the host.
        assert!((gib(e.lm_weights) - 6.60).abs() < 0.05, "{e:?}");
        assert!((gib(e.codec_weights) - 3.08).abs() < 0.05, "{e:?}");
        // 28 layers × 2 rows × 8 kv heads × 128 × 572 positions × K and V in bf16.
        assert_eq!(e.kv_cache, 28 * 2 * 8 * 128 * 572 * 2 * 2);
        assert!(gib(e.total()) > 12.0 && gib(e.total()) < 13.5, "{e:?}");
        assert!(
            e.check(&Device::Cpu, false).is_ok(),
            "the CPU is not checked"
        );
    }

    #[test]
    fn fp8_flow_matrices_save_a_byte_a_weight_less_their_scales() {
        let c = CodecConfig::default();
        let of = |flow_matrices| {
            MemoryEstimate::of(
                &LmConfig::oss_3b(),
                DType::BF16,
                MatrixPrecision::Dense,
                kv(2, 0, KvPrecision::Dense),
                &c,
                CodecPrecision {
                    flow_matrices,
                    ..CodecPrecision::with_flow(DType::BF16)
                },
            )
            .codec_weights
        };
        // 7 matrices a block (q, k, v, o, gate, up, down) in 24 + 6 blocks, and each stack's
        // time embedding's second linear and modulation.
        let spec = codec_spec(&c);
        let matrices: Vec<_> = spec
            .required
            .iter()
            .filter(|t| is_fp8_matrix(&t.name))
            .collect();
        assert_eq!(matrices.len(), 7 * (c.num_layers + c.num_layers_2) + 2 * 2);
        // The released checkpoint's shapes: blocks 1,358,954,496 weights in 571,392 rows,
        // modulations 9,216 × 1,536 and 18,432 × 3,072, embeddings 1,536² and 3,072².
        let values: usize = matrices
            .iter()
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        let rows: usize = matrices.iter().map(|t| t.shape[0]).sum();
        assert_eq!((values, rows), (1_441_529_856, 603_648));
        let saved = of(MatrixPrecision::Dense) - of(MatrixPrecision::Fp8);
        assert_eq!(saved, (values - 4 * rows) as u64);
    }

    #[test]
    fn the_lm_weight_estimate_is_what_loading_allocates_in_either_precision() {
        let (config, _) = LmConfig::tiny();
        for matrices in [MatrixPrecision::Dense, MatrixPrecision::Fp8] {
            let model = crate::lm::HeartMuLa::synthetic(
                config.clone(),
                3,
                &Device::Cpu,
                DType::F32,
                matrices,
            )
            .unwrap();
            let e = MemoryEstimate::of(
                &config,
                DType::F32,
                matrices,
                kv(1, 16, KvPrecision::Dense),
                &CodecConfig::tiny(),
                CodecPrecision::with_flow(DType::F32),
            );
            // On the CPU the text embeddings are on the model's device too.
            let text = config.text_vocab_size * config.backbone.embed_dim * 4;
            assert_eq!(
                e.lm_weights + text as u64,
                model.weight_bytes(),
                "{matrices:?}"
            );
        }
        let dense = MemoryEstimate::of(
            &LmConfig::oss_3b(),
            DType::BF16,
            MatrixPrecision::Dense,
            kv(2, 0, KvPrecision::Dense),
            &CodecConfig::default(),
            CodecPrecision::with_flow(DType::BF16),
        );
        let fp8 = MemoryEstimate {
            lm_weights: lm_bytes(
                &lm_spec(&LmConfig::oss_3b()),
                DType::BF16,
                MatrixPrecision::Fp8,
            ),
            ..dense
        };
        // 3.34 B of the 3.94 B parameters are matrices: one byte each instead of two.
        let saved = (dense.lm_weights - fp8.lm_weights) as f64 / (1u64 << 30) as f64;
        assert!((saved - 3.1).abs() < 0.05, "{saved}");
    }
}
