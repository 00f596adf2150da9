//! torchtune's `llama3_2` transformer (token embeddings and output layer replaced by identity,
//! as HeartMuLa does): pre-norm layers of grouped-query attention and a SwiGLU MLP.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::Linear;

use super::config::Flavor;
use super::kv_cache::KvCache;
use super::rope::Rope;
use crate::weights::Loader;

pub struct RmsNorm {
    scale: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn load(w: &Loader, name: &str, eps: f64, dtype: DType) -> anyhow::Result<Self> {
        Ok(Self {
            scale: w.get(name, dtype)?,
            eps: eps as f32,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.scale, self.eps)
    }
}

pub(super) fn linear(w: &Loader, name: &str, dtype: DType) -> anyhow::Result<Linear> {
    Ok(Linear::new(w.get(name, dtype)?, None))
}

struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    output_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &Loader, p: &str, f: &Flavor, dtype: DType) -> anyhow::Result<Self> {
        Ok(Self {
            q_proj: linear(w, &format!("{p}.q_proj.weight"), dtype)?,
            k_proj: linear(w, &format!("{p}.k_proj.weight"), dtype)?,
            v_proj: linear(w, &format!("{p}.v_proj.weight"), dtype)?,
            output_proj: linear(w, &format!("{p}.output_proj.weight"), dtype)?,
            num_heads: f.num_heads,
            num_kv_heads: f.num_kv_heads,
            head_dim: f.head_dim(),
        })
    }

    /// `x` (batch, seq, dim) at the positions following those in `cache`.
    fn forward(&self, x: &Tensor, rope: &Rope, cache: &mut KvCache) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let start = cache.len();
        let heads = |proj: &Linear, n: usize| -> Result<Tensor> {
            proj.forward(x)?
                .reshape((b, t, n, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.apply(&heads(&self.q_proj, self.num_heads)?, start)?;
        let k = rope.apply(&heads(&self.k_proj, self.num_kv_heads)?, start)?;
        let v = heads(&self.v_proj, self.num_kv_heads)?;
        let (k, v) = cache.append(&k, &v)?;

        // Grouped-query attention without copying keys: query head h reads kv head
        // h / group (torchtune's expand order), so the group's queries stack as rows.
        let group = self.num_heads / self.num_kv_heads;
        let q = q.reshape((b, self.num_kv_heads, group * t, self.head_dim))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if t > 1 {
            let mask = causal_mask(group, t, start, k.dim(2)?, scores.device())?;
            scores = scores.broadcast_add(&mask.to_dtype(scores.dtype())?)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .reshape((b, self.num_heads, t, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        self.output_proj.forward(&out)
    }
}

/// Additive mask for `group` stacked copies of `seq` queries at positions `start..`: a query
/// at position p sees keys 0..=p.
fn causal_mask(
    group: usize,
    seq: usize,
    start: usize,
    keys: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mask: Vec<f32> = (0..group * seq)
        .flat_map(|row| {
            let pos = start + row % seq;
            (0..keys).map(move |k| if k <= pos { 0.0 } else { f32::NEG_INFINITY })
        })
        .collect();
    Tensor::from_vec(mask, (group * seq, keys), device)
}

struct Mlp {
    w1: Linear,
    w2: Linear,
    w3: Linear,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = candle_nn::ops::silu(&self.w1.forward(x)?)?;
        self.w2.forward(&(gate * self.w3.forward(x)?)?)
    }
}

struct Layer {
    sa_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    fn load(w: &Loader, p: &str, f: &Flavor, dtype: DType) -> anyhow::Result<Self> {
        Ok(Self {
            sa_norm: RmsNorm::load(w, &format!("{p}.sa_norm.scale"), f.norm_eps, dtype)?,
            attn: Attention::load(w, &format!("{p}.attn"), f, dtype)?,
            mlp_norm: RmsNorm::load(w, &format!("{p}.mlp_norm.scale"), f.norm_eps, dtype)?,
            mlp: Mlp {
                w1: linear(w, &format!("{p}.mlp.w1.weight"), dtype)?,
                w2: linear(w, &format!("{p}.mlp.w2.weight"), dtype)?,
                w3: linear(w, &format!("{p}.mlp.w3.weight"), dtype)?,
            },
        })
    }

    fn forward(&self, x: &Tensor, rope: &Rope, cache: &mut KvCache) -> Result<Tensor> {
        let h = (x + self.attn.forward(&self.sa_norm.forward(x)?, rope, cache)?)?;
        &h + self.mlp.forward(&self.mlp_norm.forward(&h)?)?
    }
}

/// A stack of layers with its final norm. The caches live with the caller (the generator
/// owns all per-song state), one per layer.
pub struct Transformer {
    layers: Vec<Layer>,
    norm: RmsNorm,
    rope: Rope,
    flavor: Flavor,
}

impl Transformer {
    pub fn load(w: &Loader, prefix: &str, flavor: &Flavor, dtype: DType) -> anyhow::Result<Self> {
        let layers = (0..flavor.num_layers)
            .map(|i| Layer::load(w, &format!("{prefix}.layers.{i}"), flavor, dtype))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            layers,
            norm: RmsNorm::load(w, &format!("{prefix}.norm.scale"), flavor.norm_eps, dtype)?,
            rope: Rope::new(flavor, flavor.max_seq_len, w.device())?,
            flavor: flavor.clone(),
        })
    }

    /// Empty caches for `batch` rows and `capacity` positions.
    pub fn new_caches(&self, batch: usize, capacity: usize, dtype: DType) -> Result<Vec<KvCache>> {
        let f = &self.flavor;
        (0..f.num_layers)
            .map(|_| {
                KvCache::new(
                    batch,
                    f.num_kv_heads,
                    capacity,
                    f.head_dim(),
                    dtype,
                    self.norm.scale.device(),
                )
            })
            .collect()
    }

    /// Runs `x` (batch, seq, dim) at the positions after those already cached; returns the
    /// normed hidden states of every position.
    pub fn forward(&self, x: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        let mut h = x.clone();
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = layer.forward(&h, &self.rope, cache)?;
        }
        self.norm.forward(&h)
    }
}

/// The last position of (batch, seq, dim) hidden states.
pub fn last_position(h: &Tensor) -> Result<Tensor> {
    h.narrow(1, h.dim(1)? - 1, 1)?.squeeze(1)?.contiguous()
}
