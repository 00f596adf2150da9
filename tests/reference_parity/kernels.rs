//! The codec's own fused kernels against candle's unfused ops on the same inputs: the
//! estimator's attention (RoPE, softmax with f32 statistics, the value product) for both
//! head widths of the real DiT and window lengths that are and are not multiples of the
//! kernel's 64-frame tiles, and the blocks' RMSNorm + modulation, gated residual, the two
//! in one pass, and SwiGLU at both real widths. Not fixture tests: random inputs, independent formulas.

use candle_core::{DType, Device, Tensor, D};
use heartstream::codec::{
    fused_attention, gated_add, gated_add_rms_modulate, rms_modulate, swiglu, NormAfter,
};

use crate::fixture::test_device;

/// `(frames, head_dim / 2)` tables of angle `t / 10000^(2i / d)`, computed in f64.
fn rope_tables(frames: usize, head_dim: usize, dtype: DType, dev: &Device) -> (Tensor, Tensor) {
    let angles: Vec<f64> = (0..frames)
        .flat_map(|t| {
            (0..head_dim / 2)
                .map(move |i| t as f64 / 10000f64.powf(2.0 * i as f64 / head_dim as f64))
        })
        .collect();
    let table = |f: fn(f64) -> f64| {
        let v: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
        Tensor::from_vec(v, (frames, head_dim / 2), dev)
            .and_then(|t| t.to_dtype(dtype))
            .unwrap()
    };
    (table(f64::cos), table(f64::sin))
}

/// The estimator's attention with candle's ops, in `qkv`'s dtype.
fn unfused(qkv: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Tensor {
    let (b, t, width) = qkv.dims3().unwrap();
    let d = width / (3 * heads);
    let parts = qkv
        .reshape((b, t, 3, heads, d))
        .and_then(|x| x.permute((2, 0, 3, 1, 4)))
        .and_then(|x| x.contiguous())
        .unwrap();
    let part = |i: usize| parts.get(i).unwrap().contiguous().unwrap();
    let q = candle_nn::rotary_emb::rope_i(&part(0), cos, sin).unwrap();
    let k = candle_nn::rotary_emb::rope_i(&part(1), cos, sin).unwrap();
    let scores = (q.matmul(&k.t().unwrap()).unwrap() * (1.0 / (d as f64).sqrt())).unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&scores).unwrap();
    probs
        .matmul(&part(2))
        .and_then(|x| x.transpose(1, 2))
        .and_then(|x| x.reshape((b, t, heads * d)))
        .unwrap()
}

/// RMS of `a − b` over the RMS of `b`, both taken in f32 on the host.
pub fn relative_rms(a: &Tensor, b: &Tensor) -> f32 {
    let f = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .unwrap()
    };
    let (a, b) = (f(a), f(b));
    let rms = |t: &Tensor| {
        t.sqr()
            .and_then(|s| s.mean_all())
            .and_then(|m| m.to_scalar::<f32>())
            .unwrap()
            .sqrt()
    };
    rms(&(a - &b).unwrap()) / rms(&b)
}

fn random_qkv(batch: usize, frames: usize, heads: usize, d: usize, dev: &Device) -> Tensor {
    // Spread like projected activations, so the softmax is neither flat nor one-hot.
    Tensor::randn(0f32, 1.5, (batch, frames, 3 * heads * d), dev).unwrap()
}

// Frames against the kernels' blocks of 128 (head_dim 64) and 64 (128) query rows: one
// partly filled, a full block and a tail, several.
const SHAPES: [(usize, usize); 7] = [
    (16, 64),
    (70, 64),
    (130, 64),
    (300, 64),
    (16, 128),
    (100, 128),
    (200, 128),
];

/// f32 on the CPU: the op's layout, rotation, scale and softmax are the ops' to f32 rounding.
#[test]
fn fused_attention_is_the_unfused_ops_in_f32() {
    let dev = Device::Cpu;
    for (frames, d) in SHAPES {
        let qkv = random_qkv(2, frames, 3, d, &dev);
        let (cos, sin) = rope_tables(frames, d, DType::F32, &dev);
        let fused = fused_attention(&qkv, &cos, &sin, 3).unwrap();
        let expected = unfused(&qkv, &cos, &sin, 3);
        let err = relative_rms(&fused, &expected);
        assert!(
            err < 1e-5,
            "{frames} frames, head_dim {d}: relative error {err:e}"
        );
    }
}

