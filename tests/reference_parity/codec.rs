//! HeartCodec against the fixture's goldens: RVQ, estimator, flow matching, ScalarModel,
//! `detokenize` (short and long), `FlowStream`, and the streaming-vs-reference join.

use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use heartstream::codec::{
    detokenize, join_windows, CodeFrames, CodecPrecision, DetokenizeParams, Detokenized,
    FlowStream, FlowStreamConfig, FlowWindows, HeartCodec, Join, ReplayNoise, SolverParams,
};

use crate::fixture::{assert_close, max_abs_diff, test_device, test_dtype, Golden};

/// README tolerances.
const HIDDEN_ATOL: f32 = 1e-4;
const FLOW_ATOL: f32 = 1e-3;
const AUDIO_FROM_LATENTS_ATOL: f32 = 1e-5;
const AUDIO_END_TO_END_ATOL: f32 = 2e-4;

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(Golden::load)
}

fn codec() -> &'static HeartCodec {
    static CODEC: OnceLock<HeartCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let dir = golden().dir.join("heartcodec");
        HeartCodec::load(&dir, &test_device(), CodecPrecision::uniform(test_dtype()))
            .unwrap_or_else(|e| panic!("cannot load {}: {e:#}", dir.display()))
    })
}

/// A golden tensor as a model input: on the test device, in the test dtype.
fn input(name: &str) -> Tensor {
    golden()
        .f32(name)
        .to_device(&test_device())
        .and_then(|t| t.to_dtype(test_dtype()))
        .unwrap()
}

/// Golden int64 codes `(…, codebooks, frames)` as frames of one code per codebook.
fn code_frames(name: &str) -> CodeFrames {
    let shape = golden().shape(name);
    let (codebooks, frames) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let values = golden().i64(name);
    let frames: Vec<Vec<u32>> = (0..frames)
        .map(|t| {
            (0..codebooks)
                .map(|q| values[q * frames + t] as u32)
                .collect()
        })
        .collect();
    CodeFrames::from_frames(&frames, &codec().config).unwrap()
}

/// Drops leading unit (batch) dims: `(1, frames, channels)` → `(frames, channels)`.
fn unbatched(t: Tensor, rank: usize) -> Tensor {
    let mut t = t;
    while t.rank() > rank {
        t = t.squeeze(0).unwrap();
    }
    t
}

fn number(path: &[&str]) -> f64 {
    golden()
        .meta(path)
        .as_f64()
        .unwrap_or_else(|| panic!("golden.json {} is not a number", path.join(".")))
}

fn detok_params(call: &str) -> DetokenizeParams {
    DetokenizeParams {
        window_seconds: number(&["calls", call, "duration"]),
        solver: SolverParams {
            num_steps: number(&["calls", call, "num_steps"]) as usize,
            guidance_scale: number(&["calls", call, "guidance_scale"]),
        },
    }
}

/// The recorded `torch.randn` draws of a detokenize call, in call order. `first_latent` is not
/// stored (it is multiplied by zero): it is replayed as zeros of its recorded shape.
fn detok_noise(call: &str) -> ReplayNoise {
    let calls = golden()
        .meta(&["calls", call, "randn_calls"])
        .as_array()
        .unwrap();
    let draws = calls.iter().map(|c| {
        let stored = c["stored_as"].as_str().unwrap();
        let shape: Vec<usize> = c["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        if stored.starts_with("first_latent") {
            Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
        } else {
            golden().f32(&format!("{call}.{stored}"))
        }
    });
    ReplayNoise::new(draws.collect::<Vec<_>>())
}

fn run_detokenize(call: &str) -> Detokenized {
    let mut noise = detok_noise(call);
    let out = detokenize(
        codec(),
        &code_frames(&format!("{call}.codes")),
        &detok_params(call),
        &mut noise,
        Join::Reference,
    )
    .unwrap();
    assert_eq!(
        noise.remaining(),
        0,
        "{call}: recorded noise draws left unused"
    );
    out
}

