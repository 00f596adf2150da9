//! WAV files: 48 kHz stereo, 32-bit float (the decoder's own precision, so nothing is lost).

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

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
}
