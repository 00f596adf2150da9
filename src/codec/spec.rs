//! Every tensor of a HeartCodec checkpoint (`HeartCodec.state_dict()` names): the ones
//! decoding reads are required, the rest (ScalarModel encoder, RVQ training buffers and input
//! projection) are allowed so a real checkpoint validates strictly.

use crate::weights::{Init, ModelSpec};

use super::arch::{mlp_hidden_dim, ScalarDecoderNames, FLOW_T_SIZE, RESIDUAL_DILATIONS};
use super::config::CodecConfig;

/// The tensors of HeartCodec for `config`.
pub fn codec_spec(config: &CodecConfig) -> ModelSpec {
    let mut spec = ModelSpec::new("HeartCodec");
    rvq(&mut spec, config);
    estimator(&mut Tensors::required(&mut spec), config);
    scalar_decoder(&mut Tensors::required(&mut spec), config);
    scalar_encoder(&mut Tensors::optional(&mut spec), config);
    spec
}

/// Adds tensors to a spec either as required (read by decoding) or as allowed (present in a
/// checkpoint, never read). The same layer helpers serve both.
struct Tensors<'a> {
    spec: &'a mut ModelSpec,
    required: bool,
}

const BIAS: Init = Init::Normal(0.1);
const WEIGHT_NORM_GAIN: Init = Init::Uniform(0.3, 0.8);
const PRELU_SLOPE: Init = Init::Uniform(0.05, 0.45);

impl<'a> Tensors<'a> {
    fn required(spec: &'a mut ModelSpec) -> Self {
        Self {
            spec,
            required: true,
        }
    }

    fn optional(spec: &'a mut ModelSpec) -> Self {
        Self {
            spec,
            required: false,
        }
    }

    fn add(&mut self, name: String, shape: &[usize], init: Init) {
        if self.required {
            self.spec.add(name, shape, init);
        } else {
            self.spec.allow(name, shape);
        }
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize, bias: bool) {
        self.add(format!("{name}.weight"), &[out, inp], Init::Fan(inp));
        if bias {
            self.add(format!("{name}.bias"), &[out], BIAS);
        }
    }

    fn conv(&mut self, name: &str, out: usize, inp: usize, kernel: usize) {
        self.add(
            format!("{name}.weight"),
            &[out, inp, kernel],
            Init::Fan(inp * kernel),
        );
        self.add(format!("{name}.bias"), &[out], BIAS);
    }

    /// A `weight_norm`-parametrized conv: g (`original0`) and v (`original1`), norm over every
    /// dim but 0. `v_shape` is [out, in, k] for Conv1d and [in, out, k] for ConvTranspose1d.
    fn weight_norm_conv(&mut self, name: &str, v_shape: [usize; 3], bias: usize) {
        let p = format!("{name}.parametrizations.weight");
        self.add(
            format!("{p}.original0"),
            &[v_shape[0], 1, 1],
            WEIGHT_NORM_GAIN,
        );
        self.add(
            format!("{p}.original1"),
            &v_shape,
            Init::Fan(v_shape[1] * v_shape[2]),
        );
        self.add(format!("{name}.bias"), &[bias], BIAS);
    }

    fn prelu(&mut self, name: &str) {
        self.add(format!("{name}.weight"), &[1], PRELU_SLOPE);
    }

    fn residual_unit(&mut self, name: &str, inp: usize, out: usize, kernel: usize) {
        self.weight_norm_conv(&format!("{name}.conv1"), [out, inp, kernel], out);
        self.weight_norm_conv(&format!("{name}.conv2"), [out, inp, 1], out);
        self.prelu(&format!("{name}.activation1"));
        self.prelu(&format!("{name}.activation2"));
    }
}

const FM: &str = "flow_matching";

