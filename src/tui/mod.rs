//! Watching a run from the main thread: a ratatui screen on a terminal, plain progress
//! lines otherwise. `q`, Esc or Ctrl-C stop the run.

mod snapshot;
mod terminal;
mod view;

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::audio::Playback;
use crate::cli::RunInfo;
use crate::pipeline::Pipeline;

pub use self::snapshot::{Fill, Snapshot, StageRate};
pub use self::view::render;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// The full-screen UI on stderr.
    Screen,
    /// A line on stderr every `PROGRESS_EVERY`.
    Lines,
}

impl Display {
    /// The screen when stderr is a terminal, plain lines otherwise.
    pub fn for_stderr() -> Self {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Display::Screen
        } else {
            Display::Lines
        }
    }
}

const TICK: Duration = Duration::from_millis(50);
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// A device that plays nothing for this long after the song is decoded is given up on.
const STALLED_PLAYBACK: Duration = Duration::from_secs(5);

/// Runs until the pipeline is done and the playback (if any) has played what it was given,
/// or the user stops it. `tick` runs every few milliseconds (e.g. to sample GPU memory).
pub fn watch(
    pipeline: &Pipeline,
    info: &RunInfo,
    playback: Option<&Playback>,
    display: Display,
    tick: &mut dyn FnMut(),
) -> Result<()> {
    let mut screen = match display {
        Display::Screen => Some(terminal::Screen::enter()?),
        Display::Lines => None,
    };
    let mut last_line = Instant::now();
    let mut stall = Stall::default();
    let mut told_stop = false;
    loop {
        tick();
        let snap = Snapshot::read(pipeline.metrics(), playback.map(Playback::stats));
        match screen.as_mut() {
            Some(screen) => {
                screen.draw(info, &snap)?;
                if screen.quit_requested(TICK)? {
                    pipeline.control().interrupt();
                }
            }
            None => {
                if last_line.elapsed() >= PROGRESS_EVERY {
                    eprintln!("{}", snap.progress_line());
                    last_line = Instant::now();
                }
                // A stage ending (or failing) wakes the loop at once.
                let _ = pipeline.events().recv_timeout(TICK);
                let control = pipeline.control();
                if control.stop_requested() && !control.aborted() && !told_stop {
                    eprintln!(
                        "stopping: finishing the audio of the frames already generated \
                         (Ctrl-C again to stop at once)"
                    );
                    told_stop = true;
                }
            }
        }
        // A user's stop, a failed stage and a closed output all stop the run: silence now.
        if pipeline.control().stop_requested() {
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
