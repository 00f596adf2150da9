//! The run supervisor: the loop on the thread that started a run. It shows the run to a
//! [`Watcher`] (the terminal UI, progress lines, a benchmark), turns the watcher's stop into
//! the run's, silences playback on every stop, and gives up on a device that no longer plays.

use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::Receiver;

use super::control::Event;
use super::snapshot::Snapshot;
use super::Pipeline;
use crate::audio::Playback;

/// Shows a run and listens to its user.
pub trait Watcher {
    /// Shows `snapshot`, then waits up to `tick` for the user or for the next stage
    /// `event`; returns whether the user asked to stop.
    fn watch(
        &mut self,
        snapshot: &Snapshot,
        events: &Receiver<Event>,
        tick: Duration,
    ) -> Result<bool>;
}

const TICK: Duration = Duration::from_millis(50);
/// A device that plays nothing for this long after the song is decoded is given up on.
const STALLED_PLAYBACK: Duration = Duration::from_secs(5);

/// Runs until the pipeline is done and the playback (if any) has played what it was given,
/// or has stopped playing.
pub fn supervise(
    pipeline: &Pipeline,
    playback: Option<&Playback>,
    watcher: &mut dyn Watcher,
) -> Result<()> {
    let control = pipeline.control();
    let mut stall = Stall::default();
    loop {
        let snapshot = Snapshot::read(pipeline.metrics(), control, playback.map(Playback::stats));
        if watcher.watch(&snapshot, pipeline.events(), TICK)? {
            control.interrupt();
        }
        // A user's stop, a failed stage and a closed output all stop the run: silence now.
        if control.stop_requested() {
            if let Some(p) = playback {
                p.mute();
            }
        }
        if pipeline.is_done() && stall.playback_over(playback) {
            return Ok(());
        }
    }
}

/// Tracks whether playback has finished or stopped moving.
#[derive(Default)]
struct Stall {
    last: Option<(usize, Instant)>,
}

impl Stall {
    fn playback_over(&mut self, playback: Option<&Playback>) -> bool {
        let Some(p) = playback else {
            return true;
        };
        let (queued, _) = p.level().get();
        if queued == 0 || p.is_muted() {
            return true;
        }
        match self.last {
            Some((q, since)) if q == queued => since.elapsed() > STALLED_PLAYBACK,
            _ => {
                self.last = Some((queued, Instant::now()));
                false
            }
        }
    }
}
