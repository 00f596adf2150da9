//! Where decoded audio goes. Every sink takes interleaved stereo f32 at 48 kHz.

use std::fmt;

/// The reader on the other side has gone away (a closed pipe, a lost audio device):
/// the run ends cleanly instead of failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputClosed(pub String);

impl fmt::Display for OutputClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} closed", self.0)
    }
}

impl std::error::Error for OutputClosed {}

pub trait Sink: Send {
    /// Takes the next samples (interleaved L, R). An [`OutputClosed`] error means the sink
    /// will take no more and the run should stop; any other error is a failure.
    fn write(&mut self, interleaved: &[f32]) -> anyhow::Result<()>;

    /// Flushes and closes; called on every way a run ends.
    fn finish(&mut self) -> anyhow::Result<()>;
}

/// Whether `err` says the output went away rather than failed.
pub fn is_closed(err: &anyhow::Error) -> bool {
    err.downcast_ref::<OutputClosed>().is_some()
}
