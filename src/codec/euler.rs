//! heartlib's fixed-step Euler solver (`FlowMatching.solve_euler`) with classifier-free
//! guidance, reproduced to the f32 rounding of its time accumulation.

use std::sync::Arc;

use anyhow::Result;
use candle_core::{DType, Tensor};

use super::estimator::Estimator;

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

/// Integrates from the noise to latents, `(1, frames, channels)` f32.
pub(super) fn solve(
    estimator: &Estimator,
    w: &Window,
    params: &SolverParams,
    dtype: DType,
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
    let rope = estimator.rope(w.noise.dim(1)?)?;
    let guided = params.guidance_scale > 1.0;
    let condition = if guided {
        // Batch row 0 unconditional (μ = 0), row 1 conditional, as the reference orders them.
        let incontext = Tensor::cat(&[w.incontext, w.incontext], 0)?;
        let mu = Tensor::cat(&[&w.mu.zeros_like()?, w.mu], 0)?;
        Tensor::cat(&[&incontext.to_dtype(dtype)?, &mu], 2)?
    } else {
        Tensor::cat(&[&w.incontext.to_dtype(dtype)?, w.mu], 2)?
    };

    let mut x = w.noise.clone();
    for (i, &(t, dt)) in steps.iter().enumerate() {
        cancel.check()?;
        x = reset_prefix(&x, w, t)?;
        let batch = if guided {
            Tensor::cat(&[&x, &x], 0)?
        } else {
            x.clone()
        };
        let input = Tensor::cat(&[&batch.to_dtype(dtype)?, &condition], 2)?;
        let v = estimator
            .forward(&input, &time.row(i)?, &rope)?
            .to_dtype(DType::F32)?;
        let v = if guided {
            let uncond = v.narrow(0, 0, 1)?;
            let cond = v.narrow(0, 1, 1)?;
            (&uncond + (cond - &uncond)?.affine(params.guidance_scale, 0.0)?)?
        } else {
            v
        };
        x = (x + v.affine(dt as f64, 0.0)?)?;
    }
    // The prefix is returned as the in-context latents themselves.
    replace_prefix(&x, w.incontext, w.prefix)
}

/// `x[:, :n] = (1 − (1 − 1e-6)·t)·noise[:, :n] + t·incontext[:, :n]`: the prefix follows the
/// straight path from its noise to the known latents.
fn reset_prefix(x: &Tensor, w: &Window, t: f32) -> Result<Tensor> {
    if w.prefix == 0 {
        return Ok(x.clone());
    }
    let noise_weight = 1f32 - (1f64 - 1e-6) as f32 * t;
    let path = (w
        .noise
        .narrow(1, 0, w.prefix)?
        .affine(noise_weight as f64, 0.0)?
        + w.incontext.narrow(1, 0, w.prefix)?.affine(t as f64, 0.0)?)?;
    replace_prefix(x, &path, w.prefix)
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
