//! HeartMuLa LM against the reference: prompt grid, backbone, heads, decoder, greedy frames
//! and the EOS rule, for the guided (`cfg`) and unguided (`nocfg`) runs of the fixture.

use std::sync::Arc;

use candle_core::Tensor;
use heartstream::lm::{
    FrameGenerator, FrameTrace, GenConfig, GenerationOptions, HeartMuLa, KvPrecision,
    MatrixPrecision, Prompt, SamplingParams,
};

use crate::fixture::{assert_close, assert_exact, test_device, test_dtype, Golden};

const HIDDEN_ATOL: f32 = 1e-4;

/// With FP8 matrices (E4M3: 3 mantissa bits, a scale per row) each weight carries a relative
/// rounding error of RMS ≈ 2⁻⁴/√3·0.72 ≈ 0.026, and so, its errors being independent, does each
/// product's output; an FP8 KV cache gives each cached key and value the same. Frame 0's
/// logits — from the prompt alone, before sampled tokens can diverge — may differ from the f32
/// goldens by at most this much per quantised step on their path (a product, or a layer's
/// cached keys or values), compounded as independent errors (√steps), in RMS relative to the
/// goldens'. The bound follows the fixture's depth, so deeper fixtures are held to the same
/// standard.
const FP8_RELATIVE_RMS_PER_PRODUCT: f32 = 0.05;

struct Run<'g> {
    golden: &'g Golden,
    key: &'static str,
    model: Arc<HeartMuLa>,
    gen: GenConfig,
    prompt: Prompt,
    sampling: SamplingParams,
    matrices: MatrixPrecision,
    kv: KvPrecision,
}

