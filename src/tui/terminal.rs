//! The terminal while the screen is up: raw mode and the alternate screen on stderr, both
//! undone on drop (a normal end, an error or a panic), so the shell is always restored.

use std::io::Stderr;
use std::time::Duration;

use anyhow::{Context, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use crate::engine::RunInfo;
use crate::pipeline::Snapshot;

pub struct Screen {
    terminal: Terminal<CrosstermBackend<Stderr>>,
}

impl Screen {
    pub fn enter() -> Result<Self> {
        terminal::enable_raw_mode().context("cannot switch the terminal to raw mode")?;
        let mut stderr = std::io::stderr();
        execute!(stderr, EnterAlternateScreen, cursor::Hide)?;
        let terminal = Terminal::new(CrosstermBackend::new(stderr))?;
        Ok(Self { terminal })
    }

    pub fn draw(&mut self, info: &RunInfo, snap: &Snapshot) -> Result<()> {
        self.terminal.draw(|f| super::render(f, info, snap))?;
        Ok(())
    }

    /// Waits up to `timeout` for a key; true for `q`, Esc or Ctrl-C (in raw mode Ctrl-C
    /// arrives as a key, not a signal).
    pub fn quit_requested(&mut self, timeout: Duration) -> Result<bool> {
        if !event::poll(timeout)? {
            return Ok(false);
        }
        Ok(match event::read()? {
            Event::Key(k) if k.kind == KeyEventKind::Press => {
                matches!(k.code, KeyCode::Char('q') | KeyCode::Esc)
                    || (k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL))
            }
            _ => false,
        })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = terminal::disable_raw_mode();
        let _ = execute!(std::io::stderr(), LeaveAlternateScreen, cursor::Show);
    }
}
