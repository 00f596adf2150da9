//! The frame step's matrix-product kernels (`lm::cuda`, CUDA builds only) against candle's
//! f32 product on the same inputs: every variant the device runs — the tensor-core ones and
//! the plain ones they fall back to — with dense bf16 and FP8 weights, bf16 and f32 outputs,
//! 1–4 rows of x, with and without a residual, at sizes that are not multiples of the
//! kernels' tiles (16 output rows, 32 or 64 inputs a segment); the RMSNorm the step fuses
//! into a product, against the norm computed in f32; the SwiGLU fused into the gate/up
//! projection, against silu(gate)·up computed in f32; and the step's attention over the KV
//! cache (both kernels: the one-pass one at the real head sizes, the general one elsewhere)
//! against softmax(q·Kᵀ/√d)·V computed on the host; the FP8 KV cache (its rows quantised and
//! decoded as the host does, byte for byte, written by both RoPE paths as the host quantises
//! the dense caches, and attention over it as over its decoded values); and the sampling
//! kernel against the host sampler (the same token from the same logits and noise). Not
//! fixture tests: random inputs, an independent formula. Needs `HEARTSTREAM_TEST_DEVICE=cuda`.

use candle_core::{DType, Device, Tensor};
use heartstream::lm::cuda::{
    GemvKernel, Kernels, NormWeights, RopeKv, GEMV_BF16_TO_F32_VARIANTS, GEMV_BF16_VARIANTS,
    GEMV_E4M3_TO_F32_VARIANTS, GEMV_E4M3_VARIANTS,
};
use heartstream::lm::kv_cache::KvBuffers;
use heartstream::lm::kv_fp8::{decode_groups, quantize_groups, KV_GROUP};
use heartstream::lm::projection::Projection;
use heartstream::lm::SamplingParams;
use heartstream::weights::Fp8Matrix;

use crate::fixture::test_device;
use crate::kernels::relative_rms;

/// (output rows, inputs): tails in both; 8200 rows give blocks several tiles each (the grid
/// is at most what the GPU holds at once); the last is the real model's down projection.
const SHAPES: [(usize, usize); 5] = [
    (40, 208),
    (1000, 96),
    (8200, 208),
    (3080, 3072),
    (3072, 8192),
];

fn cuda() -> (Device, Kernels) {
    let dev = test_device();
    assert!(
        dev.is_cuda(),
        "the LM kernels run on CUDA only: set HEARTSTREAM_TEST_DEVICE=cuda"
    );
    let kernels = Kernels::load(&dev).unwrap();
    (dev, kernels)
}

/// `x · wᵀ (+ residual)` by candle in f32.
fn reference(x: &Tensor, w: &Tensor, residual: Option<&Tensor>) -> Tensor {
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
    let y = f32(x).matmul(&f32(w).t().unwrap()).unwrap();
    match residual {
        Some(r) => (y + f32(r)).unwrap(),
        None => y,
    }
}

/// The tolerance of an output in `out`: bf16 rounding of the result, or f32 sums in another
/// order (tensor cores accumulate in f32 too).
fn tolerance(out: DType) -> f32 {
    match out {
        DType::BF16 => 6e-3,
        _ => 1e-4,
    }
}

/// Runs `product` for every case and kernel and checks it against the f32 reference.
fn check_all(
    kernels: &Kernels,
    dev: &Device,
    variants: &[GemvKernel],
    out: DType,
    mut product: impl FnMut(GemvKernel, &Tensor, usize, Option<&Tensor>) -> (Tensor, Tensor),
) {
    let mut checked = 0;
    for (n, k) in SHAPES {
        for rows in 1..=4 {
            let x = Tensor::randn(0f32, 1.0, (rows, k), dev)
                .and_then(|t| t.to_dtype(DType::BF16))
                .unwrap();
            let residual = Tensor::randn(0f32, 1.0, (rows, n), dev)
                .and_then(|t| t.to_dtype(out))
                .unwrap();
            for &kernel in variants.iter().filter(|v| kernels.runs(v, rows, k)) {
                for res in [None, Some(&residual)] {
                    let (got, want) = product(kernel, &x, n, res);
                    assert_eq!(got.dims(), &[rows, n]);
                    let err = relative_rms(&got, &want);
                    assert!(
                        err < tolerance(out),
                        "{} on {rows}×{k} · ({n}×{k})ᵀ, residual {}: relative RMS error {err:e}",
                        kernel.name,
                        res.is_some()
                    );
                    checked += 1;
                }
            }
        }
    }
    // Every list holds a tensor-core kernel and a plain one; an H200 runs both.
    assert!(
        checked >= SHAPES.len() * 4 * 2 * 2,
        "only {checked} cases ran"
    );
}