impl<'g> Run<'g> {
    fn new(
        golden: &'g Golden,
        key: &'static str,
        matrices: MatrixPrecision,
        kv: KvPrecision,
    ) -> Self {
        let dir = golden.dir.join("heartmula");
        let model = HeartMuLa::load(&dir, &test_device(), test_dtype(), matrices)
            .expect("the fixture's heartmula folder loads");
        let gen = GenConfig::from_file(&golden.dir.join("gen_config.json")).unwrap();
        let ids = |k: &str| -> Vec<u32> {
            golden
                .meta(&["prompt", k])
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt = Prompt::from_ids(ids("tags_encode_ids"), ids("lyrics_encode_ids"), &gen);
        let g = |k: &str| golden.meta(&["generation", key, k]).as_f64().unwrap();
        let sampling = SamplingParams {
            temperature: g("temperature") as f32,
            topk: g("topk") as usize,
            cfg_scale: g("cfg_scale") as f32,
            seed: 0,
        };
        Run {
            golden,
            key,
            model: Arc::new(model),
            gen,
            prompt,
            sampling,
            matrices,
            kv,
        }
    }

    fn name(&self, tensor: &str) -> String {
        format!("lm.{}.{tensor}", self.key)
    }

    fn frames(&self) -> usize {
        self.golden
            .meta(&["generation", self.key, "frames"])
            .as_u64()
            .unwrap() as usize
    }

    fn options(&self, stop_at_eos: bool) -> GenerationOptions {
        GenerationOptions {
            sampling: self.sampling,
            max_frames: self.frames(),
            stop_at_eos,
            kv: self.kv,
        }
    }

    /// The fastest generator for the device (a captured CUDA graph on a GPU).
    fn generator(&self, stop_at_eos: bool) -> FrameGenerator {
        let options = self.options(stop_at_eos);
        FrameGenerator::new(self.model.clone(), self.gen, self.prompt.clone(), options).unwrap()
    }

    /// Every frame with its trace, generating past EOS as the goldens do.
    fn traced_frames(&self) -> Vec<(Vec<u32>, FrameTrace)> {
        let options = self.options(false);
        let mut g =
            FrameGenerator::new_traced(self.model.clone(), self.gen, self.prompt.clone(), options)
                .unwrap();
        std::iter::from_fn(|| g.next_frame_traced().unwrap()).collect()
    }

    fn flat(frames: &[Vec<u32>]) -> Vec<i64> {
        frames.iter().flatten().map(|&t| t as i64).collect()
    }

    fn check_prompt_grid(&self) {
        let batch = self.sampling.batch();
        let len = self.prompt.len();
        let width = self.model.config.grid_width();
        let tokens = self.golden.i64(&self.name("prompt_tokens"));
        let mask = self.golden.bool(&self.name("prompt_tokens_mask"));
        assert_eq!(tokens.len(), batch * len * width, "prompt grid size");
        for b in 0..batch {
            for row in 0..len {
                for col in 0..width {
                    let i = (b * len + row) * width + col;
                    let text_col = col == width - 1;
                    let want = if text_col {
                        self.prompt.text[row] as i64
                    } else {
                        0
                    };
                    assert_eq!(tokens[i], want, "token at batch {b} row {row} column {col}");
                    assert_eq!(
                        mask[i], text_col,
                        "mask at batch {b} row {row} column {col}"
                    );
                }
            }
        }
        let pos = self.golden.i64(&self.name("prompt_pos"));
        assert_eq!(
            pos,
            (0..batch).flat_map(|_| 0..len as i64).collect::<Vec<_>>()
        );
        let muq = self.golden.i64(&self.name("muq_idx"));
        assert!(
            muq.iter().all(|&m| m as usize == self.prompt.muq_row),
            "muq slot {muq:?}"
        );
    }

    fn check_prompt_backbone(&self) {
        let batch = self.sampling.batch();
        let input = self.model.prompt_embeddings(&self.prompt, batch).unwrap();
        assert_close(
            &self.name("prompt_backbone_input"),
            &input,
            &self.golden.f32(&self.name("prompt_backbone_input")),
            HIDDEN_ATOL,
        );
        let (mut caches, _) = self
            .model
            .new_caches(batch, self.prompt.len(), self.kv)
            .unwrap();
        let output = self.model.backbone_forward(&input, &mut caches).unwrap();
        assert_close(
            &self.name("prompt_backbone_output"),
            &output,
            &self.golden.f32(&self.name("prompt_backbone_output")),
            HIDDEN_ATOL,
        );
    }

    fn check_frames(&self) {
        let traced = self.traced_frames();
        assert_eq!(traced.len(), self.frames());
        let stack = |f: &dyn Fn(&FrameTrace) -> Tensor| {
            Tensor::stack(&traced.iter().map(|(_, t)| f(t)).collect::<Vec<_>>(), 0).unwrap()
        };
        for (tensor, actual) in [
            ("backbone_last_hidden", stack(&|t| t.last_hidden.clone())),
            ("c0_logits", stack(&|t| t.c0_logits.clone())),
        ] {
            assert_close(
                &self.name(tensor),
                &actual,
                &self.golden.f32(&self.name(tensor)),
                HIDDEN_ATOL,
            );
        }
        let frame0 = &traced[0].1;
        for (tensor, actual) in [
            (
                "frame0_decoder_last_hidden",
                Tensor::stack(&frame0.decoder_hidden, 0).unwrap(),
            ),
            (
                "frame0_decoder_logits",
                Tensor::stack(&frame0.decoder_logits, 0).unwrap(),
            ),
        ] {
            assert_close(
                &self.name(tensor),
                &actual,
                &self.golden.f32(&self.name(tensor)),
                HIDDEN_ATOL,
            );
        }
        let step1 = traced[1].1.backbone_input.clone();
        assert_close(
            &self.name("step1_backbone_input"),
            &step1,
            &self.golden.f32(&self.name("step1_backbone_input")),
            HIDDEN_ATOL,
        );

        let want = self.golden.i64(&self.name("frames"));
        let traced_frames: Vec<Vec<u32>> = traced.into_iter().map(|(f, _)| f).collect();
        assert_exact(
            &self.name("frames (traced)"),
            &Self::flat(&traced_frames),
            &want,
        );

        // The fast path (graph-captured on a GPU) must produce the same frames.
        let mut g = self.generator(false);
        let fast: Vec<Vec<u32>> = std::iter::from_fn(|| g.next_frame().unwrap()).collect();
        assert_exact(&self.name("frames"), &Self::flat(&fast), &want);
    }

    /// What this run stores in FP8, for messages.
    fn fp8_parts(&self) -> &'static str {
        match (self.matrices, self.kv) {
            (MatrixPrecision::Fp8, KvPrecision::Fp8) => "fp8 matrices and KV cache",
            (MatrixPrecision::Fp8, KvPrecision::Dense) => "fp8 matrices",
            (MatrixPrecision::Dense, KvPrecision::Fp8) => "fp8 KV cache",
            (MatrixPrecision::Dense, KvPrecision::Dense) => "dense",
        }
    }

