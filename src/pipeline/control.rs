//! How a run is told to stop, and how its stages report back.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Shared by every stage and by whoever can stop the run (keys, signals, a closed output).
#[derive(Debug, Default)]
pub struct RunControl {
    /// Stop generating new frames; what is in flight still reaches the sinks.
    stop: AtomicBool,
    /// Stop everything now (an error, a closed output, a second Ctrl-C).
    abort: AtomicBool,
    /// Codec stages (flow matching, decoder) computing right now: the LM yields to them
    /// while the listener's lead is short (`lm_stage`).
    codec_busy: AtomicUsize,
}

/// The run was aborted while a stage waited or worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted;

impl fmt::Display for Aborted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the run was aborted")
    }
}

impl std::error::Error for Aborted {}

impl RunControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A graceful stop: no new frames; the audio of the frames already made is finished.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops at once; a second request to stop escalates to this.
    pub fn abort(&self) {
        self.stop();
        self.abort.store(true, Ordering::Release);
    }

    /// The first Ctrl-C stops, the second aborts.
    pub fn interrupt(&self) {
        if self.stop_requested() {
            self.abort();
        } else {
            self.stop();
        }
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Runs `work` as codec work: while it runs, [`codec_busy`](Self::codec_busy) is true.
    pub fn codec_work<T>(&self, work: impl FnOnce() -> T) -> T {
        self.codec_busy.fetch_add(1, Ordering::AcqRel);
        let result = work();
        self.codec_busy.fetch_sub(1, Ordering::AcqRel);
        result
    }

    pub fn codec_busy(&self) -> bool {
        self.codec_busy.load(Ordering::Acquire) > 0
    }

    pub fn check(&self) -> Result<(), Aborted> {
        if self.aborted() {
            Err(Aborted)
        } else {
            Ok(())
        }
    }
}

/// The three stages of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Lm,
    Flow,
    Decode,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Lm => "LM",
            Stage::Flow => "flow matching",
            Stage::Decode => "decoder",
        }
    }
}

/// What stages tell the thread that watches the run.
#[derive(Debug)]
pub enum Event {
    /// A stage has ended normally.
    Finished(Stage),
    /// A stage failed; the run is being aborted.
    Failed(Stage, String),
    /// Every sink behind the decoder has closed (e.g. the reader of stdout went away).
    OutputClosed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_interrupt_aborts() {
        let c = RunControl::new();
        assert!(c.check().is_ok());
        c.interrupt();
        assert!(c.stop_requested() && !c.aborted());
        c.interrupt();
        assert_eq!(c.check(), Err(Aborted));
    }
}