/// `detok.long`, run once and shared by the tests that check it.
fn long() -> &'static Detokenized {
    static LONG: OnceLock<Detokenized> = OnceLock::new();
    LONG.get_or_init(|| run_detokenize("detok.long"))
}

/// The stored window latents of `detok.long`, as `detokenize` would hand them to the join.
fn long_stored_windows() -> &'static FlowWindows {
    static WINDOWS: OnceLock<FlowWindows> = OnceLock::new();
    WINDOWS.get_or_init(|| {
        let codes = golden().shape("detok.long.codes")[1];
        let latents = (0..long().windows.latents.len())
            .map(|w| unbatched(input(&format!("detok.long.window{w}.latents")), 2))
            .collect();
        FlowWindows {
            latents,
            geometry: codec()
                .config
                .window_geometry(detok_params("detok.long").window_seconds),
            audio_len: codes * codec().config.rates().samples_per_frame(),
        }
    })
}

#[test]
fn rvq_lookup_and_condition_projection() {
    let codes = code_frames("fm.vq.codes");
    let flow = &codec().flow;
    let vq = flow.vq.decode(&codes).unwrap();
    assert_close(
        "fm.vq.output",
        &vq,
        &unbatched(golden().f32("fm.vq.output"), 2),
        HIDDEN_ATOL,
    );
    let cond = flow.cond_features(&codes).unwrap();
    assert_close(
        "fm.vq.cond_feature",
        &cond,
        &unbatched(golden().f32("fm.vq.cond_feature"), 2),
        HIDDEN_ATOL,
    );
}

#[test]
fn estimator_velocity() {
    let estimator_input = input("fm.estimator.input");
    let timesteps: Vec<f32> = golden().f32("fm.estimator.timestep").to_vec1().unwrap();
    let estimator = &codec().flow.estimator;
    let time = estimator.time_conditioning(&timesteps).unwrap();
    let rope = estimator.rope(estimator_input.dim(1).unwrap()).unwrap();
    let out = estimator.forward(&estimator_input, &time, &rope).unwrap();
    assert_close(
        "fm.estimator.output",
        &out,
        &golden().f32("fm.estimator.output"),
        HIDDEN_ATOL,
    );
}

/// The velocity with the large matrices stored as FP8 (`--flow-precision fp8`) against the
/// reference's: E4M3 rounds each weight to ~2.5 % of its row's scale, so the output moves by
/// a few per cent of its size — and must not move more (a wrong scale or a swapped row would).
#[test]
fn estimator_with_fp8_matrices_stays_close_to_the_reference() {
    use heartstream::weights::MatrixPrecision;
    let dir = golden().dir.join("heartcodec");
    let precision = CodecPrecision {
        flow_matrices: MatrixPrecision::Fp8,
        ..CodecPrecision::uniform(test_dtype())
    };
    let codec = HeartCodec::load(&dir, &test_device(), precision).unwrap();
    let estimator = &codec.flow.estimator;
    let hidden = input("fm.estimator.input");
    let timesteps: Vec<f32> = golden().f32("fm.estimator.timestep").to_vec1().unwrap();
    let time = estimator.time_conditioning(&timesteps).unwrap();
    let rope = estimator.rope(hidden.dim(1).unwrap()).unwrap();
    let out = estimator.forward(&hidden, &time, &rope).unwrap();
    let flat = |t: &Tensor| -> Vec<f64> {
        let t = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap();
        t.to_device(&Device::Cpu).unwrap().to_vec1().unwrap()
    };
    let (got, want) = (flat(&out), flat(&golden().f32("fm.estimator.output")));
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cosine = dot(&got, &want) / (dot(&got, &got) * dot(&want, &want)).sqrt();
    let error: Vec<f64> = got.iter().zip(&want).map(|(g, w)| g - w).collect();
    let relative_rms = (dot(&error, &error) / dot(&want, &want)).sqrt();
    println!(
        "fp8 flow matrices: velocity cosine {cosine:.5}, relative RMS error {relative_rms:.4}"
    );
    assert!(cosine > 0.998, "cosine {cosine}");
    assert!(relative_rms < 0.06, "relative RMS error {relative_rms}");
    // The codes are in use: dense weights would match the reference to float rounding.
    assert!(relative_rms > 1e-3, "relative RMS error {relative_rms}");
}

