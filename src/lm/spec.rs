//! The tensors of a HeartMuLa checkpoint (keys of `HeartMuLa.state_dict()`).

use crate::weights::{Init, ModelSpec};

use super::config::{Flavor, LmConfig};

/// The text embeddings: looked up once a song, so kept in host memory on every device.
pub const TEXT_EMBEDDINGS: &str = "text_embeddings.weight";

/// Repacked checkpoints sometimes carry torchtune's RoPE buffers; they are recomputed, never read.
const IGNORED_SUFFIXES: [&str; 2] = ["attn.pos_embeddings.theta", "attn.pos_embeddings.cache"];

pub fn lm_spec(c: &LmConfig) -> ModelSpec {
    let mut s = ModelSpec::new("HeartMuLa");
    s.ignored_suffixes.extend(IGNORED_SUFFIXES);
    let (d, dd, v) = (
        c.backbone.embed_dim,
        c.decoder.embed_dim,
        c.audio_vocab_size,
    );
    add_transformer(&mut s, "backbone", &c.backbone);
    add_transformer(&mut s, "decoder", &c.decoder);
    s.add(TEXT_EMBEDDINGS, &[c.text_vocab_size, d], Init::Normal(1.0));
    s.add(
        "audio_embeddings.weight",
        &[v * c.audio_num_codebooks, d],
        Init::Normal(1.0),
    );
    s.add(
        "unconditional_text_embedding.weight",
        &[1, d],
        Init::Normal(1.0),
    );
    s.add("projection.weight", &[dd, d], Init::Fan(d));
    s.add("codebook0_head.weight", &[v, d], Init::Fan(d));
    s.add(
        "audio_head",
        &[c.audio_num_codebooks - 1, dd, v],
        Init::Fan(dd),
    );
    s.add("muq_linear.weight", &[d, c.muq_dim], Init::Fan(c.muq_dim));
    s.add("muq_linear.bias", &[d], Init::Normal(0.1));
    s
}

fn add_transformer(s: &mut ModelSpec, prefix: &str, f: &Flavor) {
    let (d, hd, h) = (f.embed_dim, f.head_dim(), f.intermediate_dim);
    for i in 0..f.num_layers {
        let p = format!("{prefix}.layers.{i}");
        s.add(
            format!("{p}.attn.q_proj.weight"),
            &[f.num_heads * hd, d],
            Init::Fan(d),
        );
        s.add(
            format!("{p}.attn.k_proj.weight"),
            &[f.num_kv_heads * hd, d],
            Init::Fan(d),
        );
        s.add(
            format!("{p}.attn.v_proj.weight"),
            &[f.num_kv_heads * hd, d],
            Init::Fan(d),
        );
        s.add(
            format!("{p}.attn.output_proj.weight"),
            &[d, f.num_heads * hd],
            Init::Fan(d),
        );
        s.add(format!("{p}.mlp.w1.weight"), &[h, d], Init::Fan(d));
        s.add(format!("{p}.mlp.w2.weight"), &[d, h], Init::Fan(h));
        s.add(format!("{p}.mlp.w3.weight"), &[h, d], Init::Fan(d));
        s.add(format!("{p}.sa_norm.scale"), &[d], Init::NearOne);
        s.add(format!("{p}.mlp_norm.scale"), &[d], Init::NearOne);
    }
    s.add(format!("{prefix}.norm.scale"), &[d], Init::NearOne);
}
