//! The layers of `ScalarModel.decoder`, each carrying its stream state: the look-ahead conv,
//! upsampling blocks of residual units, the PostProcessor and the output conv.

use anyhow::Result;
use candle_core::Tensor;

use super::conv::{CausalConvTranspose, StreamConv, Then};
use crate::codec::arch::{ScalarDecoderNames, RESIDUAL_DILATIONS};
use crate::codec::config::CodecConfig;
use crate::codec::params::Params;

/// `ResidualUnit`: causal dilated conv, PReLU, 1×1 conv, PReLU, plus the input.
#[derive(Clone)]
struct ResidualUnit {
    conv1: StreamConv,
    slope1: f32,
    conv2: StreamConv,
    slope2: f32,
}

impl ResidualUnit {
    fn load(p: &Params, dilation: usize) -> Result<Self> {
        let conv = |name: &str, dilation| -> Result<StreamConv> {
            StreamConv::causal(
                p.weight_norm_kernel(name)?,
                p.tensor(&format!("{name}.bias"))?,
                dilation,
            )
        };
        Ok(Self {
            conv1: conv("conv1", dilation)?,
            slope1: p.prelu_slope("activation1")?,
            conv2: conv("conv2", 1)?,
            slope2: p.prelu_slope("activation2")?,
        })
    }

    fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.step(x, Then::Prelu(self.slope1))?;
        self.conv2.step(&h, Then::PreluPlus(self.slope2, x))
    }

    fn reset(&mut self) -> Result<()> {
        self.conv1.reset()?;
        self.conv2.reset()
    }
}

/// `ResDecoderBlock`: upsample ×stride (causal ConvTranspose1d, no activation), then the
/// residual units with dilations 1, 3, 5, 7, 9.
#[derive(Clone)]
struct DecoderBlock {
    up: CausalConvTranspose,
    units: Vec<ResidualUnit>,
}

impl DecoderBlock {
    fn load(p: &Params, stride: usize) -> Result<Self> {
        let up = "up_conv.layer";
        Ok(Self {
            up: CausalConvTranspose::new(
                p.weight_norm_kernel(up)?,
                p.tensor(&format!("{up}.bias"))?,
                stride,
            )?,
            units: RESIDUAL_DILATIONS
                .iter()
                .enumerate()
                .map(|(u, &dilation)| ResidualUnit::load(&p.at(format!("convs.{u}")), dilation))
                .collect::<Result<_>>()?,
        })
    }

    fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let x = self.up.step(x)?;
        self.units.iter_mut().try_fold(x, |x, unit| unit.step(&x))
    }

    fn reset(&mut self) -> Result<()> {
        self.up.reset()?;
        self.units.iter_mut().try_for_each(ResidualUnit::reset)
    }
}

/// `PostProcessor`: every frame repeated `num_samples` times, causal conv, PReLU.
#[derive(Clone)]
struct PostProcessor {
    repeat: usize,
    conv: StreamConv,
    slope: f32,
}

impl PostProcessor {
    fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t) = x.dims3()?;
        let repeated = x
            .unsqueeze(3)?
            .broadcast_as((b, c, t, self.repeat))?
            .reshape((b, c, t * self.repeat))?;
        self.conv.step(&repeated, Then::Prelu(self.slope))
    }
}

#[derive(Clone)]
pub(super) struct Decoder {
    look_ahead: StreamConv,
    blocks: Vec<DecoderBlock>,
    post: Option<PostProcessor>,
    output: StreamConv,
    latent_channels: usize,
}

impl Decoder {
    pub fn load(p: &Params, c: &CodecConfig) -> Result<Self> {
        let names = ScalarDecoderNames::new(c);
        let conv = |name: &str| -> Result<(Tensor, Tensor)> {
            Ok((
                p.weight_norm_kernel(name)?,
                p.tensor(&format!("{name}.bias"))?,
            ))
        };
        let (w, b) = conv(&names.look_ahead)?;
        let look_ahead = StreamConv::centered(w, b)?;
        let blocks = names
            .blocks
            .iter()
            .zip(&c.upsample_factors)
            .map(|(name, &stride)| DecoderBlock::load(&p.at(name), stride))
            .collect::<Result<_>>()?;
        let post = names
            .post
            .as_ref()
            .map(|name| -> Result<PostProcessor> {
                let p = p.at(name);
                Ok(PostProcessor {
                    repeat: c.num_samples,
                    conv: StreamConv::causal(p.tensor("conv.weight")?, p.tensor("conv.bias")?, 1)?,
                    slope: p.prelu_slope("activation")?,
                })
            })
            .transpose()?;
        let (w, b) = conv(&names.output)?;
        Ok(Self {
            look_ahead,
            blocks,
            post,
            output: StreamConv::causal(w, b, 1)?,
            latent_channels: c.latent_hidden_dim,
        })
    }

    /// Quantized latents `(batch, latent_channels, n)` → audio `(batch, 1, m · samples per
    /// latent)` for the m latents whose look-ahead is now complete.
    pub fn step(&mut self, latents: &Tensor) -> Result<Tensor> {
        let x = self.look_ahead.step(latents, Then::Nothing)?;
        self.upsample(x)
    }

    /// Audio of the latents held back for look-ahead, with the reference's zero padding.
    pub fn flush(&mut self, batch: usize) -> Result<Tensor> {
        let x = self
            .look_ahead
            .flush(batch, self.latent_channels, Then::Nothing)?;
        self.upsample(x)
    }

    /// Back to stream position 0, keeping every layer's state buffers (zeroed), so that a
    /// step captured over them stays valid.
    pub fn reset(&mut self) -> Result<()> {
        self.look_ahead.reset()?;
        self.blocks.iter_mut().try_for_each(DecoderBlock::reset)?;
        if let Some(post) = &mut self.post {
            post.conv.reset()?;
        }
        self.output.reset()
    }

    /// Whether the look-ahead is filled: from now on a step of n latents returns the audio
    /// of n latents, so steps of one size have one shape.
    pub fn is_steady(&self) -> bool {
        self.look_ahead.is_steady()
    }

    fn upsample(&mut self, x: Tensor) -> Result<Tensor> {
        if x.dim(2)? == 0 {
            // Nothing complete yet: leave the causal layers' state untouched.
            let (batch, _, _) = x.dims3()?;
            return Ok(Tensor::zeros((batch, 1, 0), x.dtype(), x.device())?);
        }
        let x = self
            .blocks
            .iter_mut()
            .try_fold(x, |x, block| block.step(&x))?;
        let x = match &mut self.post {
            Some(post) => post.step(&x)?,
            None => x,
        };
        self.output.step(&x, Then::Nothing)
    }
}
