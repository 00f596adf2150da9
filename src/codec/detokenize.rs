//! heartlib's offline `HeartCodec.detokenize`: codes → overlapping ~30 s flow-matching
//! windows, each seeded with the previous window's tail → audio, joined either as the
//! reference does (per-window decode, linear cross-fade) or as a continuous stream.

use anyhow::{ensure, Result};
use candle_core::{DType, Tensor};

use super::codes::CodeFrames;
use super::config::WindowGeometry;
use super::euler::SolverParams;
use super::noise::NoiseSource;
use super::HeartCodec;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetokenizeParams {
    /// Window length (heartlib's `duration`): 29.76 s = 372 codes.
    pub window_seconds: f64,
    pub solver: SolverParams,
}

impl DetokenizeParams {
    /// The `(size, prefix)` of the windows `detokenize` solves for `config`: the first
    /// without in-context latents, the rest with the overlap.
    pub fn window_shapes(&self, config: &super::CodecConfig) -> Vec<(usize, usize)> {
        let g = config.window_geometry(self.window_seconds);
        vec![(g.window_latents, 0), (g.window_latents, g.context_latents)]
    }
}

impl Default for DetokenizeParams {
    fn default() -> Self {
        Self {
            window_seconds: super::REFERENCE_WINDOW_SECONDS,
            solver: SolverParams::default(),
        }
    }
}

/// How the windows' latents become one waveform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// heartlib: decode every window on its own (zero-padded at both ends), then cross-fade
    /// the overlaps linearly.
    Reference,
    /// Decode the continuous latent stream `window0 ++ window_k[context..]` in one pass, as
    /// `FlowStream` + `ScalarStream` do: no cross-fade, no edge padding between windows.
    Streaming,
}

/// Every window's latents `(window_latents, latent_dim)` f32, in order.
pub struct FlowWindows {
    pub latents: Vec<Tensor>,
    pub geometry: WindowGeometry,
    /// `codes / 12.5 · 48000`: where the joined audio is cut.
    pub audio_len: usize,
}

pub struct Detokenized {
    /// Stereo PCM `(2, samples)` f32.
    pub audio: Tensor,
    pub windows: FlowWindows,
}

/// heartlib's `detokenize(codes, duration, num_steps, guidance_scale)`, noise drawn from
/// `noise` in the reference's `torch.randn` order.
pub fn detokenize(
    codec: &HeartCodec,
    codes: &CodeFrames,
    params: &DetokenizeParams,
    noise: &mut dyn NoiseSource,
    join: Join,
) -> Result<Detokenized> {
    let windows = flow_windows(codec, codes, params, noise)?;
    let audio = join_windows(codec, &windows, join)?;
    Ok(Detokenized { audio, windows })
}

/// Where the windows start (in codes) and how far the codes are padded.
#[derive(Debug, PartialEq, Eq)]
struct WindowPlan {
    padded_codes: usize,
    starts: Vec<usize>,
}

/// heartlib's padding: fewer codes than one window are repeated to one window; otherwise
/// the codes are repeated up to a whole number of hops plus the overlap, unless
/// `(codes − overlap) % hop == 0` where the reference (mixing units) subtracts the overlap in
/// *latents*. So, as in heartlib, for 104 + k·320 codes the last 52 codes get no window and
/// the audio ends 52 codes early.
fn plan_windows(codes: usize, g: &WindowGeometry) -> WindowPlan {
    let mut padded = codes.max(g.window_codes);
    let hop = g.hop_codes;
    if (padded as i64 - g.context_latents as i64).rem_euclid(hop as i64) > 0 {
        padded = (padded - g.overlap_codes).div_ceil(hop) * hop + g.overlap_codes;
    }
    WindowPlan {
        padded_codes: padded,
        starts: (0..=padded - hop).step_by(hop).collect(),
    }
}

