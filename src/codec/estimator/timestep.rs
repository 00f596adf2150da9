//! Flow-time conditioning (`AdaLayerNormSingleFlow`): a sinusoid of t, an MLP, and the
//! per-block modulation vectors derived from it.

use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::Linear;

use super::flow_linear::FlowLinear;
use crate::codec::arch::FLOW_T_SIZE;
use crate::codec::params::Params;

const MAX_PERIOD: f64 = 10000.0;
/// t ∈ [0, 1] is scaled to the [0, 1000] range of diffusion timesteps.
const TIME_SCALE: f32 = 1000.0;

/// `[cos | sin]` embedding of each timestep, `(n, FLOW_T_SIZE)` f32, evaluated on the host
/// with torch's f32 op order (`exp(-ln(max_period) * i / half)`, then `t * freq * 1000`).
fn sinusoid(timesteps: &[f32], device: &Device) -> Result<Tensor> {
    let half = FLOW_T_SIZE / 2;
    let neg_log_period = -MAX_PERIOD.ln() as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((neg_log_period * i as f32 / half as f32) as f64).exp() as f32)
        .collect();
    let mut values = Vec::with_capacity(timesteps.len() * FLOW_T_SIZE);
    for &t in timesteps {
        let args: Vec<f64> = freqs.iter().map(|&f| (t * f * TIME_SCALE) as f64).collect();
        values.extend(args.iter().map(|a| a.cos() as f32));
        values.extend(args.iter().map(|a| a.sin() as f32));
    }
    Ok(Tensor::from_vec(
        values,
        (timesteps.len(), FLOW_T_SIZE),
        device,
    )?)
}

/// One stack's conditioning for n timesteps.
#[derive(Clone)]
pub struct StackTime {
    /// `(n, 6, dim)`: shift/scale/gate of attention and MLP, before each block's own table.
    pub(super) modulation: Tensor,
    /// `(n, 1, dim)`: the timestep embedding, which modulates the stack's output norm.
    pub(super) embedded: Tensor,
}

/// Conditioning of both transformer stacks for n timesteps (one per batch row, or one
/// broadcast over the batch).
#[derive(Clone)]
pub struct TimeConditioning {
    pub(super) first: StackTime,
    pub(super) second: StackTime,
}

impl TimeConditioning {
    /// The conditioning of timestep `i` alone, to broadcast over a batch.
    pub fn row(&self, i: usize) -> Result<Self> {
        let row = |s: &StackTime| -> Result<StackTime> {
            Ok(StackTime {
                modulation: s.modulation.narrow(0, i, 1)?,
                embedded: s.embedded.narrow(0, i, 1)?,
            })
        };
        Ok(Self {
            first: row(&self.first)?,
            second: row(&self.second)?,
        })
    }

    /// Buffers of one timestep's conditioning (zeros), to be filled by [`Self::copy_row`]:
    /// a captured solver step reads its timestep from fixed addresses.
    pub fn row_buffers(&self) -> Result<Self> {
        let zeros = |s: &StackTime| -> Result<StackTime> {
            Ok(StackTime {
                modulation: s.modulation.narrow(0, 0, 1)?.zeros_like()?,
                embedded: s.embedded.narrow(0, 0, 1)?.zeros_like()?,
            })
        };
        Ok(Self {
            first: zeros(&self.first)?,
            second: zeros(&self.second)?,
        })
    }

    /// Writes timestep `i` into `buffers` (made by [`Self::row_buffers`]) in place.
    pub fn copy_row(&self, i: usize, buffers: &TimeConditioning) -> Result<()> {
        let row = self.row(i)?;
        for (from, to) in [(&row.first, &buffers.first), (&row.second, &buffers.second)] {
            to.modulation
                .slice_set(&from.modulation.contiguous()?, 0, 0)?;
            to.embedded.slice_set(&from.embedded.contiguous()?, 0, 0)?;
        }
        Ok(())
    }
}

/// `AdaLayerNormSingleFlow`: `TimestepEmbedding` (linear, SiLU, linear), then
/// `linear(silu(embedding))` → 6 modulation vectors.
#[derive(Clone)]
pub(super) struct AdaLnSingle {
    linear_1: Linear,
    linear_2: FlowLinear,
    modulation: FlowLinear,
}

impl AdaLnSingle {
    pub fn load(p: &Params) -> Result<Self> {
        let emb = p.at("emb.timestep_embedder");
        Ok(Self {
            linear_1: emb.linear("linear_1", true)?,
            linear_2: FlowLinear::time(&emb, "linear_2")?,
            modulation: FlowLinear::time(p, "linear")?,
        })
    }

    fn forward(&self, sinusoid: &Tensor) -> Result<StackTime> {
        let embedded = self
            .linear_2
            .forward(&self.linear_1.forward(sinusoid)?.silu()?)?;
        let modulation = self.modulation.forward(&embedded.silu()?)?;
        let (n, dim) = embedded.dims2()?;
        Ok(StackTime {
            modulation: modulation.reshape((n, 6, dim))?,
            embedded: embedded.unsqueeze(1)?,
        })
    }
}

/// Builds both stacks' conditioning from one sinusoid (cast to the activation dtype, as
/// `timesteps_proj.to(dtype=hidden_dtype)` does).
pub(super) fn condition(
    timesteps: &[f32],
    first: &AdaLnSingle,
    second: &AdaLnSingle,
    dtype: DType,
    device: &Device,
) -> Result<TimeConditioning> {
    let s = sinusoid(timesteps, device)?.to_dtype(dtype)?;
    Ok(TimeConditioning {
        first: first.forward(&s)?,
        second: second.forward(&s)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_is_cos_then_sin_of_scaled_time() {
        let s: Vec<Vec<f32>> = sinusoid(&[0.0, 0.5], &Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        let half = FLOW_T_SIZE / 2;
        assert!(s[0][..half].iter().all(|&c| c == 1.0) && s[0][half..].iter().all(|&x| x == 0.0));
        // Frequency 0 is 1: the angle is t * 1000.
        assert!((s[1][0] as f64 - 500f64.cos()).abs() < 1e-4);
        assert!((s[1][half] as f64 - 500f64.sin()).abs() < 1e-4);
        // The last frequency is 10000^(-255/256).
        let f = MAX_PERIOD.powf(-((half - 1) as f64) / half as f64);
        assert!((s[1][half - 1] as f64 - (500.0 * f).cos()).abs() < 1e-5);
    }
}