    /// FP8 matrices or KV cache against the f32 goldens: the prompt is untouched (embeddings stay dense),
    /// frame 0's logits are close, its greedy tokens agree wherever the goldens' margin exceeds
    /// the logits' error, and the EOS rule cuts the song where its own tokens say.
    fn check_fp8(&self) {
        self.check_prompt_grid();
        let batch = self.sampling.batch();
        let input = self.model.prompt_embeddings(&self.prompt, batch).unwrap();
        assert_close(
            &self.name(&format!("prompt_backbone_input ({})", self.fp8_parts())),
            &input,
            &self.golden.f32(&self.name("prompt_backbone_input")),
            HIDDEN_ATOL,
        );
        let traced = self.traced_frames();
        let frame0 = &traced[0];
        let want_frames = self.golden.i64(&self.name("frames"));
        let codebooks = frame0.0.len();
        let golden_c0 = self.golden.f32(&self.name("c0_logits")).get(0).unwrap();
        let golden_decoder = self.golden.f32(&self.name("frame0_decoder_logits"));
        let mut logits = vec![(frame0.1.c0_logits.clone(), golden_c0)];
        for (c, got) in frame0.1.decoder_logits.iter().enumerate() {
            // Decoder logits depend on the earlier tokens of the frame: compared while those agree.
            if frame0.0[..=c]
                .iter()
                .zip(&want_frames)
                .any(|(&a, &b)| a as i64 != b)
            {
                break;
            }
            logits.push((got.clone(), golden_decoder.get(c).unwrap()));
        }
        // Quantised steps on the way to each codebook's logits. FP8 matrices: four products a
        // layer (q/k/v, output, gate/up, down) and the head; the decoder's also go through the
        // backbone and the projection. An FP8 KV cache: each backbone layer's keys and values
        // (the decoder's cache stays dense).
        let config = &self.model.config;
        let fp8_matrices = usize::from(self.matrices == MatrixPrecision::Fp8);
        let fp8_kv = usize::from(self.kv == KvPrecision::Fp8);
        let backbone = fp8_matrices * (4 * config.backbone.num_layers + 1)
            + fp8_kv * 2 * config.backbone.num_layers;
        let decoder = backbone + fp8_matrices * (1 + 4 * config.decoder.num_layers);
        for (codebook, (got, want)) in logits.iter().enumerate() {
            let name = self.name(&format!(
                "frame 0 codebook {codebook} logits ({})",
                self.fp8_parts()
            ));
            let products = if codebook == 0 { backbone } else { decoder };
            let bound = FP8_RELATIVE_RMS_PER_PRODUCT * (products as f32).sqrt();
            let (cosine, relative_rms) = (cosine(got, want), relative_rms(got, want));
            println!(
                "{name}: cosine {cosine:.6}, relative RMS error {relative_rms:.4} (bound {bound:.3})"
            );
            assert!(
                relative_rms <= bound,
                "{name}: relative RMS {relative_rms} > {bound}"
            );
            // An error of relative RMS r leaves a cosine of about 1 − r²/2.
            let min_cosine = 1.0 - bound * bound / 2.0;
            assert!(
                cosine >= min_cosine,
                "{name}: cosine {cosine} < {min_cosine}"
            );
            let (got, want) = (self.guided(got), self.guided(want));
            let error = got
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let (best, margin) = top_margin(&want);
            if margin > 2.0 * error {
                assert_eq!(
                    top_margin(&got).0,
                    best,
                    "{name}: the golden token leads by {margin}, more than twice the error {error}"
                );
                assert_eq!(
                    frame0.0[codebook] as i64, want_frames[codebook],
                    "{name}: token"
                );
            }
        }
        println!(
            "{}: frame 0 agrees with the goldens' greedy tokens in its first {} of {codebooks} \
             codebooks (later frames follow their own tokens)",
            self.name(&format!("frames ({})", self.fp8_parts())),
            frame0
                .0
                .iter()
                .zip(&want_frames)
                .take_while(|(&a, &b)| a as i64 == b)
                .count()
        );
        // The EOS rule reads the generated tokens: the song stops before the first later frame
        // holding one at or above audio_eos_id, whatever the weights' precision. Both runs take
        // the same (fastest) path: in bf16 the fused GPU step and the traced host step round
        // differently, so their sampled tokens may part.
        let mut g = self.generator(false);
        let all: Vec<Vec<u32>> = std::iter::from_fn(|| g.next_frame().unwrap()).collect();
        let mut g = self.generator(true);
        let stopped: Vec<_> = std::iter::from_fn(|| g.next_frame().unwrap()).collect();
        let eos = self.gen.audio_eos_id;
        let cut = all
            .iter()
            .skip(1)
            .position(|f| f.iter().any(|&t| t >= eos))
            .map_or(all.len(), |i| i + 1);
        assert_eq!(
            stopped,
            all[..cut],
            "{}",
            self.name(&format!("EOS rule ({})", self.fp8_parts()))
        );
    }