fn dense_products_match_f32(variants: &[GemvKernel], out: DType) {
    let (dev, kernels) = cuda();
    check_all(&kernels, &dev, variants, out, |kernel, x, n, res| {
        let k = x.dim(1).unwrap();
        let w = Tensor::randn(0f32, 0.05, (n, k), &dev)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap();
        let got = kernels.gemv_with(kernel, x, &w, res, out).unwrap();
        (got, reference(x, &w, res))
    });
}

fn fp8_products_match_f32(variants: &[GemvKernel], out: DType) {
    let (dev, kernels) = cuda();
    check_all(&kernels, &dev, variants, out, |kernel, x, n, res| {
        let k = x.dim(1).unwrap();
        // Spread over several binades, so that small weights become subnormal codes.
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev)
            .and_then(|t| t.powf(3.0))
            .unwrap();
        let fp8 = Fp8Matrix::quantize_tensor(&w, &dev).unwrap();
        let got = kernels.gemv_fp8_with(kernel, x, &fp8, res, out).unwrap();
        let dequantized = fp8.dequantize(DType::F32).unwrap();
        (got, reference(x, &dequantized, res))
    });
}

#[test]
fn dense_bf16_products_match_f32() {
    dense_products_match_f32(&GEMV_BF16_VARIANTS, DType::BF16);
}

#[test]
fn dense_products_to_f32_logits_match_f32() {
    dense_products_match_f32(&GEMV_BF16_TO_F32_VARIANTS, DType::F32);
}

#[test]
fn fp8_bf16_products_match_f32_on_the_dequantized_weights() {
    fp8_products_match_f32(&GEMV_E4M3_VARIANTS, DType::BF16);
}

#[test]
fn fp8_products_to_f32_logits_match_f32_on_the_dequantized_weights() {
    fp8_products_match_f32(&GEMV_E4M3_TO_F32_VARIANTS, DType::F32);
}

/// One random (n, k) matrix as the step stores it in bf16 and in FP8, each with the values
/// its kernels multiply by (in f32).
fn one_matrix_both_ways(n: usize, k: usize, dev: &Device) -> [(Projection, Tensor); 2] {
    let w = Tensor::randn(0f32, 0.05, (n, k), dev).unwrap();
    let dense = w.to_dtype(DType::BF16).unwrap();
    let fp8 = Fp8Matrix::quantize_tensor(&w, dev).unwrap();
    let fp8_values = fp8.dequantize(DType::F32).unwrap();
    [
        (Projection::Dense(dense.clone()), dense),
        (Projection::Fp8(fp8), fp8_values),
    ]
}

/// `x · γ / sqrt(mean(x²) + eps)` over the last dimension, in f32.
fn rms_norm_f32(x: &Tensor, gamma: &Tensor, eps: f64) -> Tensor {
    let x = x.to_dtype(DType::F32).unwrap();
    let gamma = gamma.to_dtype(DType::F32).unwrap();
    let inv = (x.sqr().unwrap().mean_keepdim(1).unwrap() + eps)
        .and_then(|m| m.sqrt())
        .and_then(|r| r.recip())
        .unwrap();
    x.broadcast_mul(&inv)
        .and_then(|y| y.broadcast_mul(&gamma))
        .unwrap()
}

/// A random RMSNorm scale of `k` values around 1, in bf16.
fn norm_scale(k: usize, dev: &Device) -> Tensor {
    Tensor::randn(1f32, 0.3, k, dev)
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap()
}

/// `rows` random rows of `k` bf16 values, each of a different scale: a norm must take each
/// row's own.
fn rows_of_different_scales(rows: usize, k: usize, dev: &Device) -> Tensor {
    Tensor::randn(0f32, 1.0, (rows, k), dev)
        .and_then(|x| {
            let scales: Vec<f32> = (0..rows).map(|r| 0.1 * 7f32.powi(r as i32)).collect();
            x.broadcast_mul(&Tensor::from_vec(scales, (rows, 1), dev)?)
        })
        .and_then(|t| t.to_dtype(DType::BF16))
        .unwrap()
}