/// bf16 on the test device (the tensor-core kernel on CUDA): against the ops in f32 on the
/// same bf16 inputs, no worse than the unfused bf16 ops themselves (which round the scores
/// and probabilities to bf16; the fused op keeps them in f32).
#[test]
fn fused_bf16_attention_is_as_accurate_as_the_unfused_ops() {
    let dev = test_device();
    for (frames, d) in SHAPES {
        let qkv = random_qkv(2, frames, 3, d, &dev)
            .to_dtype(DType::BF16)
            .unwrap();
        let (cos, sin) = rope_tables(frames, d, DType::BF16, &dev);
        let exact = unfused(
            &qkv.to_dtype(DType::F32).unwrap(),
            &cos.to_dtype(DType::F32).unwrap(),
            &sin.to_dtype(DType::F32).unwrap(),
            3,
        );
        let fused = fused_attention(&qkv, &cos, &sin, 3).unwrap();
        let ops = unfused(&qkv, &cos, &sin, 3);
        let (fused_err, ops_err) = (relative_rms(&fused, &exact), relative_rms(&ops, &exact));
        println!("{frames} frames, head_dim {d}: fused {fused_err:.2e}, ops {ops_err:.2e}");
        assert!(
            fused_err < 1e-2 && fused_err <= 1.25 * ops_err,
            "{frames} frames, head_dim {d}: fused {fused_err:e} vs ops {ops_err:e}"
        );
    }
}

/// `(1, 6, dim)` modulation rows of moderate size, like the adaLN's.
fn modulation(dim: usize, dev: &Device) -> Tensor {
    Tensor::randn(0f32, 0.5, (1, 6, dim), dev).unwrap()
}

/// candle's ops of the estimator block (its RMSNorm, modulate, gated residual, SwiGLU).
fn unfused_block_ops(x: &Tensor, w: &Tensor, m: &Tensor, gate_up: &Tensor) -> [Tensor; 3] {
    let part = |i: usize| m.narrow(1, i, 1).unwrap();
    let inv_rms = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6)
        .and_then(|v| v.sqrt())
        .and_then(|v| v.recip())
        .unwrap();
    let normed = x
        .broadcast_mul(&inv_rms)
        .and_then(|v| v.broadcast_mul(w))
        .unwrap();
    let modulated = normed
        .broadcast_mul(&part(1).affine(1.0, 1.0).unwrap())
        .and_then(|v| v.broadcast_add(&part(0)))
        .unwrap();
    let gated = (x + gate_up
        .narrow(D::Minus1, 0, x.dim(2).unwrap())
        .unwrap()
        .broadcast_mul(&part(2))
        .unwrap())
    .unwrap();
    let hidden = gate_up.dim(2).unwrap() / 2;
    let g = gate_up.narrow(D::Minus1, 0, hidden).unwrap();
    let u = gate_up.narrow(D::Minus1, hidden, hidden).unwrap();
    let swiglu = (g.silu().unwrap() * u).unwrap();
    [modulated, gated, swiglu]
}

fn fused_block_ops(x: &Tensor, w: &Tensor, m: &Tensor, gate_up: &Tensor) -> [Tensor; 3] {
    let h = gate_up.narrow(D::Minus1, 0, x.dim(2).unwrap()).unwrap();
    [
        rms_modulate(x, w, m, 0).unwrap(),
        gated_add(x, &h, m, 2).unwrap(),
        swiglu(gate_up).unwrap(),
    ]
}

const BLOCK_OPS: [&str; 3] = ["rms_modulate", "gated_add", "swiglu"];

/// Inputs of the block ops: x `(2, frames, dim)`, a norm weight, modulation, and a stacked
/// gate/up projection `(2, frames, 2·dim)`.
fn block_inputs(frames: usize, dim: usize, dev: &Device) -> [Tensor; 4] {
    [
        Tensor::randn(0f32, 2.0, (2, frames, dim), dev).unwrap(),
        Tensor::randn(1f32, 0.2, dim, dev).unwrap(),
        modulation(dim, dev),
        Tensor::randn(0f32, 2.0, (2, frames, 2 * dim), dev).unwrap(),
    ]
}

/// f32 on the CPU: each fused op is candle's ops to f32 rounding.
#[test]
fn fused_block_ops_are_the_unfused_ops_in_f32() {
    let [x, w, m, gu] = block_inputs(37, 96, &Device::Cpu);
    let fused = fused_block_ops(&x, &w, &m, &gu);
    let ops = unfused_block_ops(&x, &w, &m, &gu);
    for ((name, f), o) in BLOCK_OPS.iter().zip(&fused).zip(&ops) {
        let err = relative_rms(f, o);
        assert!(err < 1e-6, "{name}: relative error {err:e}");
    }
}

