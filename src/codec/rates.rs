//! Every time unit of a run, derived from the codec's configuration: LM frames (one code
//! per codebook), latent frames and audio samples. Nothing else in the engine spells out
//! 12.5 frames/s, 80 ms, 40 ms or 1920 samples.

use super::config::{CodecConfig, LATENTS_PER_CODE};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Audio samples per second per channel (48 kHz).
    pub sample_rate: u32,
    /// Audio samples per latent frame per channel (1920).
    pub samples_per_latent: usize,
}

impl Rates {
    pub fn of(config: &CodecConfig) -> Self {
        Self {
            sample_rate: config.sample_rate as u32,
            samples_per_latent: config.upsample_factors.iter().product::<usize>()
                * config.num_samples,
        }
    }

    /// Audio samples per LM frame (3840).
    pub fn samples_per_frame(&self) -> usize {
        LATENTS_PER_CODE * self.samples_per_latent
    }

    /// Latent frames per second (25).
    pub fn latents_per_second(&self) -> f64 {
        self.sample_rate as f64 / self.samples_per_latent as f64
    }

    /// LM frames per second (12.5).
    pub fn frames_per_second(&self) -> f64 {
        self.latents_per_second() / LATENTS_PER_CODE as f64
    }

    pub fn seconds_per_frame(&self) -> f64 {
        1.0 / self.frames_per_second()
    }

    pub fn seconds_per_latent(&self) -> f64 {
        1.0 / self.latents_per_second()
    }

    pub fn seconds_per_sample(&self) -> f64 {
        1.0 / self.sample_rate as f64
    }

    /// Frames of `seconds` of audio, rounded, at least one.
    pub fn frames_in(&self, seconds: f64) -> usize {
        ((seconds * self.frames_per_second()).round() as usize).max(1)
    }

    /// Latent frames of `seconds`, rounded to whole LM frames (two latents each).
    pub fn latents_in(&self, seconds: f64) -> usize {
        (seconds * self.frames_per_second()).round() as usize * LATENTS_PER_CODE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_released_codec_runs_at_12_5_frames_and_48_khz() {
        let r = Rates::of(&CodecConfig::default());
        assert_eq!(
            (r.sample_rate, r.samples_per_latent, r.samples_per_frame()),
            (48_000, 1920, 3840)
        );
        assert_eq!(
            (r.latents_per_second(), r.frames_per_second()),
            (25.0, 12.5)
        );
        assert_eq!(
            (r.seconds_per_frame(), r.seconds_per_latent()),
            (0.08, 0.04)
        );
        assert_eq!(
            (r.frames_in(1.0), r.frames_in(0.01), r.frames_in(20.0)),
            (13, 1, 250)
        );
        assert_eq!(
            (r.latents_in(0.64), r.latents_in(29.76), r.latents_in(4.16)),
            (16, 744, 104)
        );
    }
}
