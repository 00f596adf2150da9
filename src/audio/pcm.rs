//! Raw PCM for pipes: `--stream-to stdout`, interleaved little-endian samples.

use std::io::{ErrorKind, Write};

use anyhow::Context;

use super::sink::{OutputClosed, Sink};

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

impl<W: Write + Send> Sink for PcmSink<W> {
    fn write(&mut self, interleaved: &[f32]) -> anyhow::Result<()> {
        self.buffer.clear();
        self.format.encode(interleaved, &mut self.buffer);
        // Flushed per chunk: a reader downstream hears audio as soon as it exists.
        let result = self
            .writer
            .write_all(&self.buffer)
            .and_then(|()| self.writer.flush());
        result.map_err(|e| self.map_err(e))
    }

    fn finish(&mut self) -> anyhow::Result<()> {
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
