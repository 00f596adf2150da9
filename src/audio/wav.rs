//! WAV files: 48 kHz stereo, 32-bit float (the decoder's own precision, so nothing is lost).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::sink::Sink;

pub const SAMPLE_RATE: u32 = 48_000;

pub fn spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    }
}

/// Writes stereo PCM `(2, samples)` to `path` in one go.
pub fn write_all(path: &Path, stereo: &Tensor) -> Result<()> {
    let (channels, _) = stereo.dims2()?;
    if channels != 2 {
        bail!("expected stereo PCM (2, samples), got {:?}", stereo.shape());
    }
    let interleaved: Vec<f32> = stereo.to_dtype(DType::F32)?.t()?.flatten_all()?.to_vec1()?;
    let mut writer = hound::WavWriter::create(path, spec())
        .with_context(|| format!("cannot create {}", path.display()))?;
    for s in interleaved {
        writer.write_sample(s)?;
    }
    writer
        .finalize()
        .with_context(|| format!("cannot finish {}", path.display()))
}

/// `--out`: a WAV written as the audio arrives. The header is rewritten about once a second
/// of audio, so even a run killed outright leaves a readable file; every stop path calls
/// [`Sink::finish`], which finalizes it exactly.
pub struct WavSink {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    path: PathBuf,
    unflushed: usize,
}

/// Interleaved samples between header updates: one second of stereo audio.
const FLUSH_EVERY: usize = 2 * SAMPLE_RATE as usize;

impl WavSink {
    /// Creates (or truncates) `path` now, so a bad path fails before any model loads.
    pub fn create(path: &Path) -> Result<Self> {
        let writer = hound::WavWriter::create(path, spec())
            .with_context(|| format!("--out {}: cannot create the WAV file", path.display()))?;
        Ok(Self {
            writer: Some(writer),
            path: path.to_path_buf(),
            unflushed: 0,
        })
    }
}

impl Sink for WavSink {
    fn write(&mut self, interleaved: &[f32]) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            bail!("{}: written after it was finished", self.path.display());
        };
        for &s in interleaved {
            writer.write_sample(s)?;
        }
        self.unflushed += interleaved.len();
        if self.unflushed >= FLUSH_EVERY {
            writer.flush()?;
            self.unflushed = 0;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        match self.writer.take() {
            Some(w) => w
                .finalize()
                .with_context(|| format!("cannot finish {}", self.path.display())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_interleaved_stereo_that_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wav");
        let pcm = Tensor::new(
            &[[0.5f32, -0.25, 0.0], [0.1, 0.2, 0.3]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        write_all(&path, &pcm).unwrap();
        let mut reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.spec(), spec());
        let samples: Vec<f32> = reader.samples::<f32>().map(|s| s.unwrap()).collect();
        assert_eq!(samples, vec![0.5, 0.1, -0.25, 0.2, 0.0, 0.3]);
        let mono = Tensor::zeros((1, 3), DType::F32, &candle_core::Device::Cpu).unwrap();
        assert!(write_all(&path, &mono).is_err());
    }

    #[test]
    fn the_file_is_readable_while_it_grows_and_exact_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let mut sink = WavSink::create(&path).unwrap();
        let second: Vec<f32> = (0..FLUSH_EVERY).map(|i| (i as f32 * 1e-3).sin()).collect();
        sink.write(&second).unwrap();
        sink.write(&second[..10]).unwrap();
        // Mid-run: the header already covers the first second.
        let partial = hound::WavReader::open(&path).unwrap();
        assert_eq!(partial.len() as usize, FLUSH_EVERY);
        sink.finish().unwrap();
        let reader = hound::WavReader::open(&path).unwrap();
        assert_eq!(reader.len() as usize, FLUSH_EVERY + 10);
        assert!(sink.write(&[0.0, 0.0]).is_err());
        let err = WavSink::create(&dir.path().join("no/such/dir/a.wav"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no/such/dir/a.wav"), "{err:#}");
    }
}
