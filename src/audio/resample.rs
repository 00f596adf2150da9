//! Sample-rate conversion for audio devices that cannot play 48 kHz (rubato's synchronous
//! FFT resampler: fixed ratio, low delay, no drift to track).

use anyhow::{Context, Result};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

const CHANNELS: usize = 2;
/// Input frames per FFT chunk (~21 ms at 48 kHz).
const CHUNK: usize = 1024;

/// Interleaved stereo in at one rate, out at another, in pieces of any size.
pub struct StereoResampler {
    inner: Fft<f32>,
    /// Input not yet resampled (less than one chunk), interleaved.
    pending: Vec<f32>,
    scratch: Vec<f32>,
}

impl StereoResampler {
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self> {
        let inner = Fft::<f32>::new(
            from_hz as usize,
            to_hz as usize,
            CHUNK,
            CHANNELS,
            FixedSync::Input,
        )
        .with_context(|| format!("cannot resample {from_hz} Hz to {to_hz} Hz"))?;
        let scratch = vec![0.0; CHANNELS * inner.output_frames_max()];
        Ok(Self {
            inner,
            pending: Vec::new(),
            scratch,
        })
    }

    /// Resamples what `input` completes, appending the result to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<()> {
        self.pending.extend_from_slice(input);
        let mut consumed = 0;
        while (self.pending.len() - consumed) / CHANNELS >= self.inner.input_frames_next() {
            consumed += self.run(consumed, None, out)?;
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    /// Resamples the last partial chunk (the rest padded with silence).
    pub fn flush(&mut self, out: &mut Vec<f32>) -> Result<()> {
        let frames = self.pending.len() / CHANNELS;
        if frames > 0 {
            self.run(0, Some(frames), out)?;
        }
        self.pending.clear();
        Ok(())
    }

    /// One chunk from `pending[offset..]`; returns the interleaved samples consumed.
    fn run(&mut self, offset: usize, partial: Option<usize>, out: &mut Vec<f32>) -> Result<usize> {
        let frames = (self.pending.len() - offset) / CHANNELS;
        let input = InterleavedSlice::new(&self.pending[offset..], CHANNELS, frames)?;
        let capacity = self.scratch.len() / CHANNELS;
        let mut output = InterleavedSlice::new_mut(&mut self.scratch, CHANNELS, capacity)?;
        let indexing = Indexing {
            partial_len: partial,
            ..Indexing::new()
        };
        let (frames_in, frames_out) =
            self.inner
                .process_into_buffer(&input, &mut output, Some(&indexing))?;
        out.extend_from_slice(&self.scratch[..frames_out * CHANNELS]);
        Ok(frames_in * CHANNELS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frequency of the strongest zero-crossing rate: crossings / 2 per second.
    fn zero_crossing_hz(mono: &[f32], rate: f64) -> f64 {
        let crossings = mono
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        crossings as f64 / 2.0 / (mono.len() as f64 / rate)
    }

    #[test]
    fn a_tone_keeps_its_pitch_and_length_at_44_1_khz() {
        let seconds = 1.0;
        let n = (48_000.0 * seconds) as usize;
        let tone: Vec<f32> = (0..n)
            .flat_map(|i| {
                let s = (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 48_000.0).sin() * 0.5;
                [s, -s]
            })
            .collect();
        let mut r = StereoResampler::new(48_000, 44_100).unwrap();
        let mut out = Vec::new();
        // Uneven pieces, as the decoder delivers them.
        for piece in tone.chunks(2 * 777) {
            r.process(piece, &mut out).unwrap();
        }
        r.flush(&mut out).unwrap();
        let frames = out.len() / 2;
        assert!(
            frames.abs_diff(44_100) < 2 * CHUNK,
            "{frames} frames for 1 s at 44.1 kHz"
        );
        let left: Vec<f32> = out.chunks(2).map(|f| f[0]).skip(2000).collect();
        let right_is_negated = out.chunks(2).skip(2000).all(|f| (f[0] + f[1]).abs() < 1e-3);
        assert!(right_is_negated, "channels were mixed");
        let hz = zero_crossing_hz(&left[..left.len() - 2000], 44_100.0);
        assert!((hz - 440.0).abs() < 5.0, "pitch moved to {hz} Hz");
    }
}
