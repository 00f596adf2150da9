//! heartlib's fixed-step Euler solver (`FlowMatching.solve_euler`) with classifier-free
//! guidance, reproduced to the f32 rounding of its time accumulation.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::estimator::{Estimator, RopeTables, TimeConditioning};

/// How many Euler steps, and how strongly the code condition is enforced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolverParams {
    pub num_steps: usize,
    /// CFG weight: v = v_uncond + g · (v_cond − v_uncond); at or below 1 the solver runs the
    /// conditional branch alone, as the reference does.
    pub guidance_scale: f64,
}

impl Default for SolverParams {
    /// `HeartCodec.detokenize`'s defaults.
    fn default() -> Self {
        Self {
            num_steps: 10,
            guidance_scale: 1.25,
        }
    }
}

/// Asked between Euler steps whether a solve is still wanted: a stopped run must not wait
/// for a window of many steps to finish.
#[derive(Clone, Default)]
pub struct Cancel(Option<Arc<dyn Fn() -> bool + Send + Sync>>);

impl Cancel {
    /// Cancels once `cancelled` returns true.
    pub fn when(cancelled: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(cancelled)))
    }

    fn check(&self) -> Result<(), Cancelled> {
        match &self.0 {
            Some(cancelled) if cancelled() => Err(Cancelled),
            _ => Ok(()),
        }
    }
}

/// A solve ended early by its [`Cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the flow-matching solve was cancelled")]
pub struct Cancelled;

/// `torch.linspace(0, 1, steps + 1)` in f32, with the CPU kernel's formula: the first half
/// counts up from 0, the second half down from 1.
fn time_grid(num_steps: usize) -> Vec<f32> {
    let points = num_steps + 1;
    let step = 1f32 / num_steps as f32;
    let halfway = points / 2;
    (0..points)
        .map(|i| {
            if i < halfway {
                step * i as f32
            } else {
                1f32 - step * (points - i - 1) as f32
            }
        })
        .collect()
}

/// `(t, dt)` of every step as `solve_euler` produces them: `t` accumulates `t + dt` in f32
/// and `dt` is re-derived from the grid, `t_span[step + 1] - t`.
fn schedule(num_steps: usize) -> Vec<(f32, f32)> {
    let grid = time_grid(num_steps);
    let (mut t, mut dt) = (grid[0], grid[1] - grid[0]);
    let mut steps = Vec::with_capacity(num_steps);
    for step in 1..=num_steps {
        steps.push((t, dt));
        t += dt;
        if step < num_steps {
            dt = grid[step + 1] - t;
        }
    }
    steps
}

/// One window's ODE: `(1, frames, channels)` f32 noise and in-context latents (zero past
/// the prefix), and the code condition μ `(1, frames, dim)`.
pub(super) struct Window<'a> {
    pub noise: &'a Tensor,
    pub incontext: &'a Tensor,
    pub prefix: usize,
    pub mu: &'a Tensor,
}

/// What fixes the work of one Euler step: windows of the same shape run the same kernels,
/// so one captured step serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepShape {
    pub frames: usize,
    pub prefix: usize,
    /// The CFG weight's bits (`None`: the conditional branch alone).
    guidance: Option<u64>,
}

impl StepShape {
    pub fn new(frames: usize, prefix: usize, params: &SolverParams) -> Self {
        Self {
            frames,
            prefix,
            guidance: (params.guidance_scale > 1.0).then(|| params.guidance_scale.to_bits()),
        }
    }

    fn guidance(&self) -> Option<f64> {
        self.guidance.map(f64::from_bits)
    }
}

/// Everything one Euler step reads and writes, at addresses that stay fixed for a window
/// shape, so the step can be captured once and replayed (see `step_graphs`). Per step the
/// host only copies the step's scalars and timestep conditioning in; per window, its
/// inputs.
pub(super) struct StepBuffers {
    pub shape: StepShape,
    /// `(1, frames, channels)` f32: the state, updated in place by each step.
    pub x: Tensor,
    noise: Tensor,
    incontext: Tensor,
    /// `(batch, frames, channels + dim)` in the estimator's dtype: each CFG row's
    /// in-context latents and code condition (row 0 unconditional, μ = 0).
    condition: Tensor,
    /// f32 `[noise weight, t, dt]` of the current step.
    scalars: Tensor,
    time: TimeConditioning,
    rope: RopeTables,
    dtype: DType,
}

impl StepBuffers {
    pub fn new(estimator: &Estimator, shape: StepShape, dims: (usize, usize)) -> Result<Self> {
        let (channels, cond_dim) = dims;
        let (dtype, device) = (estimator.dtype(), estimator.device());
        let batch = if shape.guidance.is_some() { 2 } else { 1 };
        let latents = || Tensor::zeros((1, shape.frames, channels), DType::F32, device);
        Ok(Self {
            x: latents()?,
            noise: latents()?,
            incontext: latents()?,
            condition: Tensor::zeros((batch, shape.frames, channels + cond_dim), dtype, device)?,
            scalars: Tensor::zeros(3, DType::F32, device)?,
            time: estimator.time_conditioning(&[0.0])?.row_buffers()?,
            rope: estimator.rope(shape.frames)?,
            shape,
            dtype,
        })
    }

    /// Copies a window's inputs in and starts the state at its noise.
    pub fn load(&self, w: &Window) -> Result<()> {
        let condition = match self.shape.guidance {
            Some(_) => {
                let incontext = Tensor::cat(&[w.incontext, w.incontext], 0)?;
                let mu = Tensor::cat(&[&w.mu.zeros_like()?, w.mu], 0)?;
                Tensor::cat(&[&incontext.to_dtype(self.dtype)?, &mu], 2)?
            }
            None => Tensor::cat(&[&w.incontext.to_dtype(self.dtype)?, w.mu], 2)?,
        };
        self.condition.slice_set(&condition.contiguous()?, 0, 0)?;
        self.noise.slice_set(w.noise, 0, 0)?;
        self.incontext.slice_set(w.incontext, 0, 0)?;
        self.x.slice_set(w.noise, 0, 0)?;
        Ok(())
    }

