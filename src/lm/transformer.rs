//! torchtune's `llama3_2` transformer (token embeddings and output layer replaced by identity,
//! as HeartMuLa does): pre-norm layers of grouped-query attention and a SwiGLU MLP.
//!
//! The q/k/v projections and the w1/w3 (gate/up) projections are concatenated at load time,
//! so each runs as one matrix product: the per-frame step is bound by reading weights and by
//! the number of kernels, and this halves both for those projections.

use candle_core::{DType, Device, Result, Tensor};

use super::config::Flavor;
use super::kv_cache::KvCache;
use super::kv_fp8::KvCodec;
use super::projection::{tensor_bytes, MatrixPrecision, Projection};
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

pub(super) struct Attention {
    /// [q; k; v] projections: (heads + 2·kv_heads)·head_dim outputs.
    qkv: Projection,
    output_proj: Projection,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(w: &Loader, p: &str, f: &Flavor, m: Matrices) -> anyhow::Result<Self> {
        let names = ["q_proj", "k_proj", "v_proj"].map(|n| format!("{p}.{n}.weight"));
        Ok(Self {
            qkv: m.load(w, &names)?,
            output_proj: m.load(w, &[format!("{p}.output_proj.weight")])?,
            num_heads: f.num_heads,
            num_kv_heads: f.num_kv_heads,
            head_dim: f.head_dim(),
        })
    }