#[test]
fn an_rms_norm_fused_into_a_product_matches_f32() {
    let (dev, kernels) = cuda();
    let eps = 1e-5;
    for (n, k) in SHAPES {
        let gamma = norm_scale(k, &dev);
        let norm = NormWeights {
            scale: &gamma,
            eps: eps as f32,
        };
        let cases = one_matrix_both_ways(n, k, &dev);
        for rows in 1..=4 {
            let x = rows_of_different_scales(rows, k, &dev);
            let normed = rms_norm_f32(&x, &gamma, eps);
            for (projection, values) in &cases {
                let got = kernels
                    .project_normed(&x, &norm, projection, DType::BF16)
                    .unwrap();
                let want = reference(&normed, values, None);
                let err = relative_rms(&got, &want);
                assert!(
                    err < tolerance(DType::BF16),
                    "normed product {rows}×{k} · ({n}×{k})ᵀ: relative RMS error {err:e}"
                );
            }
        }
    }
}

#[test]
fn a_swiglu_fused_into_the_gate_up_projection_matches_f32() {
    let (dev, kernels) = cuda();
    let eps = 1e-5;
    // (hidden, inputs): 20 is not a multiple of the 8 gate rows a tile pairs with 8 up rows
    // (the step falls back to a kernel of its own); 4104 gives blocks several tiles each;
    // the last is the real model's.
    for (hidden, k) in [(20, 208), (1000, 96), (4104, 208), (8192, 3072)] {
        let gamma = norm_scale(k, &dev);
        let (norm, cases) = (
            NormWeights {
                scale: &gamma,
                eps: eps as f32,
            },
            one_matrix_both_ways(2 * hidden, k, &dev),
        );
        for rows in 1..=4 {
            let x = rows_of_different_scales(rows, k, &dev);
            let normed = rms_norm_f32(&x, &gamma, eps);
            for (projection, values) in &cases {
                let gu = reference(&normed, values, None);
                let (gate, up) = (
                    gu.narrow(1, 0, hidden).unwrap(),
                    gu.narrow(1, hidden, hidden).unwrap(),
                );
                let silu = (&gate / (gate.neg().unwrap().exp().unwrap() + 1.0).unwrap()).unwrap();
                let want = (silu * up).unwrap();
                let got = kernels
                    .project_gate_up(&x, &norm, projection, DType::BF16)
                    .unwrap();
                assert_eq!(got.dims(), &[rows, hidden]);
                let err = relative_rms(&got, &want);
                assert!(
                    err < tolerance(DType::BF16),
                    "SwiGLU of {rows}×{k} · ({}×{k})ᵀ: relative RMS error {err:e}",
                    2 * hidden
                );
            }
        }
    }
}

