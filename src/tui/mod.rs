//! The front end's views of a run: a ratatui screen on a terminal, plain progress lines
//! otherwise. Both are [`Watcher`]s of the engine's run supervisor; `q`, Esc or Ctrl-C stop
//! the run.

mod terminal;
mod view;

use std::time::{Duration, Instant};

use anyhow::Result;
use crossbeam_channel::Receiver;

use crate::engine::RunInfo;
use crate::pipeline::{Event, Snapshot, Watcher};

pub use self::view::render;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// The full-screen UI on stderr.
    Screen,
    /// A line on stderr every second.
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

    /// The watcher that shows a run this way.
    pub fn watcher(self, info: &RunInfo) -> Result<Box<dyn Watcher>> {
        Ok(match self {
            Display::Screen => Box::new(ScreenWatcher {
                screen: terminal::Screen::enter()?,
                info: info.clone(),
            }),
            Display::Lines => Box::new(Lines::default()),
        })
    }
}

/// The full-screen UI: redrawn every tick, keys read between draws.
struct ScreenWatcher {
    screen: terminal::Screen,
    info: RunInfo,
}

impl Watcher for ScreenWatcher {
    fn watch(&mut self, snapshot: &Snapshot, _: &Receiver<Event>, tick: Duration) -> Result<bool> {
        self.screen.draw(&self.info, snapshot)?;
        self.screen.quit_requested(tick)
    }
}

const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A progress line every second on stderr, and a word when a stop begins.
struct Lines {
    last_line: Option<Instant>,
    told_stop: bool,
}

impl Default for Lines {
    fn default() -> Self {
        Self {
            last_line: Some(Instant::now()),
            told_stop: false,
        }
    }
}

impl Watcher for Lines {
    fn watch(
        &mut self,
        snapshot: &Snapshot,
        events: &Receiver<Event>,
        tick: Duration,
    ) -> Result<bool> {
        if self.last_line.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY) {
            eprintln!("{}", snapshot.progress_line());
            self.last_line = Some(Instant::now());
        }
        if snapshot.stopping && !self.told_stop {
            eprintln!(
                "stopping: finishing the audio of the frames already generated \
                 (Ctrl-C again to stop at once)"
            );
            self.told_stop = true;
        }
        // A stage ending (or failing) wakes the loop at once.
        let _ = events.recv_timeout(tick);
        // Ctrl-C reaches a run shown as lines as a signal, not through the watcher.
        Ok(false)
    }
}
