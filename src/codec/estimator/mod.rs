//! The flow-matching velocity estimator (heartlib's `LlamaTransformer`): a transformer stack
//! of width `heads × head_dim`, a connection projection that re-reads the input, and a second
//! stack of twice the width, both conditioned on the flow time through adaLN-single.

mod attention;
mod block;
mod flow_linear;
mod fused_attention;
mod fused_ops;
mod mlp;
mod norm;
mod project;
mod rope;
mod timestep;

use anyhow::Result;
use candle_core::{DType, Device, Tensor, D};

use self::block::Block;
use self::fused_ops::{fused_kernels_run, MAX_NORM_WIDTH};
use self::norm::{layer_norm, modulate};
use self::project::ProjectLayer;
use self::timestep::{AdaLnSingle, StackTime};
use super::config::CodecConfig;
use super::params::Params;

pub use self::flow_linear::is_fp8_matrix;
pub use self::fused_attention::fused_attention;
pub use self::fused_ops::{gated_add, gated_add_rms_modulate, rms_modulate, swiglu, NormAfter};
use self::rope::Rope;
pub use self::timestep::TimeConditioning;

/// RoPE tables of both stacks for one sequence length (reused by every solver step).
#[derive(Clone)]
pub struct RopeTables {
    first: Rope,
    second: Rope,
}

/// Blocks of one width, their timestep MLP, and the modulated LayerNorm closing the stack.
#[derive(Clone)]
struct Stack {
    blocks: Vec<Block>,
    /// `(blocks, 1, 6, dim)`: each block's learned offsets added to the timestep modulation,
    /// stacked so that one op makes every block's modulation.
    tables: Tensor,
    adaln: AdaLnSingle,
    /// `(1, 2, dim)`: shift and scale offsets of the output norm.
    out_table: Tensor,
    head_dim: usize,
}

impl Stack {
    fn load(
        p: &Params,
        blocks: &str,
        suffix: &str,
        layers: usize,
        heads: usize,
        head_dim: usize,
    ) -> Result<Self> {
        let block = |i: usize| p.at(format!("{blocks}.{i}"));
        let tables = (0..layers)
            .map(|i| block(i).tensor("scale_shift_table"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            blocks: (0..layers)
                .map(|i| Block::load(&block(i), heads, head_dim))
                .collect::<Result<_>>()?,
            tables: Tensor::stack(&tables, 0)?.unsqueeze(1)?,
            adaln: AdaLnSingle::load(&p.at(format!("adaln_single{suffix}")))?,
            out_table: p
                .tensor(&format!("scale_shift_table{suffix}"))?
                .unsqueeze(0)?,
            head_dim,
        })
    }

    fn forward(&self, x: Tensor, time: &StackTime, rope: &Rope) -> Result<Tensor> {
        let all = self.tables.broadcast_add(&time.modulation.unsqueeze(0)?)?;
        let ms = (0..self.blocks.len())
            .map(|i| all.get(i))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = match fused_kernels_run(&x) && x.dim(2)? <= MAX_NORM_WIDTH {
            true => self.blocks_fused(x, &ms, rope)?,
            false => self
                .blocks
                .iter()
                .zip(&ms)
                .try_fold(x, |x, (block, m)| block.forward(&x, m, rope))?,
        };
        let m = self.out_table.broadcast_add(&time.embedded)?;
        modulate(&layer_norm(&x)?, &m.narrow(1, 0, 1)?, &m.narrow(1, 1, 1)?)
    }
}

impl Stack {
    /// The blocks (modulations `ms`) with their chains of small ops fused: each gated residual
    /// computed with the norm that reads it, the next block's first norm included.
    fn blocks_fused(&self, x: Tensor, ms: &[Tensor], rope: &Rope) -> Result<Tensor> {
        let (Some(first), Some(m)) = (self.blocks.first(), ms.first()) else {
            return Ok(x);
        };
        let mut h = first.attention_input(&x, m)?;
        let mut x = x;
        for (i, (block, m)) in self.blocks.iter().zip(ms).enumerate() {
            let next = self.blocks.get(i + 1).zip(ms.get(i + 1));
            let (sum, next_input) = block.forward_fused(&x, &h, m, rope, next)?;
            x = sum;
            // Only the last block has no next input, and nothing reads `h` after it.
            if let Some(input) = next_input {
                h = input;
            }
        }
        Ok(x)
    }
}

#[derive(Clone)]
pub struct Estimator {
    proj_in: ProjectLayer,
    first: Stack,
    connection_proj: ProjectLayer,
    second: Stack,
    proj_out: ProjectLayer,
    dtype: DType,
    device: Device,
}

impl Estimator {
    pub(crate) fn load(p: &Params, c: &CodecConfig) -> Result<Self> {
        let (heads, head_dim) = (c.num_attention_heads, c.attention_head_dim);
        Ok(Self {
            proj_in: ProjectLayer::load(&p.at("proj_in"))?,
            first: Stack::load(p, "transformer_blocks", "", c.num_layers, heads, head_dim)?,
            connection_proj: ProjectLayer::load(&p.at("connection_proj"))?,
            second: Stack::load(
                p,
                "transformer_blocks_2",
                "_2",
                c.num_layers_2,
                heads,
                2 * head_dim,
            )?,
            proj_out: ProjectLayer::load(&p.at("proj_out"))?,
            dtype: p.dtype(),
            device: p.device().clone(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Conditioning for flow times `timesteps` (f32, as the solver accumulates them).
    pub fn time_conditioning(&self, timesteps: &[f32]) -> Result<TimeConditioning> {
        timestep::condition(
            timesteps,
            &self.first.adaln,
            &self.second.adaln,
            self.dtype,
            &self.device,
        )
    }

    pub fn rope(&self, frames: usize) -> Result<RopeTables> {
        Ok(RopeTables {
            first: Rope::new(frames, self.first.head_dim, self.dtype, &self.device)?,
            second: Rope::new(frames, self.second.head_dim, self.dtype, &self.device)?,
        })
    }

    /// Velocity `(batch, frames, out_channels)` for `hidden` = `[x | in-context | condition]`
    /// `(batch, frames, in_channels)`; `time` has one row per batch row or a single row.
    pub fn forward(
        &self,
        hidden: &Tensor,
        time: &TimeConditioning,
        rope: &RopeTables,
    ) -> Result<Tensor> {
        let s = self
            .first
            .forward(self.proj_in.forward(hidden)?, &time.first, &rope.first)?;
        let x = self
            .connection_proj
            .forward(&Tensor::cat(&[hidden, &s], D::Minus1)?)?;
        let x = self.second.forward(x, &time.second, &rope.second)?;
        self.proj_out.forward(&x)
    }
}