    /// `x` (batch, seq, dim) at the positions following those in `cache`; `mask` is the
    /// stack's causal mask when `seq > 1`.
    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let start = cache.len();
        let qkv = self.qkv.forward(x)?;
        let (hd, nq, nkv) = (self.head_dim, self.num_heads, self.num_kv_heads);
        let heads = |offset: usize, n: usize| -> Result<Tensor> {
            qkv.narrow(2, offset * hd, n * hd)?
                .reshape((b, t, n, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = rope.apply(&heads(0, nq)?, start)?;
        let k = rope.apply(&heads(nq, nkv)?, start)?;
        let v = heads(nq + nkv, nkv)?;
        let (k, v) = cache.append(&k, &v)?;

        // Grouped-query attention without copying keys: query head h reads kv head
        // h / group (torchtune's expand order), so the group's queries stack as rows.
        let group = nq / nkv;
        let q = q.reshape((b, nkv, group * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut scores = (q.matmul(&k.t()?)? * scale)?;
        if let Some(mask) = mask {
            let keys = k.dim(2)?;
            scores = scores
                .reshape((b, nkv, group, t, keys))?
                .broadcast_add(mask)?
                .reshape((b, nkv, group * t, keys))?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .reshape((b, nq, t, hd))?
            .transpose(1, 2)?
            .reshape((b, t, nq * hd))?;
        self.output_proj.forward(&out)
    }
}

/// Additive causal mask (seq, start + seq) for `seq` queries at positions `start..`: a query
/// at position p sees keys 0..=p. Made on the device from two index ranges, once for all
/// layers: a host-built mask is a large pageable copy, which makes the host wait for the GPU
/// to drain before every layer of the prompt.
fn causal_mask(seq: usize, start: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let keys = start + seq;
    let key_pos = Tensor::arange(0u32, keys as u32, device)?.reshape((1, keys))?;
    let query_pos = Tensor::arange(start as u32, keys as u32, device)?.reshape((seq, 1))?;
    let future = key_pos.broadcast_gt(&query_pos)?;
    let blocked = Tensor::full(f32::NEG_INFINITY, (seq, keys), device)?.to_dtype(dtype)?;
    future.where_cond(&blocked, &blocked.zeros_like()?)
}

pub(super) struct Mlp {
    /// [w1; w3]: gate and up projections.
    w13: Projection,
    w2: Projection,
    hidden: usize,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gu = self.w13.forward(x)?;
        let last = gu.rank() - 1;
        let gate = candle_nn::ops::silu(&gu.narrow(last, 0, self.hidden)?)?;
        self.w2
            .forward(&(gate * gu.narrow(last, self.hidden, self.hidden)?)?)
    }
}

pub(super) struct Layer {
    sa_norm: RmsNorm,
    attn: Attention,
    mlp_norm: RmsNorm,
    mlp: Mlp,
}

impl Layer {
    fn load(w: &Loader, p: &str, f: &Flavor, m: Matrices) -> anyhow::Result<Self> {
        let w13 = ["w1", "w3"].map(|n| format!("{p}.mlp.{n}.weight"));
        let dtype = m.dtype;
        Ok(Self {
            sa_norm: RmsNorm::load(w, &format!("{p}.sa_norm.scale"), f.norm_eps, dtype)?,
            attn: Attention::load(w, &format!("{p}.attn"), f, m)?,
            mlp_norm: RmsNorm::load(w, &format!("{p}.mlp_norm.scale"), f.norm_eps, dtype)?,
            mlp: Mlp {
                w13: m.load(w, &w13)?,
                w2: m.load(w, &[format!("{p}.mlp.w2.weight")])?,
                hidden: f.intermediate_dim,
            },
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &Rope,
        cache: &mut KvCache,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let h = (x + self
            .attn
            .forward(&self.sa_norm.forward(x)?, rope, cache, mask)?)?;
        &h + self.mlp.forward(&self.mlp_norm.forward(&h)?)?
    }
}

/// How a stack's matrices are stored, and the dtype of everything else.
#[derive(Debug, Clone, Copy)]
pub struct Matrices {
    pub precision: MatrixPrecision,
    pub dtype: DType,
}

impl Matrices {
    fn load(&self, w: &Loader, names: &[String]) -> anyhow::Result<Projection> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        Projection::load(w, &names, self.precision, self.dtype)
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

/// What a fused frame step reads of a norm: its scale and epsilon.
#[cfg(feature = "cuda")]
pub struct NormWeights<'a> {
    pub scale: &'a Tensor,
    pub eps: f32,
}

/// What a fused frame step reads of one layer: its matrices (q/k/v and gate/up fused),
/// norms and head counts.
#[cfg(feature = "cuda")]
pub struct LayerWeights<'a> {
    pub attn_norm: NormWeights<'a>,
    pub qkv: &'a Projection,
    pub output: &'a Projection,
    pub mlp_norm: NormWeights<'a>,
    pub gate_up: &'a Projection,
    pub down: &'a Projection,
    pub heads: usize,
    pub kv_heads: usize,
}

/// What a fused frame step reads of a stack: its layers, final norm and RoPE tables.
#[cfg(feature = "cuda")]
pub struct StackWeights<'a> {
    pub layers: Vec<LayerWeights<'a>>,
    pub norm: NormWeights<'a>,
    /// `(positions, head_dim / 2)` f32 cos and sin.
    pub rope: (&'a Tensor, &'a Tensor),
}

#[cfg(feature = "cuda")]
impl RmsNorm {
    fn weights(&self) -> NormWeights<'_> {
        NormWeights {
            scale: &self.scale,
            eps: self.eps,
        }
    }
}

impl Transformer {
    /// The view of this stack a fused GPU step reads.
    #[cfg(feature = "cuda")]
    pub fn weights(&self) -> StackWeights<'_> {
        let layers = self
            .layers
            .iter()
            .map(|l| LayerWeights {
                attn_norm: l.sa_norm.weights(),
                qkv: &l.attn.qkv,
                output: &l.attn.output_proj,
                mlp_norm: l.mlp_norm.weights(),
                gate_up: &l.mlp.w13,
                down: &l.mlp.w2,
                heads: l.attn.num_heads,
                kv_heads: l.attn.num_kv_heads,
            })
            .collect();
        StackWeights {
            layers,
            norm: self.norm.weights(),
            rope: self.rope.tables(),
        }
    }

    pub fn load(w: &Loader, prefix: &str, flavor: &Flavor, m: Matrices) -> anyhow::Result<Self> {
        let layers = (0..flavor.num_layers)
            .map(|i| Layer::load(w, &format!("{prefix}.layers.{i}"), flavor, m))
            .collect::<anyhow::Result<_>>()?;
        let eps = flavor.norm_eps;
        Ok(Self {
            layers,
            norm: RmsNorm::load(w, &format!("{prefix}.norm.scale"), eps, m.dtype)?,
            rope: Rope::new(flavor, flavor.max_seq_len, w.device())?,
            flavor: flavor.clone(),
        })
    }

    /// Bytes of its weights (the RoPE tables are computed, not loaded).
    pub fn weight_bytes(&self) -> u64 {
        let layers: u64 = self
            .layers
            .iter()
            .map(|l| {
                l.attn.qkv.bytes()
                    + l.attn.output_proj.bytes()
                    + l.mlp.w13.bytes()
                    + l.mlp.w2.bytes()
                    + tensor_bytes(&l.sa_norm.scale)
                    + tensor_bytes(&l.mlp_norm.scale)
            })
            .sum();
        layers + tensor_bytes(&self.norm.scale)
    }

    /// Empty caches for `batch` rows and `capacity` positions: in `dtype`, or FP8 quantised
    /// and decoded by `fp8`.
    pub fn new_caches(
        &self,
        batch: usize,
        capacity: usize,
        dtype: DType,
        fp8: Option<&KvCodec>,
    ) -> Result<Vec<KvCache>> {
        let f = &self.flavor;
        let dev = self.norm.scale.device();
        let (kv_heads, hd) = (f.num_kv_heads, f.head_dim());
        (0..f.num_layers)
            .map(|_| match fp8 {
                None => KvCache::new(batch, kv_heads, capacity, hd, dtype, dev),
                Some(codec) => {
                    KvCache::new_fp8([batch, kv_heads, capacity, hd], dtype, codec.clone(), dev)
                }
            })
            .collect()
    }

    /// Runs `x` (batch, seq, dim) at the positions after those already cached; returns the
    /// normed hidden states of every position.
    pub fn forward(&self, x: &Tensor, caches: &mut [KvCache]) -> Result<Tensor> {
        let seq = x.dim(1)?;
        let start = caches.first().map_or(0, KvCache::len);
        let mask = match seq {
            1 => None,
            _ => Some(causal_mask(seq, start, x.dtype(), x.device())?),
        };
        let mut h = x.clone();
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            h = layer.forward(&h, &self.rope, cache, mask.as_ref())?;
        }
        self.norm.forward(&h)
    }
}

/// The last position of (batch, seq, dim) hidden states.
pub fn last_position(h: &Tensor) -> Result<Tensor> {
    h.narrow(1, h.dim(1)? - 1, 1)?.squeeze(1)?.contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query i of a chunk starting at position 2 sees keys 0..=2+i, and nothing later.
    #[test]
    fn the_causal_mask_blocks_exactly_the_later_keys() {
        let mask = causal_mask(3, 2, DType::F32, &Device::Cpu).unwrap();
        let rows = mask.to_vec2::<f32>().unwrap();
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), 5);
            for (k, &v) in row.iter().enumerate() {
                let want = if k <= 2 + i { 0.0 } else { f32::NEG_INFINITY };
                assert_eq!(v, want, "query {i}, key {k}");
            }
        }
    }
}