#[test]
fn rope_fused_into_the_qkv_product_matches_the_rope_kernel() {
    let (dev, kernels) = cuda();
    let k = 3072;
    let bf16 = |shape: &[usize], std: f32| {
        Tensor::randn(0f32, std, shape, &dev)
            .and_then(|t| t.to_dtype(DType::BF16))
            .unwrap()
    };
    let gamma = norm_scale(k, &dev);
    let norm = NormWeights {
        scale: &gamma,
        eps: 1e-5,
    };
    // (heads, kv heads, head_dim, cache capacity, first position, positions): the
    // backbone's step, and the decoder's first step (two positions).
    for (heads, kv_heads, hd, capacity, first, t) in
        [(24, 8, 128, 700, 613, 1), (8, 4, 384, 16, 0, 2)]
    {
        let n = (heads + 2 * kv_heads) * hd;
        let x = bf16(&[2, t, k], 1.0);
        let tables = || Tensor::randn(0f32, 1.0, (capacity, hd / 2), &dev).unwrap();
        let (cos, sin) = (tables(), tables());
        let pos = Tensor::new(&[first as u32], &dev).unwrap();
        for (projection, _) in &one_matrix_both_ways(n, k, &dev) {
            // Dense caches of the step's dtype, or FP8 codes with their groups' exponents.
            let caches = |fp8: bool| {
                let zeros =
                    |d: usize, dtype| Tensor::zeros((2, kv_heads, capacity, d), dtype, &dev);
                let values = if fp8 { DType::U8 } else { DType::BF16 };
                let exps = || zeros(hd / KV_GROUP, DType::U8).unwrap();
                (
                    zeros(hd, values).unwrap(),
                    zeros(hd, values).unwrap(),
                    fp8.then(|| (exps(), exps())),
                )
            };
            let run = |fused: bool, fp8: bool| {
                let (k_cache, v_cache, exps) = caches(fp8);
                let rope = RopeKv {
                    cos: &cos,
                    sin: &sin,
                    pos: &pos,
                    cache: KvBuffers {
                        k: &k_cache,
                        v: &v_cache,
                        exponents: exps.as_ref().map(|(k, v)| (k, v)),
                    },
                    heads,
                    kv_heads,
                };
                let q = if fused {
                    kernels.project_rope(&x, &norm, projection, &rope)
                } else {
                    let qkv = kernels
                        .project_normed(&x, &norm, projection, DType::BF16)
                        .unwrap();
                    kernels.rope_kv(&qkv, &rope)
                };
                (q.unwrap(), k_cache, v_cache, exps)
            };
            let (got, want) = (run(true, false), run(false, false));
            // An FP8 cache holds, at the written positions, the host's quantisation of what the
            // same path writes into a dense cache, byte for byte.
            if hd % KV_GROUP == 0 {
                for (fused, dense) in [(true, &got), (false, &want)] {
                    let (_, k_codes, v_codes, exps) = run(fused, true);
                    let (k_exps, v_exps) = exps.unwrap();
                    for (what, codes, exps, values) in [
                        ("k", &k_codes, &k_exps, &dense.1),
                        ("v", &v_codes, &v_exps, &dense.2),
                    ] {
                        let at = |c: &Tensor| c.narrow(2, first, t).unwrap();
                        let (want_codes, want_exps) = host_fp8(&at(values));
                        assert_eq!(
                            (u8s(&at(codes)), u8s(&at(exps))),
                            (want_codes, want_exps),
                            "FP8 {what} written by the {} path, {heads}/{kv_heads} heads of {hd}",
                            if fused { "fused" } else { "RoPE kernel's" }
                        );
                    }
                }
            }
            assert_eq!(got.0.dims(), &[2, heads, t, hd]);
            for (what, g, w) in [
                ("q", &got.0, &want.0),
                ("k", &got.1, &want.1),
                ("v", &got.2, &want.2),
            ] {
                let err = relative_rms(g, w);
                assert!(
                    err < 1e-3,
                    "{what} of {heads}/{kv_heads} heads of {hd} at {first}+{t}: relative RMS \
                     error {err:e} against the product, then the RoPE kernel"
                );
            }
        }
    }
}

fn u8s(t: &Tensor) -> Vec<u8> {
    t.flatten_all().and_then(|t| t.to_vec1()).unwrap()
}

/// The host's FP8 cache rows of `x` (…, head_dim): codes and exponents, flattened.
fn host_fp8(x: &Tensor) -> (Vec<u8>, Vec<u8>) {
    let values: Vec<f32> = x
        .to_dtype(DType::F32)
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1())
        .unwrap();
    let mut codes = vec![0u8; values.len()];
    let mut exps = vec![0u8; values.len() / KV_GROUP];
    quantize_groups(&values, &mut codes, &mut exps);
    (codes, exps)
}