/// The flow-matching half of `detokenize`: the latents of every window.
pub fn flow_windows(
    codec: &HeartCodec,
    codes: &CodeFrames,
    params: &DetokenizeParams,
    noise: &mut dyn NoiseSource,
) -> Result<FlowWindows> {
    codes.require_frames()?;
    let config = &codec.config;
    let g = config.window_geometry(params.window_seconds);
    ensure!(
        g.hop_codes > 0 && g.window_codes > g.overlap_codes,
        "a window of {} s is too short to hop ({} codes)",
        params.window_seconds,
        g.window_codes
    );
    let flow = &codec.flow;
    // Every window has one of two shapes: prepared (captured) once, reused by each window.
    flow.prepare_windows(&params.window_shapes(config), &params.solver)?;
    let (device, dim) = (flow.device(), flow.latent_dim());
    // `first_latent`: the "true latents" of window 0, whose in-context prefix is empty, so
    // they are drawn (keeping the random stream in step) but never read.
    let first_latent = noise
        .draw(&[1, g.window_latents, dim], device, DType::F32)?
        .squeeze(0)?;
    let plan = plan_windows(codes.len(), &g);
    let mut latents: Vec<Tensor> = Vec::with_capacity(plan.starts.len());
    for &start in &plan.starts {
        let window_codes = codes.cyclic(start, g.window_codes);
        let (true_latents, context) = match latents.last() {
            Some(previous) if g.context_latents > 0 => {
                let tail =
                    previous.narrow(0, previous.dim(0)? - g.context_latents, g.context_latents)?;
                // The reference appends fresh noise after the tail; the solver masks it out.
                noise.draw(
                    &[1, g.window_latents - g.context_latents, dim],
                    device,
                    DType::F32,
                )?;
                (tail, g.context_latents)
            }
            _ => (first_latent.clone(), 0),
        };
        let window = flow.inference_codes(
            &window_codes,
            &true_latents,
            g.window_latents,
            context,
            &params.solver,
            noise,
        )?;
        latents.push(window);
    }
    Ok(FlowWindows {
        latents,
        geometry: g,
        audio_len: codes.len() * config.rates().samples_per_frame(),
    })
}

/// The ScalarModel half of `detokenize`: stereo PCM `(2, samples)` f32, cut to `audio_len`.
pub fn join_windows(codec: &HeartCodec, windows: &FlowWindows, join: Join) -> Result<Tensor> {
    let audio = match join {
        Join::Reference => reference_join(codec, windows)?,
        Join::Streaming => {
            let context = windows.geometry.context_latents;
            let mut stream = Vec::with_capacity(windows.latents.len());
            for (w, latents) in windows.latents.iter().enumerate() {
                let skip = if w == 0 { 0 } else { context };
                stream.push(latents.narrow(0, skip, latents.dim(0)? - skip)?);
            }
            codec.scalar.decode(&Tensor::cat(&stream, 0)?)?
        }
    };
    let len = audio.dim(1)?.min(windows.audio_len);
    Ok(audio.narrow(1, 0, len)?)
}

/// Per-window decode, each window's audio cut to `audio_window` samples, overlaps
/// cross-faded: `previous · (1 − ramp) + next · ramp`.
fn reference_join(codec: &HeartCodec, windows: &FlowWindows) -> Result<Tensor> {
    let g = &windows.geometry;
    let overlap = g.audio_overlap;
    let ramp = crossfade_ramp(overlap, codec.flow.device())?;
    let mut pieces = Vec::with_capacity(2 * windows.latents.len() + 1);
    // The previous window's last `overlap` samples, waiting for the next window.
    let mut pending: Option<Tensor> = None;
    for latents in &windows.latents {
        let audio = codec.scalar.decode(latents)?;
        let audio = audio.narrow(1, 0, audio.dim(1)?.min(g.audio_window))?;
        let len = audio.dim(1)?;
        ensure!(
            len >= 2 * overlap,
            "a window of {len} samples cannot cross-fade {overlap} on both ends"
        );
        let body_start = match pending.take() {
            Some(previous) => {
                pieces.push(crossfade(&previous, &audio.narrow(1, 0, overlap)?, &ramp)?);
                overlap
            }
            None => 0,
        };
        pieces.push(audio.narrow(1, body_start, len - overlap - body_start)?);
        pending = Some(audio.narrow(1, len - overlap, overlap)?);
    }
    pieces.extend(pending);
    Ok(Tensor::cat(&pieces, 1)?)
}