/// bf16 on the test device (CUDA: adaln.cu): against the ops in f32 on the same bf16
/// inputs, no worse than candle's bf16 ops (which round after each op).
#[test]
fn fused_bf16_block_ops_are_as_accurate_as_the_unfused_ops() {
    let dev = test_device();
    for dim in [1536, 3072] {
        let inputs = block_inputs(100, dim, &dev).map(|t| t.to_dtype(DType::BF16).unwrap());
        let [x, w, m, gu] = &inputs;
        let f32s = inputs.clone().map(|t| t.to_dtype(DType::F32).unwrap());
        let exact = unfused_block_ops(&f32s[0], &f32s[1], &f32s[2], &f32s[3]);
        let fused = fused_block_ops(x, w, m, gu);
        let ops = unfused_block_ops(x, w, m, gu);
        for (i, name) in BLOCK_OPS.iter().enumerate() {
            let (fe, oe) = (
                relative_rms(&fused[i], &exact[i]),
                relative_rms(&ops[i], &exact[i]),
            );
            println!("{name} dim {dim}: fused {fe:.2e}, ops {oe:.2e}");
            assert!(
                fe < 5e-3 && fe <= 1.25 * oe,
                "{name} dim {dim}: fused {fe:e} vs ops {oe:e}"
            );
        }
    }
}

/// The gated residual with the norm that reads it, the norm's modulation another block's:
/// `(x + h · gate, rms_modulate(x + h · gate))` from the two ops, on the test device in its
/// dtype, per-row modulations (CFG rows with their own timesteps) and one for both.
fn residual_norm_cases(dim: usize, dtype: DType, dev: &Device) -> Vec<[(Tensor, Tensor); 2]> {
    let [x, w, _, gu] = block_inputs(45, dim, dev).map(|t| t.to_dtype(dtype).unwrap());
    let h = gu
        .narrow(D::Minus1, dim, dim)
        .unwrap()
        .contiguous()
        .unwrap();
    [1, 2]
        .into_iter()
        .map(|m_rows| {
            let m = |scale: f64| {
                (Tensor::randn(0f32, 0.5, (m_rows, 6, dim), dev).unwrap() * scale)
                    .and_then(|t| t.to_dtype(dtype))
                    .unwrap()
            };
            let (m_gate, m_norm) = (m(1.0), m(2.0));
            let norm = NormAfter {
                weight: &w,
                m: &m_norm,
                part: 3,
            };
            let fused = gated_add_rms_modulate(&x, &h, &m_gate, 2, norm).unwrap();
            let sum = gated_add(&x, &h, &m_gate, 2).unwrap();
            let normed = rms_modulate(&sum, &w, &m_norm, 3).unwrap();
            [fused, (sum, normed)]
        })
        .collect()
}

/// In f32 on the host: against candle's unfused formulas, to f32 rounding.
#[test]
fn the_residual_with_its_norm_is_the_unfused_formula_in_f32() {
    let dev = Device::Cpu;
    let [x, w, m, gu] = block_inputs(37, 96, &dev);
    let h = gu.narrow(D::Minus1, 96, 96).unwrap();
    let m_norm = (modulation(96, &dev) * 2.0).unwrap();
    let norm = NormAfter {
        weight: &w,
        m: &m_norm,
        part: 0,
    };
    let (sum, normed) = gated_add_rms_modulate(&x, &h, &m, 2, norm).unwrap();
    let want_sum = (&x + h.broadcast_mul(&m.narrow(1, 2, 1).unwrap()).unwrap()).unwrap();
    let [want_normed, _, _] = unfused_block_ops(&want_sum, &w, &m_norm, &gu);
    assert!(relative_rms(&sum, &want_sum) < 1e-6);
    assert!(relative_rms(&normed, &want_normed) < 1e-6);
}

/// bf16 on the test device (CUDA: one kernel for both): the sum and its norm are the two
/// ops' values bit for bit, at both real widths.
#[test]
fn the_bf16_residual_with_its_norm_is_the_two_ops_exactly() {
    let dev = test_device();
    for dim in [1536, 3072] {
        for [(sum, normed), (ops_sum, ops_normed)] in residual_norm_cases(dim, DType::BF16, &dev) {
            for (name, got, want) in [("sum", &sum, &ops_sum), ("norm", &normed, &ops_normed)] {
                let differ = got
                    .ne(want)
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.sum_all())
                    .and_then(|t| t.to_scalar::<f32>())
                    .unwrap();
                assert_eq!(differ, 0.0, "dim {dim}: {name} differs in {differ} values");
            }
        }
    }
}