/// Run twice: on buffers of its own, then with the window's Euler step prepared once and
/// reused (on CUDA, captured as a graph and replayed): both must match the reference.
#[test]
fn inference_codes_with_in_context_prefix() {
    let call = |k: &str| number(&["calls", "fm.inference", k]);
    let params = SolverParams {
        num_steps: call("num_steps") as usize,
        guidance_scale: call("guidance_scale"),
    };
    let codes = code_frames("fm.inference.codes");
    let prefix = call("incontext_length") as usize;
    for prepared in [false, true] {
        if prepared {
            let shape = (codes.len() * 2, prefix.min(codes.len() * 2));
            codec().flow.prepare_windows(&[shape], &params).unwrap();
            assert!(codec().flow.prepared_windows().contains(&shape));
        }
        let mut noise = ReplayNoise::new([golden().f32("fm.inference.noise")]);
        let out = codec()
            .flow
            .inference_codes(
                &codes,
                &unbatched(input("fm.inference.true_latents"), 2),
                call("latent_length") as usize,
                prefix,
                &params,
                &mut noise,
            )
            .unwrap();
        assert_close(
            &format!("fm.inference.output (prepared: {prepared})"),
            &out,
            &unbatched(golden().f32("fm.inference.output"), 2),
            FLOW_ATOL,
        );
    }
}

/// `sq.decode.input` (stereo batch, latent channels, frames) in the detokenize layout
/// (frames, 2 · channels).
fn scalar_latents() -> Tensor {
    let batched = input("sq.decode.input");
    let (stereo, channels, frames) = batched.dims3().unwrap();
    batched
        .permute((2, 0, 1))
        .unwrap()
        .reshape((frames, stereo * channels))
        .unwrap()
}

#[test]
fn scalar_model_decode() {
    let audio = codec().scalar.decode(&scalar_latents()).unwrap();
    let expected = golden().f32("sq.decode.output").squeeze(1).unwrap();
    assert_close(
        "sq.decode.output",
        &audio,
        &expected,
        AUDIO_FROM_LATENTS_ATOL,
    );
}

/// The decoder with its step prepared (on CUDA: captured as a graph over a stream state
/// and replayed for every step of that size), fed in steps of that size, meets the same
/// tolerance; a second stream on the same state, reset, decodes the same audio exactly.
#[test]
fn scalar_model_decode_through_a_prepared_step() {
    // A codec of its own: its pool of prepared states is not shared with other tests.
    let dir = golden().dir.join("heartcodec");
    let codec =
        HeartCodec::load(&dir, &test_device(), CodecPrecision::uniform(test_dtype())).unwrap();
    let latents = scalar_latents();
    let frames = latents.dim(0).unwrap();
    let step = (frames / 4).max(codec.config.look_ahead_latents());
    let captured = codec.scalar.prepare_steps(step).unwrap();
    let graphs_off = std::env::var("HEARTSTREAM_DECODER_GRAPH").is_ok_and(|v| v == "0");
    assert_eq!(captured, test_device().is_cuda() && !graphs_off);
    let decode = || {
        let mut stream = codec.scalar.stream().unwrap();
        assert_eq!(stream.step_latents(), captured.then_some(step));
        let mut parts = Vec::new();
        for start in (0..frames).step_by(step) {
            let n = step.min(frames - start);
            parts.push(stream.push(&latents.narrow(0, start, n).unwrap()).unwrap());
        }
        parts.push(stream.finish().unwrap());
        Tensor::cat(&parts, 1).unwrap()
    };
    let first = decode();
    let expected = golden().f32("sq.decode.output").squeeze(1).unwrap();
    assert_close(
        &format!("sq.decode.output in steps of {step} (captured: {captured})"),
        &first,
        &expected,
        AUDIO_FROM_LATENTS_ATOL,
    );
    let second = decode();
    assert_eq!(max_abs_diff(&first, &second), 0.0, "a reused stream state");
}