fn rvq(spec: &mut ModelSpec, c: &CodecConfig) {
    let vq = format!("{FM}.vq_embed");
    let projected = c.codebook_dim != c.dim;
    let codebook = |q: usize| format!("{vq}.layers.{q}._codebook");
    let mut req = Tensors::required(spec);
    if projected {
        req.linear(&format!("{vq}.project_out"), c.dim, c.codebook_dim, true);
    }
    for q in 0..c.num_quantizers {
        req.add(
            format!("{}.embed", codebook(q)),
            &[1, c.codebook_size, c.codebook_dim],
            Init::Normal(1.0),
        );
    }
    req.linear(&format!("{FM}.cond_feature_emb"), c.dim, c.dim, true);
    // Conditions latent frames past `latent_length` in `inference_codes`.
    req.add(
        format!("{FM}.zero_cond_embedding1"),
        &[c.dim],
        Init::Normal(1.0),
    );

    // Encoder-side projection and EMA training state of the codebooks.
    let mut opt = Tensors::optional(spec);
    if projected {
        opt.linear(&format!("{vq}.project_in"), c.codebook_dim, c.dim, true);
    }
    for q in 0..c.num_quantizers {
        opt.add(
            format!("{}.embed_avg", codebook(q)),
            &[1, c.codebook_size, c.codebook_dim],
            Init::Const(0.0),
        );
        opt.add(
            format!("{}.cluster_size", codebook(q)),
            &[1, c.codebook_size],
            Init::Const(0.0),
        );
        opt.add(format!("{}.initted", codebook(q)), &[], Init::Const(0.0));
    }
}

fn estimator(t: &mut Tensors, c: &CodecConfig) {
    let e = format!("{FM}.estimator");
    let (d1, d2) = (c.inner_dim(), 2 * c.inner_dim());
    project_layer(t, &format!("{e}.proj_in"), c.in_channels, d1);
    project_layer(t, &format!("{e}.connection_proj"), c.in_channels + d1, d2);
    project_layer(t, &format!("{e}.proj_out"), d2, c.out_channels);
    for i in 0..c.num_layers {
        block(t, &format!("{e}.transformer_blocks.{i}"), d1);
    }
    for i in 0..c.num_layers_2 {
        block(t, &format!("{e}.transformer_blocks_2.{i}"), d2);
    }
    for (suffix, d) in [("", d1), ("_2", d2)] {
        t.add(
            format!("{e}.scale_shift_table{suffix}"),
            &[2, d],
            scale_shift(d),
        );
        let ada = format!("{e}.adaln_single{suffix}");
        t.linear(
            &format!("{ada}.emb.timestep_embedder.linear_1"),
            d,
            FLOW_T_SIZE,
            true,
        );
        t.linear(&format!("{ada}.emb.timestep_embedder.linear_2"), d, d, true);
        t.linear(&format!("{ada}.linear"), 6 * d, d, true);
    }
}

/// `torch.randn(n, dim) / dim**0.5`, as the reference initialises its modulation tables.
fn scale_shift(dim: usize) -> Init {
    Init::Normal(1.0 / (dim as f32).sqrt())
}

fn project_layer(t: &mut Tensors, name: &str, inp: usize, out: usize) {
    t.conv(&format!("{name}.ffn_1"), out, inp, 3);
    t.linear(&format!("{name}.ffn_2"), out, out, true);
}

fn block(t: &mut Tensors, name: &str, dim: usize) {
    let hidden = mlp_hidden_dim(dim);
    t.add(
        format!("{name}.scale_shift_table"),
        &[6, dim],
        scale_shift(dim),
    );
    t.add(format!("{name}.attn_norm.weight"), &[dim], Init::NearOne);
    t.add(format!("{name}.mlp_norm.weight"), &[dim], Init::NearOne);
    for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
        t.linear(&format!("{name}.attn.{proj}"), dim, dim, false);
    }
    t.linear(&format!("{name}.mlp.gate"), hidden, dim, false);
    t.linear(&format!("{name}.mlp.up"), hidden, dim, false);
    t.linear(&format!("{name}.mlp.down"), dim, hidden, false);
}

const SQ: &str = "scalar_model";

