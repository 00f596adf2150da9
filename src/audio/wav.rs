//! WAV files: 48 kHz stereo, 32-bit float (the decoder's own precision, so nothing is lost).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sink::Sink;
use crate::files::{OutputFile, Pending};

/// The codec's output rate: every sink takes 48 kHz stereo.
pub const SAMPLE_RATE: u32 = crate::codec::OUTPUT_SAMPLE_RATE as u32;

pub fn spec() -> hound::WavSpec {
    hound::WavSpec {
        channels: 2,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    }
}

/// `--out`: a WAV written as the audio arrives, into a temporary file beside the target
/// (see [`OutputFile`]). The header is rewritten about once a second of audio, so even a run
/// killed outright leaves a readable file; every stop path calls [`Sink::finish`], which
/// finalizes it and moves it into place — unless no audio was written at all, in which case
/// the target is left as it was.
pub struct WavSink {
    writer: Option<hound::WavWriter<BufWriter<File>>>,
    pending: Option<Pending>,
    path: PathBuf,
    samples: usize,
    unflushed: usize,
}

/// Interleaved samples between header updates: one second of stereo audio.
const FLUSH_EVERY: usize = 2 * SAMPLE_RATE as usize;

impl WavSink {
    /// Opens the output for `path` (`flag` names the option in errors).
    pub fn create(path: &Path, flag: &str) -> Result<Self> {
        let (file, pending) = OutputFile::create(path, flag)?.into_parts();
        let writer = hound::WavWriter::new(BufWriter::new(file), spec())
            .with_context(|| format!("{flag} {}: cannot write the WAV header", path.display()))?;
        Ok(Self {
            writer: Some(writer),
            pending: Some(pending),
            path: path.to_path_buf(),
            samples: 0,
            unflushed: 0,
        })
    }

    fn write_samples(&mut self, interleaved: &[f32]) -> Result<()> {
        let Some(writer) = self.writer.as_mut() else {
            bail!("{}: written after it was finished", self.path.display());
        };
        for &s in interleaved {
            writer.write_sample(s)?;
        }
        self.samples += interleaved.len();
        self.unflushed += interleaved.len();
        if self.unflushed >= FLUSH_EVERY {
            writer.flush()?;
            self.unflushed = 0;
        }
        Ok(())
    }
}

impl Sink for WavSink {
    fn write(&mut self, interleaved: &[f32]) -> Result<()> {
        self.write_samples(interleaved)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn finish(&mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Ok(());
        };
        let pending = self.pending.take();
        writer
            .finalize()
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        match pending {
            // Nothing was generated: whatever the target held stays.
            Some(_) if self.samples == 0 => Ok(()),
            Some(p) => p.commit().map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for WavSink {
    /// A sink dropped without `finish` (a panic, an early return) still keeps its audio.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(path: &Path) -> Vec<f32> {
        let mut reader = hound::WavReader::open(path).unwrap();
        assert_eq!(reader.spec(), spec());
        reader.samples::<f32>().map(|s| s.unwrap()).collect()
    }

    #[test]
    fn the_file_is_readable_while_it_grows_and_exact_once_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.wav");
        let mut sink = WavSink::create(&path, "--out").unwrap();
        let second: Vec<f32> = (0..FLUSH_EVERY).map(|i| (i as f32 * 1e-3).sin()).collect();
        sink.write(&second).unwrap();
        sink.write(&second[..10]).unwrap();
        // Mid-run: the temporary file's header already covers the first second.
        let partial = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".partial"))
            .expect("a temporary file beside the target");
        assert_eq!(
            hound::WavReader::open(&partial).unwrap().len() as usize,
            FLUSH_EVERY
        );
        sink.finish().unwrap();
        let samples = read_all(&path);
        assert_eq!(samples.len(), FLUSH_EVERY + 10);
        assert_eq!(samples[..3], second[..3]);
        assert!(sink.write(&[0.0, 0.0]).is_err());
        assert!(!partial.exists());
    }

    #[test]
    fn a_run_without_audio_leaves_the_old_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wav");
        std::fs::write(&path, b"the user's file").unwrap();
        let mut sink = WavSink::create(&path, "--out").unwrap();
        sink.finish().unwrap();
        drop(WavSink::create(&path, "--out").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"the user's file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Dropped without finish after audio: the audio is kept.
        let mut sink = WavSink::create(&path, "--out").unwrap();
        sink.write(&[0.25, -0.25]).unwrap();
        drop(sink);
        assert_eq!(read_all(&path), vec![0.25, -0.25]);
    }

    #[test]
    fn write_errors_name_the_file() {
        let mut sink = WavSink::create(Path::new("/dev/full"), "--out").unwrap();
        let err = sink
            .write(&vec![0.5; 4 * FLUSH_EVERY])
            .and_then(|()| sink.finish())
            .unwrap_err();
        assert!(format!("{err:#}").contains("/dev/full"), "{err:#}");
        let err = WavSink::create(Path::new("/no/such/dir/a.wav"), "--out")
            .err()
            .unwrap();
        assert!(
            format!("{err:#}").contains("--out /no/such/dir/a.wav"),
            "{err:#}"
        );
    }
}