/// `np.linspace(0, 1, n)` (f64): `i · (1 / (n − 1))`, the last point exactly 1.
fn crossfade_ramp(n: usize, device: &candle_core::Device) -> Result<Tensor> {
    let step = 1.0 / (n.max(2) - 1) as f64;
    let mut ramp: Vec<f64> = (0..n).map(|i| i as f64 * step).collect();
    if let Some(last) = ramp.last_mut() {
        *last = 1.0;
    }
    Ok(Tensor::from_vec(ramp, (1, n), device)?)
}

/// torch promotes `f32 audio × f64 window` to f64, so the mix is computed in f64 and
/// stored back as f32.
fn crossfade(previous: &Tensor, next: &Tensor, ramp: &Tensor) -> Result<Tensor> {
    let fade_out = (1.0 - ramp)?;
    let mixed = (previous.to_dtype(DType::F64)?.broadcast_mul(&fade_out)?
        + next.to_dtype(DType::F64)?.broadcast_mul(ramp)?)?;
    Ok(mixed.to_dtype(DType::F32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{CodecConfig, REFERENCE_WINDOW_SECONDS};

    fn plan(codes: usize) -> WindowPlan {
        plan_windows(
            codes,
            &CodecConfig::default().window_geometry(REFERENCE_WINDOW_SECONDS),
        )
    }

    #[test]
    fn windows_follow_the_reference_padding() {
        // Short input: one window of repeated codes.
        assert_eq!(
            plan(40),
            WindowPlan {
                padded_codes: 372,
                starts: vec![0]
            }
        );
        assert_eq!(
            plan(372),
            WindowPlan {
                padded_codes: 372,
                starts: vec![0]
            }
        );
        // 376 codes: padded to 692 = 2 windows.
        assert_eq!(
            plan(376),
            WindowPlan {
                padded_codes: 692,
                starts: vec![0, 320]
            }
        );
        assert_eq!(
            plan(1000),
            WindowPlan {
                padded_codes: 1012,
                starts: vec![0, 320, 640]
            }
        );
    }

    #[test]
    fn the_unit_mixing_quirk_drops_the_last_overlap() {
        // (424 − 104) % 320 == 0: no padding, one window, codes 372..424 never decoded.
        assert_eq!(
            plan(424),
            WindowPlan {
                padded_codes: 424,
                starts: vec![0]
            }
        );
        assert_eq!(
            plan(744),
            WindowPlan {
                padded_codes: 744,
                starts: vec![0, 320]
            }
        );
    }

    #[test]
    fn empty_codes_are_an_error() {
        let codec = crate::codec::testing::tiny_codec();
        let codes = CodeFrames::empty(&codec.config);
        let mut noise = crate::codec::GaussianNoise::new(0);
        let err = match detokenize(
            &codec,
            &codes,
            &DetokenizeParams::default(),
            &mut noise,
            Join::Reference,
        ) {
            Err(e) => e,
            Ok(_) => panic!("empty codes decoded"),
        };
        assert!(matches!(
            err.downcast_ref(),
            Some(crate::codec::CodecInputError::NoCodes { num_codebooks: 8 })
        ));
    }

    #[test]
    fn crossfade_ramp_is_numpy_linspace() {
        let r: Vec<Vec<f64>> = crossfade_ramp(5, &candle_core::Device::Cpu)
            .unwrap()
            .to_vec2()
            .unwrap();
        assert_eq!(r[0], vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    }
}
