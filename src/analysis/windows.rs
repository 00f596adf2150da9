//! How the streaming windows sound next to heartlib's. The DiT was trained on 29.76 s
//! windows; the stream starts with 0.64 s ones. This decodes the same codes both ways and
//! measures, over each streaming window's span, the SNR and log-mel distance between them —
//! next to the same figures for heartlib's windows decoded twice with other noise, which is
//! how far apart two equally valid decodes are (flow matching starts from noise).

use anyhow::Result;
use candle_core::Tensor;

use super::mel::{log_mel_distance_db, snr_db, MelSpectrogram};
use crate::codec::{
    detokenize, CodeFrames, DetokenizeParams, FlowStream, FlowStreamConfig, GaussianNoise,
    HeartCodec, Join, StreamWindow,
};

/// One streaming window's span, compared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowComparison {
    pub index: usize,
    pub start_s: f64,
    pub end_s: f64,
    /// Latents solved (in-context prefix included).
    pub size: usize,
    /// Streaming vs heartlib's windows.
    pub snr_db: f64,
    pub log_mel_db: f64,
    /// heartlib's windows vs heartlib's windows with other noise.
    pub baseline_snr_db: f64,
    pub baseline_log_mel_db: f64,
}

/// The codes decoded by `FlowStream` with `flow`'s schedule and a `ScalarStream`, as a run
/// streams them: stereo PCM `(2, samples)` and the windows that ran.
pub fn stream_decode(
    codec: &HeartCodec,
    codes: &[Vec<u32>],
    flow: FlowStreamConfig,
    seed: u64,
) -> Result<(Tensor, Vec<StreamWindow>)> {
    let mut stream = FlowStream::new(codec, flow, Box::new(GaussianNoise::new(seed)))?;
    let mut scalar = codec.scalar.stream()?;
    let (mut audio, mut windows) = (Vec::new(), Vec::new());
    let mut take = |stream: &mut FlowStream, end: bool| -> Result<bool> {
        match stream.solve_next(end)? {
            Some(solved) => {
                windows.push(solved.window);
                audio.push(scalar.push(&solved.latents)?);
                Ok(true)
            }
            None => Ok(false),
        }
    };
    for frame in codes {
        stream.push(frame)?;
        while take(&mut stream, false)? {}
    }
    while take(&mut stream, true)? {}
    audio.push(scalar.finish()?);
    Ok((Tensor::cat(&audio, 1)?, windows))
}

/// Compares the streaming schedule `flow` with heartlib's `detokenize` on `codes`.
pub fn compare_windows(
    codec: &HeartCodec,
    codes: &[Vec<u32>],
    flow: FlowStreamConfig,
    seed: u64,
) -> Result<Vec<WindowComparison>> {
    let frames = CodeFrames::from_frames(codes, &codec.config)?;
    let params = DetokenizeParams {
        solver: flow.solver,
        ..DetokenizeParams::default()
    };
    let reference = |seed| -> Result<Vec<f32>> {
        let out = detokenize(
            codec,
            &frames,
            &params,
            &mut GaussianNoise::new(seed),
            Join::Reference,
        )?;
        Ok(out.audio.mean(0)?.to_vec1()?)
    };
    let (ours, windows) = stream_decode(codec, codes, flow, seed)?;
    // The mid channel (L + R) / 2 stands for both.
    let (ours, heartlib, other) = (
        ours.mean(0)?.to_vec1::<f32>()?,
        reference(seed)?,
        reference(seed + 1)?,
    );
    let mel = MelSpectrogram::new(codec.config.sample_rate as u32);
    let per_latent = codec.config.rates().samples_per_latent;
    let len = ours.len().min(heartlib.len()).min(other.len());
    let rate = codec.config.sample_rate as f64;
    Ok(windows
        .iter()
        .filter_map(|w| {
            let (start, end) = (w.start * per_latent, (w.end() * per_latent).min(len));
            (start < end).then(|| WindowComparison {
                index: w.index,
                start_s: start as f64 / rate,
                end_s: end as f64 / rate,
                size: w.size(),
                snr_db: snr_db(&heartlib[start..end], &ours[start..end]),
                log_mel_db: log_mel_distance_db(&mel, &heartlib[start..end], &ours[start..end]),
                baseline_snr_db: snr_db(&heartlib[start..end], &other[start..end]),
                baseline_log_mel_db: log_mel_distance_db(
                    &mel,
                    &heartlib[start..end],
                    &other[start..end],
                ),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};

    use super::*;
    use crate::codec::{CodecPrecision, SolverParams};

    #[test]
    fn every_streaming_window_is_compared_in_order() {
        let config = crate::codec::CodecConfig::tiny();
        let precision = CodecPrecision::uniform(DType::F32);
        let codec = HeartCodec::synthetic(config.clone(), 4, &Device::Cpu, precision).unwrap();
        let codes: Vec<Vec<u32>> = (0..30u32).map(|f| vec![f * 7 % 512; 8]).collect();
        let flow = FlowStreamConfig {
            solver: SolverParams {
                num_steps: 2,
                guidance_scale: 1.25,
            },
            ..FlowStreamConfig::streaming(&config)
        };
        let rows = compare_windows(&codec, &codes, flow, 1).unwrap();
        // 60 latents: windows of 16, 32 and the last 12 new latents.
        let spans: Vec<(f64, f64)> = rows.iter().map(|r| (r.start_s, r.end_s)).collect();
        assert_eq!(spans, vec![(0.0, 0.64), (0.64, 1.92), (1.92, 2.4)]);
        for r in &rows {
            assert!(
                r.snr_db.is_finite() && r.baseline_snr_db.is_finite(),
                "{r:?}"
            );
            assert!(r.log_mel_db > 0.0 && r.baseline_log_mel_db > 0.0, "{r:?}");
        }
    }
}