fn scalar_decoder(t: &mut Tensors, c: &CodecConfig) {
    let names = ScalarDecoderNames::new(c);
    let top = c.init_channel << c.upsample_factors.len();
    let look_ahead = format!("{SQ}.{}", names.look_ahead);
    t.weight_norm_conv(
        &look_ahead,
        [top, c.latent_hidden_dim, c.delay_kernel_size],
        top,
    );
    for (i, &kernel) in c.upsample_kernel_sizes.iter().enumerate() {
        let (inp, out) = (top >> i, top >> (i + 1));
        let b = format!("{SQ}.{}", names.blocks[i]);
        t.weight_norm_conv(&format!("{b}.up_conv.layer"), [inp, out, kernel], out);
        for u in 0..RESIDUAL_DILATIONS.len() {
            t.residual_unit(&format!("{b}.convs.{u}"), out, out, c.res_kernel_size);
        }
    }
    if let Some(post) = &names.post {
        t.conv(
            &format!("{SQ}.{post}.conv"),
            c.init_channel,
            c.init_channel,
            c.default_kernel_size,
        );
        t.prelu(&format!("{SQ}.{post}.activation"));
    }
    let output = format!("{SQ}.{}", names.output);
    t.weight_norm_conv(
        &output,
        [c.num_bands, c.init_channel, c.default_kernel_size],
        c.num_bands,
    );
}

/// The encoder turns audio into latents; decoding never runs it.
fn scalar_encoder(t: &mut Tensors, c: &CodecConfig) {
    let (k, init) = (c.default_kernel_size, c.init_channel);
    t.weight_norm_conv(&format!("{SQ}.encoder.0"), [init, c.num_bands, k], init);
    let mut next = 1;
    if c.num_samples > 1 {
        t.conv(&format!("{SQ}.encoder.1.conv"), init, init, k);
        t.prelu(&format!("{SQ}.encoder.1.activation"));
        next = 2;
    }
    for (i, &down_kernel) in c.downsample_kernel_sizes.iter().enumerate() {
        let (inp, out) = (init << i, init << (i + 1));
        let b = format!("{SQ}.encoder.{}", next + i);
        for u in 0..RESIDUAL_DILATIONS.len() {
            let unit_in = if u == 0 { inp } else { out / 2 };
            t.residual_unit(
                &format!("{b}.convs.{u}"),
                unit_in,
                out / 2,
                c.res_kernel_size,
            );
        }
        t.weight_norm_conv(
            &format!("{b}.down_conv.layer"),
            [out, inp, down_kernel],
            out,
        );
        t.prelu(&format!("{b}.down_conv.activation"));
    }
    let last = next + c.downsample_factors.len();
    let top = init << c.downsample_factors.len();
    t.weight_norm_conv(
        &format!("{SQ}.encoder.{last}"),
        [c.latent_hidden_dim, top, k],
        c.latent_hidden_dim,
    );
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn real_layout() -> BTreeMap<String, Vec<usize>> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-checkpoint-layout/heartcodec.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        json["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, t)| {
                let shape = t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize);
                (name.clone(), shape.collect())
            })
            .collect()
    }

    #[test]
    fn default_config_spec_is_exactly_the_real_checkpoint_layout() {
        let spec = codec_spec(&CodecConfig::default());
        let ours: BTreeMap<String, Vec<usize>> = spec
            .required
            .iter()
            .chain(&spec.optional)
            .map(|t| (t.name.clone(), t.shape.clone()))
            .collect();
        assert_eq!(
            ours.len(),
            spec.required.len() + spec.optional.len(),
            "duplicate names"
        );
        let real = real_layout();
        assert_eq!(real.len(), 818);
        let missing: Vec<_> = real.keys().filter(|k| !ours.contains_key(*k)).collect();
        let extra: Vec<_> = ours.keys().filter(|k| !real.contains_key(*k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "missing {missing:?}\nextra {extra:?}"
        );
        for (name, shape) in &real {
            assert_eq!(&ours[name], shape, "{name}");
        }
    }

    #[test]
    fn the_released_config_json_gives_the_same_layout() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-checkpoint-layout/heartcodec.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let config: CodecConfig = serde_json::from_value(json["config_json"].clone()).unwrap();
        assert_eq!(config, CodecConfig::default());
    }
}