    /// Row 0 of (batch, vocab) logits, guided by row 1 when there is one (heartlib's
    /// `uncond + (cond − uncond)·cfg_scale`).
    fn guided(&self, logits: &Tensor) -> Vec<f32> {
        let rows = logits.to_vec2::<f32>().unwrap();
        match rows.as_slice() {
            [cond, uncond] => cond
                .iter()
                .zip(uncond)
                .map(|(&c, &u)| u + (c - u) * self.sampling.cfg_scale)
                .collect(),
            _ => rows[0].clone(),
        }
    }

    fn check_eos_truncation(&self) {
        let mut g = self.generator(true);
        let frames: Vec<_> = std::iter::from_fn(|| g.next_frame().unwrap()).collect();
        let expected = self
            .golden
            .meta(&["generation", self.key, "pipeline_forward_frames"])
            .as_u64()
            .unwrap();
        assert_exact(
            &self.name("frames kept by the EOS rule"),
            &[frames.len() as i64],
            &[expected as i64],
        );
    }
}

fn check_all(key: &'static str) {
    let golden = Golden::load();
    let run = Run::new(&golden, key, MatrixPrecision::Dense, KvPrecision::Dense);
    run.check_prompt_grid();
    run.check_prompt_backbone();
    run.check_frames();
    run.check_eos_truncation();
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn cosine(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (values(a), values(b));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| (x * y) as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
    (dot / (norm(&a) * norm(&b))) as f32
}

/// RMS of the difference over the RMS of `want`.
fn relative_rms(got: &Tensor, want: &Tensor) -> f32 {
    let (got, want) = (values(got), values(want));
    let diff: f64 = got
        .iter()
        .zip(&want)
        .map(|(a, b)| ((a - b) * (a - b)) as f64)
        .sum();
    let norm: f64 = want.iter().map(|b| (b * b) as f64).sum();
    (diff / norm).sqrt() as f32
}

/// The best token and how far it leads the runner-up.
fn top_margin(logits: &[f32]) -> (usize, f32) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    (order[0], logits[order[0]] - logits[order[1]])
}

#[test]
fn lm_with_fp8_matrices_stays_close_to_the_reference() {
    let golden = Golden::load();
    for key in ["cfg", "nocfg"] {
        Run::new(&golden, key, MatrixPrecision::Fp8, KvPrecision::Dense).check_fp8();
    }
}

/// The FP8 KV cache alone, and with FP8 matrices (`--lm-precision fp8` stores both). The
/// cache's format needs a head_dim that is a multiple of 16: a fixture whose backbone has
/// another must be refused with a message naming it.
#[test]
fn lm_with_an_fp8_kv_cache_stays_close_to_the_reference() {
    let golden = Golden::load();
    let probe = Run::new(&golden, "cfg", MatrixPrecision::Dense, KvPrecision::Dense);
    let hd = probe.model.config.backbone.head_dim();
    if hd % 16 != 0 {
        let e = probe
            .model
            .new_caches(1, 4, KvPrecision::Fp8)
            .err()
            .unwrap();
        assert!(e.to_string().contains(&format!("got {hd}")), "{e}");
        return;
    }
    for key in ["cfg", "nocfg"] {
        for matrices in [MatrixPrecision::Dense, MatrixPrecision::Fp8] {
            Run::new(&golden, key, matrices, KvPrecision::Fp8).check_fp8();
        }
    }
}

#[test]
fn lm_with_guidance_matches_reference() {
    check_all("cfg");
}

#[test]
fn lm_without_guidance_matches_reference() {
    check_all("nocfg");
}