    /// Selects step `i` of `table` (rows `[noise weight, t, dt]`) and of `time`.
    fn set_step(&self, table: &Tensor, time: &TimeConditioning, i: usize) -> Result<()> {
        self.scalars.slice_set(&table.get(i)?, 0, 0)?;
        time.copy_row(i, &self.time)?;
        Ok(())
    }

    /// One Euler step, `x ← x + dt · v(x, t)`, reading and writing only these buffers.
    pub fn step(&self, estimator: &Estimator) -> Result<()> {
        let scalar = |i: usize| self.scalars.narrow(0, i, 1);
        let p = self.shape.prefix;
        // The prefix follows the straight path from its noise to the known latents:
        // x[:, :p] = (1 − (1 − 1e-6)·t)·noise[:, :p] + t·incontext[:, :p].
        let x = if p == 0 {
            self.x.clone()
        } else {
            let path = (self.noise.narrow(1, 0, p)?.broadcast_mul(&scalar(0)?)?
                + self.incontext.narrow(1, 0, p)?.broadcast_mul(&scalar(1)?)?)?;
            replace_prefix(&self.x, &path, p)?
        };
        let batch = match self.shape.guidance {
            Some(_) => Tensor::cat(&[&x, &x], 0)?,
            None => x.clone(),
        };
        let input = Tensor::cat(&[&batch.to_dtype(self.dtype)?, &self.condition], 2)?;
        let v = estimator
            .forward(&input, &self.time, &self.rope)?
            .to_dtype(DType::F32)?;
        let v = match self.shape.guidance() {
            Some(g) => {
                let uncond = v.narrow(0, 0, 1)?;
                let cond = v.narrow(0, 1, 1)?;
                (&uncond + (cond - &uncond)?.affine(g, 0.0)?)?
            }
            None => v,
        };
        let next = (x + v.broadcast_mul(&scalar(2)?)?)?;
        self.x.slice_set(&next, 0, 0)?;
        Ok(())
    }
}

/// `[noise weight, t, dt]` of every step, `(steps, 3)` f32 on `device`.
fn step_table(steps: &[(f32, f32)], device: &candle_core::Device) -> Result<Tensor> {
    let rows: Vec<f32> = steps
        .iter()
        .flat_map(|&(t, dt)| [1f32 - (1f64 - 1e-6) as f32 * t, t, dt])
        .collect();
    Ok(Tensor::from_vec(rows, (steps.len(), 3), device)?)
}

/// How a solve runs its steps: on buffers of its own, eagerly, or on captured ones.
pub(super) trait StepRunner {
    fn buffers(&self) -> &StepBuffers;
    fn run_step(&self, estimator: &Estimator) -> Result<()>;
}

impl StepRunner for StepBuffers {
    fn buffers(&self) -> &StepBuffers {
        self
    }

    fn run_step(&self, estimator: &Estimator) -> Result<()> {
        self.step(estimator)
    }
}

/// Integrates from the noise to latents, `(1, frames, channels)` f32, running each step
/// on `runner`, whose buffers have the window's shape.
pub(super) fn solve(
    estimator: &Estimator,
    w: &Window,
    params: &SolverParams,
    runner: &dyn StepRunner,
    cancel: &Cancel,
) -> Result<Tensor> {
    anyhow::ensure!(
        params.num_steps > 0,
        "the flow solver needs at least one step"
    );
    let steps = schedule(params.num_steps);
    let times: Vec<f32> = steps.iter().map(|&(t, _)| t).collect();
    // Everything that does not depend on x is built once per window, outside the loop.
    let time = estimator.time_conditioning(&times)?;
    let table = step_table(&steps, estimator.device())?;
    let buffers = runner.buffers();
    buffers.load(w)?;
    for i in 0..steps.len() {
        cancel.check()?;
        buffers.set_step(&table, &time, i)?;
        runner.run_step(estimator)?;
    }
    // The prefix is returned as the in-context latents themselves.
    replace_prefix(&buffers.x.copy()?, w.incontext, w.prefix)
}

fn replace_prefix(x: &Tensor, prefix: &Tensor, n: usize) -> Result<Tensor> {
    if n == 0 {
        return Ok(x.clone());
    }
    let frames = x.dim(1)?;
    Ok(Tensor::cat(
        &[&prefix.narrow(1, 0, n)?, &x.narrow(1, n, frames - n)?],
        1,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_step_grid_matches_torch_linspace_bits() {
        // torch.linspace(0, 1, 11) (float32) printed with full precision.
        let grid = time_grid(10);
        let expected = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0];
        for (g, e) in grid.iter().zip(expected) {
            assert!((g - e).abs() < 1e-7);
        }
        // The first half counts up from 0, the second half down from 1.
        assert_eq!(grid[3], 0.1f32 * 3.0);
        assert_eq!(grid[7], 1.0 - 0.1f32 * 3.0);
        assert_eq!(grid[10], 1.0);
    }

    #[test]
    fn accumulated_time_ends_at_one() {
        let steps = schedule(10);
        assert_eq!(steps.len(), 10);
        assert_eq!(steps[0], (0.0, 0.1));
        let (t, dt) = steps[9];
        assert!((t + dt - 1.0).abs() < 1e-6);
        for (i, &(t, _)) in steps.iter().enumerate() {
            assert!((t - i as f32 / 10.0).abs() < 1e-6);
        }
    }
}
