//! HeartMuLa LM against the reference: prompt grid, backbone, heads, decoder, greedy frames
//! and the EOS rule, for the guided (`cfg`) and unguided (`nocfg`) runs of the fixture.

use std::sync::Arc;

use candle_core::Tensor;
use heartstream::lm::{
    FrameGenerator, FrameTrace, GenConfig, GenerationOptions, HeartMuLa, Prompt, SamplingParams,
};

use crate::fixture::{assert_close, assert_exact, test_device, test_dtype, Golden};

const HIDDEN_ATOL: f32 = 1e-4;

struct Run<'g> {
    golden: &'g Golden,
    key: &'static str,
    model: Arc<HeartMuLa>,
    gen: GenConfig,
    prompt: Prompt,
    sampling: SamplingParams,
}

impl<'g> Run<'g> {
    fn new(golden: &'g Golden, key: &'static str) -> Self {
        let model = HeartMuLa::load(&golden.dir.join("heartmula"), &test_device(), test_dtype())
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
        let (mut caches, _) = self.model.new_caches(batch, self.prompt.len()).unwrap();
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
    let run = Run::new(&golden, key);
    run.check_prompt_grid();
    run.check_prompt_backbone();
    run.check_frames();
    run.check_eos_truncation();
}

#[test]
fn lm_with_guidance_matches_reference() {
    check_all("cfg");
}

#[test]
fn lm_without_guidance_matches_reference() {
    check_all("nocfg");
}