/// softmax(q·Kᵀ/√D)·V of each query (b, h, t) over the keys 0..=pos + t of its kv head, on
/// the host in f64: q (B, H, T, D), caches (B, KV, CAP, D); returns (B, T, H·D).
fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, pos: usize) -> Tensor {
    let (b, h, t, d) = q.dims4().unwrap();
    let (_, kv, cap, _) = k.dims4().unwrap();
    let host = |x: &Tensor| -> Vec<f32> {
        x.to_dtype(DType::F32)
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1())
            .unwrap()
    };
    let (qv, kv_k, kv_v) = (host(q), host(k), host(v));
    let mut out = vec![0f32; b * t * h * d];
    for bi in 0..b {
        for hi in 0..h {
            let kvh = hi / (h / kv);
            for ti in 0..t {
                let query = &qv[((bi * h + hi) * t + ti) * d..][..d];
                let row = |cache: &[f32], j: usize| -> Vec<f64> {
                    cache[((bi * kv + kvh) * cap + j) * d..][..d]
                        .iter()
                        .map(|&x| x as f64)
                        .collect()
                };
                let keys = pos + ti + 1;
                let scores: Vec<f64> = (0..keys)
                    .map(|j| {
                        let kr = row(&kv_k, j);
                        query
                            .iter()
                            .zip(&kr)
                            .map(|(&a, b)| a as f64 * b)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let dst = &mut out[((bi * t + ti) * h + hi) * d..][..d];
                for (j, w) in weights.iter().enumerate() {
                    for (o, x) in dst.iter_mut().zip(row(&kv_v, j)) {
                        *o += (w / total * x) as f32;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, t, h * d), &Device::Cpu).unwrap()
}

#[test]
fn attention_over_the_kv_cache_matches_the_host() {
    let (dev, kernels) = cuda();
    // (dtype, heads, kv heads, head_dim, capacity, position of the first query, queries):
    // the backbone's and the decoder's heads (one-pass kernel), a small head (the general
    // kernel); one and several key splits, a split that is partly past the last key.
    let cases = [
        (DType::BF16, 24, 8, 128, 630, 629, 1),
        (DType::BF16, 24, 8, 128, 630, 100, 1),
        (DType::BF16, 24, 8, 128, 700, 63, 2),
        (DType::BF16, 24, 8, 128, 64, 0, 1),
        (DType::BF16, 24, 8, 128, 3380, 3379, 1),
        (DType::BF16, 8, 4, 384, 16, 0, 2),
        (DType::BF16, 8, 4, 384, 16, 7, 1),
        (DType::F32, 24, 8, 128, 300, 250, 1),
        (DType::BF16, 4, 2, 16, 40, 30, 2),
        (DType::F32, 4, 2, 16, 40, 3, 1),
    ];
    for (dtype, h, kv, d, cap, pos, t) in cases {
        let draw = |shape: (usize, usize, usize, usize)| {
            Tensor::randn(0f32, 1.0, shape, &dev)
                .and_then(|x| x.to_dtype(dtype))
                .unwrap()
        };
        // Keys spread enough that the softmax is far from flat.
        let q = (draw((2, h, t, d)) * 2.0).unwrap();
        let (k, v) = (draw((2, kv, cap, d)), draw((2, kv, cap, d)));
        let position = Tensor::new(&[pos as u32], &dev).unwrap();
        let got = kernels
            .attention(&q, KvBuffers::dense(&k, &v), &position)
            .unwrap();
        let want = attention_reference(&q, &k, &v, pos);
        let err = relative_rms(&got, &want);
        assert!(
            err < tolerance(dtype),
            "{dtype:?} attention, {h}/{kv} heads of {d}, {cap} cached, queries at {pos}+{t}: \
             relative RMS error {err:e}"
        );
        // The same caches in FP8: attention over them is attention over their decoded values.
        if d % KV_GROUP == 0 {
            let (k_codes, k_exps, k_decoded) = fp8_cache(&k);
            let (v_codes, v_exps, v_decoded) = fp8_cache(&v);
            let fp8 = KvBuffers {
                k: &k_codes,
                v: &v_codes,
                exponents: Some((&k_exps, &v_exps)),
            };
            let got = kernels.attention(&q, fp8, &position).unwrap();
            let want = attention_reference(&q, &k_decoded, &v_decoded, pos);
            let err = relative_rms(&got, &want);
            assert!(
                err < tolerance(dtype),
                "{dtype:?} attention over an FP8 cache, {h}/{kv} heads of {d}, {cap} cached, \
                 queries at {pos}+{t}: relative RMS error {err:e} against its decoded values"
            );
        }
    }
}

/// `cache` (B, KV, CAP, D) quantised on the host: codes and exponents on its device, and the
/// values they decode to, in its dtype.
fn fp8_cache(cache: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (b, kv, cap, d) = cache.dims4().unwrap();
    let (codes, exps) = host_fp8(cache);
    let mut decoded = vec![0f32; codes.len()];
    decode_groups(&codes, &exps, &mut decoded);
    let dev = cache.device();
    (
        Tensor::from_vec(codes, (b, kv, cap, d), dev).unwrap(),
        Tensor::from_vec(exps, (b, kv, cap, d / KV_GROUP), dev).unwrap(),
        Tensor::from_vec(decoded, (b, kv, cap, d), dev)
            .and_then(|t| t.to_dtype(cache.dtype()))
            .unwrap(),
    )
}

/// The eager path's FP8 rows (the prompt's keys and values) made and decoded on the GPU are
/// the host's, byte for byte: values over 30 binades (saturating and subnormal codes among
/// them), from f32 and bf16.
#[test]
fn fp8_kv_rows_made_and_decoded_on_the_gpu_are_the_hosts() {
    let (dev, kernels) = cuda();
    let (b, kv, cap, d) = (2, 3, 7, 48);
    let n = b * kv * cap * d;
    let values: Vec<f32> = (0..n)
        .map(|i| {
            let group = (i / KV_GROUP) as i32;
            let mantissa = ((i * 7919) % 2000) as f32 / 1000.0 - 1.0;
            mantissa * 2f32.powi(group % 31 - 12)
        })
        .collect();
    let host_values = Tensor::from_vec(values, (b, kv, cap, d), &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let x = host_values.to_dtype(dtype).unwrap();
        let (codes, exps) = kernels.kv_quantize(&x.to_device(&dev).unwrap()).unwrap();
        let (want_codes, want_exps) = host_fp8(&x);
        assert_eq!(u8s(&codes), want_codes, "{dtype:?} codes");
        assert_eq!(u8s(&exps), want_exps, "{dtype:?} exponents");
        let len = cap - 2;
        let got = kernels.kv_dequantize(&codes, &exps, len, dtype).unwrap();
        let mut decoded = vec![0f32; n];
        decode_groups(&want_codes, &want_exps, &mut decoded);
        let want = Tensor::from_vec(decoded, (b, kv, cap, d), &Device::Cpu)
            .and_then(|t| t.narrow(2, 0, len))
            .and_then(|t| t.to_dtype(dtype))
            .unwrap();
        let bits = |t: &Tensor| -> Vec<u32> {
            let f: Vec<f32> = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .unwrap();
            f.iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&got), bits(&want), "{dtype:?} decoded");
    }
}

#[test]
fn sampling_on_the_device_draws_the_hosts_tokens() {
    let (dev, kernels) = cuda();
    let vocab = 8197;
    // (guidance, temperature, top-k): logits around 10 put most keys in one or two digits
    // of the radix select's first pass (every lane of a warp adding to the same bin); top-k
    // 1 is argmax, the whole vocabulary keeps every token. Logits are multiples of 1/64 and
    // temperatures powers of two, so that guidance and temperature are exact on both sides
    // (the device may fuse a multiply and an add) and ties at the k-th value occur.
    let cases = [
        (1.5f32, 1.0f32, 50usize),
        (1.5, 0.5, 50),
        (1.0, 1.0, 1),
        (1.5, 1.0, vocab),
        (1.0, 2.0, 7),
    ];
    for (case, &(cfg_scale, temperature, topk)) in cases.iter().enumerate() {
        let sampling = SamplingParams {
            temperature,
            topk,
            cfg_scale,
            seed: 17 + case as u64,
        };
        let rows = sampling.batch();
        for (frame_index, codebook) in [(0u32, 0usize), (3, 5), (250, 7)] {
            let logits = Tensor::randn(10f32, 3.0, (rows, vocab), &dev)
                .and_then(|l| (l * 64.0)?.round()? / 64.0)
                .unwrap();
            let state = Tensor::new(&[0u32, frame_index], &dev).unwrap();
            let frame = Tensor::zeros(8, DType::U32, &dev).unwrap();
            let ids = kernels
                .sample(
                    &logits,
                    cfg_scale,
                    temperature,
                    topk,
                    sampling.seed,
                    &state,
                    codebook,
                    &frame,
                )
                .unwrap();
            let host: Vec<Vec<f32>> = logits.to_vec2().unwrap();
            let want = sampling.sample(&host, frame_index as u64, codebook);
            let got = frame.to_vec1::<u32>().unwrap()[codebook];
            assert_eq!(
                got, want,
                "case {case}, frame {frame_index}, codebook {codebook}: device drew {got}, host {want}"
            );
            let offset = want + (codebook * vocab) as u32;
            assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![offset; rows]);
        }
    }
}
