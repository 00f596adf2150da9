//! Raw PCM for pipes: `--stream-to stdout`, interleaved little-endian samples.

use std::io::{ErrorKind, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Tensor};

use super::sink::{OutputClosed, Sink};

/// `(2, samples)` PCM on any device → interleaved f32 on the host, refusing non-finite
/// samples: a NaN must never reach a file or a speaker as silence or noise.
pub fn interleave(stereo: &Tensor) -> Result<Vec<f32>> {
    let (channels, _) = stereo.dims2()?;
    if channels != 2 {
        bail!("expected stereo PCM (2, samples), got {:?}", stereo.shape());
    }
    let samples: Vec<f32> = stereo.to_dtype(DType::F32)?.t()?.flatten_all()?.to_vec1()?;
    if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
        bail!(
            "the decoder produced a non-finite sample ({} at sample {} of this chunk): the \
             codec's weights or its input are bad, so the output stops here",
            samples[i],
            i / 2
        );
    }
    Ok(samples)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PcmFormat {
    /// 16-bit signed integers (what aplay, sox and ffmpeg expect by default)
    S16le,
    /// 32-bit floats, the decoder's own precision
    F32le,
}

impl PcmFormat {
    pub fn bytes_per_sample(self) -> usize {
        match self {
            PcmFormat::S16le => 2,
            PcmFormat::F32le => 4,
        }
    }

    /// Appends the encoding of `samples` to `out`; s16 clips at full scale.
    pub fn encode(self, samples: &[f32], out: &mut Vec<u8>) {
        match self {
            PcmFormat::S16le => out.extend(samples.iter().flat_map(|&s| {
                ((s.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16).to_le_bytes()
            })),
            PcmFormat::F32le => out.extend(samples.iter().flat_map(|s| s.to_le_bytes())),
        }
    }
}

/// Streams raw PCM to a writer (stdout in the CLI); a broken pipe is [`OutputClosed`].
pub struct PcmSink<W: Write + Send> {
    writer: W,
    format: PcmFormat,
    buffer: Vec<u8>,
    name: String,
}

impl<W: Write + Send> PcmSink<W> {
    pub fn new(writer: W, format: PcmFormat, name: &str) -> Self {
        Self {
            writer,
            format,
            buffer: Vec::new(),
            name: name.to_string(),
        }
    }

    fn map_err(&self, e: std::io::Error) -> anyhow::Error {
        if e.kind() == ErrorKind::BrokenPipe {
            OutputClosed(self.name.clone()).into()
        } else {
            anyhow::Error::new(e).context(format!("writing PCM to {}", self.name))
        }
    }
}

impl PcmSink<std::fs::File> {
    /// `--stream-to stdout`, refused at once where the PCM would go nowhere useful: a
    /// terminal, or a closed standard output (which the Rust runtime silently replaces
    /// with /dev/null, so every write would "succeed").
    pub fn stdout(format: PcmFormat) -> Result<Self> {
        use std::os::fd::AsFd;
        let out = std::io::stdout();
        if out.is_terminal() {
            bail!(
                "--stream-to stdout: standard output is a terminal; pipe it into a player \
                 (… | aplay -f S16_LE -c 2 -r 48000) or use --out FILE.wav"
            );
        }
        if stdout_was_closed() {
            bail!(
                "--stream-to stdout: standard output is closed, so the audio has nowhere to go; \
                 pipe it into a player or a file, or use --out FILE.wav"
            );
        }
        // An unbuffered handle of our own: std's stdout would hide a write error as success.
        let fd = out
            .as_fd()
            .try_clone_to_owned()
            .context("--stream-to stdout: standard output cannot be written")?;
        Ok(Self::new(std::fs::File::from(fd), format, "stdout"))
    }
}

/// Whether fd 1 is the /dev/null that the Rust runtime opens (read-write) in place of a
/// closed standard output. A shell's `>/dev/null` opens it write-only, so it is not mistaken.
fn stdout_was_closed() -> bool {
    // SAFETY: fstat/stat/fcntl only read into the zeroed structs passed; no memory is shared.
    unsafe {
        let mut out: libc::stat = std::mem::zeroed();
        let mut null: libc::stat = std::mem::zeroed();
        if libc::fstat(1, &mut out) != 0 {
            return true;
        }
        let is_null = libc::stat(c"/dev/null".as_ptr(), &mut null) == 0
            && (out.st_mode & libc::S_IFMT) == libc::S_IFCHR
            && out.st_rdev == null.st_rdev;
        let flags = libc::fcntl(1, libc::F_GETFL);
        is_null && flags >= 0 && (flags & libc::O_ACCMODE) == libc::O_RDWR
    }
}

impl<W: Write + Send> Sink for PcmSink<W> {
    fn write(&mut self, interleaved: &[f32]) -> Result<()> {
        self.buffer.clear();
        self.format.encode(interleaved, &mut self.buffer);
        // Flushed per chunk: a reader downstream hears audio as soon as it exists.
        let result = self
            .writer
            .write_all(&self.buffer)
            .and_then(|()| self.writer.flush());
        result.map_err(|e| self.map_err(e))
    }

    fn finish(&mut self) -> Result<()> {
        match self.writer.flush() {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
            other => other.with_context(|| format!("flushing {}", self.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::sink::is_closed;

    #[test]
    fn s16_rounds_and_clips_f32_is_exact() {
        let mut out = Vec::new();
        PcmFormat::S16le.encode(&[0.5, -1.5, 1.0, 0.0], &mut out);
        let v: Vec<i16> = out
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(v, vec![16384, -32767, 32767, 0]);
        out.clear();
        PcmFormat::F32le.encode(&[0.25, -0.75], &mut out);
        assert_eq!(out.len(), 2 * PcmFormat::F32le.bytes_per_sample());
        assert_eq!(f32::from_le_bytes(out[4..8].try_into().unwrap()), -0.75);
    }

    #[test]
    fn interleaving_refuses_non_finite_samples() {
        let dev = candle_core::Device::Cpu;
        let pcm = Tensor::new(&[[0.5f32, 0.25], [-0.5, -0.25]], &dev).unwrap();
        assert_eq!(interleave(&pcm).unwrap(), vec![0.5, -0.5, 0.25, -0.25]);
        let bad = Tensor::new(&[[0.5f32, f32::NAN], [-0.5, -0.25]], &dev).unwrap();
        let err = interleave(&bad).unwrap_err().to_string();
        assert!(err.contains("NaN at sample 1"), "{err}");
        let mono = Tensor::new(&[[0.5f32]], &dev).unwrap();
        assert!(interleave(&mono).is_err());
    }

    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_broken_pipe_is_a_closed_output_not_a_failure() {
        let mut sink = PcmSink::new(ClosedPipe, PcmFormat::S16le, "stdout");
        let err = sink.write(&[0.1, 0.2]).unwrap_err();
        assert!(is_closed(&err), "{err}");
        assert!(sink.finish().is_ok());
    }
}