#[test]
fn detokenize_short_input_repeats_codes_to_one_window() {
    let out = run_detokenize("detok.short");
    assert_eq!(
        out.windows.latents.len(),
        golden()
            .meta(&["calls", "detok.short", "windows"])
            .as_u64()
            .unwrap() as usize
    );
    assert_close(
        "detok.short.output",
        &out.audio,
        &golden().f32("detok.short.output"),
        AUDIO_END_TO_END_ATOL,
    );
}

#[test]
fn detokenize_long_window_latents() {
    let windows = &long().windows.latents;
    assert_eq!(
        windows.len(),
        golden()
            .meta(&["calls", "detok.long", "windows"])
            .as_u64()
            .unwrap() as usize
    );
    for (w, latents) in windows.iter().enumerate() {
        let name = format!("detok.long.window{w}.latents");
        assert_close(
            &name,
            latents,
            &unbatched(golden().f32(&name), 2),
            FLOW_ATOL,
        );
    }
}

#[test]
fn detokenize_long_audio() {
    assert_close(
        "detok.long.output",
        &long().audio,
        &golden().f32("detok.long.output"),
        AUDIO_END_TO_END_ATOL,
    );
}

#[test]
fn reference_join_of_the_stored_latents() {
    let audio = join_windows(codec(), long_stored_windows(), Join::Reference).unwrap();
    assert_close(
        "detok.long.output (from stored latents)",
        &audio,
        &golden().f32("detok.long.output"),
        AUDIO_FROM_LATENTS_ATOL,
    );
}

#[test]
fn flow_stream_with_reference_windows_equals_detokenize_latents() {
    let config = FlowStreamConfig {
        solver: detok_params("detok.long").solver,
        ..FlowStreamConfig::reference(&codec().config)
    };
    let x0 = (0..long().windows.latents.len())
        .map(|w| golden().f32(&format!("detok.long.window{w}.x0")));
    let mut stream = FlowStream::new(
        codec(),
        config,
        Box::new(ReplayNoise::new(x0.collect::<Vec<_>>())),
    )
    .unwrap();
    let codes = code_frames("detok.long.codes");
    let mut emitted = Vec::new();
    for frame in codes.as_slice().chunks(codes.num_codebooks()) {
        stream.push(frame).unwrap();
        emitted.extend(stream.next_window(false).unwrap());
    }
    while let Some(latents) = stream.next_window(true).unwrap() {
        emitted.push(latents);
    }
    let streamed = Tensor::cat(&emitted, 0).unwrap();

    // The reference stream: window 0, then every later window after its in-context prefix,
    // cut at 2 latents per code.
    let context = config.context_latents;
    let mut expected = Vec::new();
    for w in 0..long().windows.latents.len() {
        let latents = unbatched(input(&format!("detok.long.window{w}.latents")), 2);
        let skip = if w == 0 { 0 } else { context };
        expected.push(
            latents
                .narrow(0, skip, latents.dim(0).unwrap() - skip)
                .unwrap(),
        );
    }
    let expected = Tensor::cat(&expected, 0).unwrap();
    let expected = expected.narrow(0, 0, 2 * codes.len()).unwrap();
    assert_close(
        "FlowStream latents vs detok.long windows",
        &streamed,
        &expected,
        FLOW_ATOL,
    );
}

