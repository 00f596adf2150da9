//! A log-mel spectrogram and the distances between two recordings that `compare-windows`
//! reports: how far apart two decodes of the same codes sound, not just how far apart
//! their samples are.

use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

/// STFT frame and hop at 48 kHz: 2048 samples (43 ms), 10 ms hop; 128 mel bands.
const FRAME: usize = 2048;
const HOP: usize = 480;
const BANDS: usize = 128;
/// Added before the logarithm: −100 dB of a full-scale sine's power.
const FLOOR: f32 = 1e-10;

/// Log-mel spectrograms of mono signals at one sample rate.
pub struct MelSpectrogram {
    fft: Arc<dyn Fft<f32>>,
    window: Vec<f32>,
    /// `BANDS` triangular filters over the `FRAME / 2 + 1` bins: (first bin, weights).
    filters: Vec<(usize, Vec<f32>)>,
}

fn hz_to_mel(hz: f32) -> f32 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (10f32.powf(mel / 2595.0) - 1.0)
}

impl MelSpectrogram {
    pub fn new(sample_rate: u32) -> Self {
        let fft = FftPlanner::new().plan_fft_forward(FRAME);
        let window = (0..FRAME)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / FRAME as f32).cos())
            .collect();
        let bins = FRAME / 2 + 1;
        let bin_hz = sample_rate as f32 / FRAME as f32;
        let top = hz_to_mel(sample_rate as f32 / 2.0);
        let edges: Vec<f32> = (0..BANDS + 2)
            .map(|i| mel_to_hz(top * i as f32 / (BANDS + 1) as f32) / bin_hz)
            .collect();
        let filters = (0..BANDS)
            .map(|b| {
                let (lo, mid, hi) = (edges[b], edges[b + 1], edges[b + 2]);
                let first = lo.ceil() as usize;
                let last = (hi.floor() as usize).min(bins - 1);
                let weights = (first..=last.max(first))
                    .map(|k| {
                        let k = k as f32;
                        if k <= mid {
                            (k - lo) / (mid - lo).max(1e-6)
                        } else {
                            (hi - k) / (hi - mid).max(1e-6)
                        }
                        .max(0.0)
                    })
                    .collect();
                (first, weights)
            })
            .collect();
        Self {
            fft,
            window,
            filters,
        }
    }

    /// `log10` mel power per frame (`BANDS` values each) of `signal`.
    pub fn log_mel(&self, signal: &[f32]) -> Vec<Vec<f32>> {
        let mut buffer = vec![Complex32::default(); FRAME];
        let frames = signal.len().saturating_sub(FRAME) / HOP + 1;
        (0..frames)
            .map(|f| {
                let start = f * HOP;
                for (i, slot) in buffer.iter_mut().enumerate() {
                    let s = signal.get(start + i).copied().unwrap_or(0.0);
                    *slot = Complex32::new(s * self.window[i], 0.0);
                }
                self.fft.process(&mut buffer);
                self.filters
                    .iter()
                    .map(|(first, weights)| {
                        let power: f32 = weights
                            .iter()
                            .enumerate()
                            .map(|(j, w)| w * buffer[first + j].norm_sqr())
                            .sum();
                        (power + FLOOR).log10()
                    })
                    .collect()
            })
            .collect()
    }
}

/// Signal-to-noise ratio of `test` against `reference`, in dB (∞ when identical).
pub fn snr_db(reference: &[f32], test: &[f32]) -> f64 {
    let (signal, noise) = reference
        .iter()
        .zip(test)
        .fold((0f64, 0f64), |(s, n), (&r, &t)| {
            (s + (r as f64).powi(2), n + ((r - t) as f64).powi(2))
        });
    10.0 * (signal / noise).log10()
}

/// Mean absolute difference of two log-mel spectrograms, in dB (10 × log10 units).
pub fn log_mel_distance_db(mel: &MelSpectrogram, reference: &[f32], test: &[f32]) -> f64 {
    let (a, b) = (mel.log_mel(reference), mel.log_mel(test));
    let (sum, count) = a
        .iter()
        .zip(&b)
        .flat_map(|(x, y)| x.iter().zip(y))
        .fold((0f64, 0usize), |(s, n), (x, y)| {
            (s + (x - y).abs() as f64, n + 1)
        });
    10.0 * sum / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, seconds: f32) -> Vec<f32> {
        (0..(48_000.0 * seconds) as usize)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * hz * i as f32 / 48_000.0).sin())
            .collect()
    }

    #[test]
    fn a_tone_lands_in_the_band_of_its_frequency() {
        let mel = MelSpectrogram::new(48_000);
        let spectrum = &mel.log_mel(&tone(1000.0, 0.2))[3];
        let loudest = (0..BANDS)
            .max_by(|&a, &b| spectrum[a].total_cmp(&spectrum[b]))
            .unwrap();
        let band_hz = mel_to_hz(hz_to_mel(24_000.0) * (loudest + 1) as f32 / (BANDS + 1) as f32);
        assert!(
            (band_hz - 1000.0).abs() < 150.0,
            "band {loudest} at {band_hz} Hz"
        );
    }

    /// Deterministic white noise: power in every band.
    fn noise(seconds: f32) -> Vec<f32> {
        let mut state = 12345u32;
        (0..(48_000.0 * seconds) as usize)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    }

    #[test]
    fn distances_grow_with_the_difference() {
        let mel = MelSpectrogram::new(48_000);
        let a = noise(0.5);
        assert!(snr_db(&a, &a).is_infinite());
        assert_eq!(log_mel_distance_db(&mel, &a, &a), 0.0);
        let quieter: Vec<f32> = a.iter().map(|s| s * 0.5).collect();
        // Half the amplitude: 6 dB of SNR and 6 dB in every band.
        assert!((snr_db(&a, &quieter) - 6.02).abs() < 0.01);
        let d = log_mel_distance_db(&mel, &a, &quieter);
        assert!((d - 6.02).abs() < 0.05, "{d}");
        let tonal = tone(3000.0, 0.5);
        assert!(log_mel_distance_db(&mel, &a, &tonal) > d);
    }
}