/// FlowStream + ScalarStream on the short input (40 codes, shorter than one window) against
/// `detokenize`. The audio is the same up to the last look-ahead: the reference decodes the
/// whole padded window, so its last latents look ahead into latents of repeated codes, where
/// the stream ends with the one-shot decode's zero padding.
#[test]
fn streaming_pipeline_on_short_input_matches_detokenize_until_the_final_look_ahead() {
    let config = FlowStreamConfig {
        solver: detok_params("detok.short").solver,
        ..FlowStreamConfig::reference(&codec().config)
    };
    let noise = ReplayNoise::new([golden().f32("detok.short.window0.x0")]);
    let mut flow = FlowStream::new(codec(), config, Box::new(noise)).unwrap();
    let mut decoder = codec().scalar.stream().unwrap();
    let codes = code_frames("detok.short.codes");
    let mut audio = Vec::new();
    for frame in codes.as_slice().chunks(codes.num_codebooks()) {
        flow.push(frame).unwrap();
        assert!(
            flow.next_window(false).unwrap().is_none(),
            "a window ran before a window of codes arrived"
        );
    }
    while let Some(latents) = flow.next_window(true).unwrap() {
        audio.push(decoder.push(&latents).unwrap());
    }
    audio.push(decoder.finish().unwrap());
    let audio = Tensor::cat(&audio, 1).unwrap();
    let expected = golden().f32("detok.short.output");
    assert_eq!(audio.dims(), expected.dims());

    let per_latent = codec().config.rates().samples_per_latent;
    let settled = audio.dim(1).unwrap() - codec().config.look_ahead_latents() * per_latent;
    let head = |t: &Tensor| t.narrow(1, 0, settled).unwrap();
    assert_close(
        "streamed detok.short.output (before the final look-ahead)",
        &head(&audio),
        &head(&expected),
        AUDIO_END_TO_END_ATOL,
    );
    let tail = |t: &Tensor| t.narrow(1, settled, t.dim(1).unwrap() - settled).unwrap();
    println!(
        "streamed short input, last {} samples (zero vs repeated-code look-ahead): max abs diff {:.3e}",
        audio.dim(1).unwrap() - settled,
        max_abs_diff(&tail(&audio), &tail(&expected))
    );
}

/// Join::Streaming against Join::Reference on the same (stored) latents. They differ only
/// where the reference cross-fades: elsewhere both decode the same latents with the same
/// causal history (the decoder's receptive field, under 45 latents, is shorter than the 104-latent
/// context every window re-decodes).
#[test]
fn streaming_join_differs_from_reference_only_in_cross_fades() {
    let windows = long_stored_windows();
    let reference = join_windows(codec(), windows, Join::Reference).unwrap();
    let streaming = join_windows(codec(), windows, Join::Streaming).unwrap();
    assert_eq!(streaming.dims(), reference.dims());
    let len = reference.dim(1).unwrap();

    let g = &windows.geometry;
    let fades: Vec<(usize, usize)> = (1..windows.latents.len())
        .map(|w| {
            (
                w * g.audio_hop,
                (w * g.audio_hop + g.audio_overlap).min(len),
            )
        })
        .filter(|(start, end)| start < end)
        .collect();
    let mut outside = Vec::new();
    let mut cursor = 0;
    for &(start, end) in &fades {
        outside.push((cursor, start));
        cursor = end;
    }
    outside.push((cursor, len));
    let part = |t: &Tensor, (s, e): (usize, usize)| t.narrow(1, s, e - s).unwrap();
    for &range in outside.iter().filter(|(s, e)| s < e) {
        let d = max_abs_diff(&part(&streaming, range), &part(&reference, range));
        assert!(
            d <= AUDIO_FROM_LATENTS_ATOL,
            "outside the cross-fades {range:?}: max abs diff {d:e}"
        );
    }

    let total = max_abs_diff(&streaming, &reference);
    let snr = snr_db(&reference, &streaming);
    println!(
        "streaming vs reference join: max abs diff {total:.3e}, SNR {snr:.1} dB over {len} samples"
    );
    for &range in &fades {
        let (r, s) = (part(&reference, range), part(&streaming, range));
        println!(
            "  cross-fade {range:?}: max abs diff {:.3e}, SNR {:.1} dB",
            max_abs_diff(&s, &r),
            snr_db(&r, &s)
        );
    }
    assert!(snr.is_finite() && snr > 0.0, "SNR {snr} dB");
}

/// 10·log10(Σ reference² / Σ (other − reference)²).
fn snr_db(reference: &Tensor, other: &Tensor) -> f64 {
    let signal = reference
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    let noise = (other - reference)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap() as f64;
    10.0 * (signal / noise).log10()
}
