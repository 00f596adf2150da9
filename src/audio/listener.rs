//! A listener simulated against the wall clock, for benchmarks on machines without audio:
//! it starts playing at the first sample and plays 48 kHz from then on. Each time the audio
//! arrives later than that listener needs it, it is an underrun (and the listener waits
//! for it, as a device that re-buffers would).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::sink::Sink;
use super::wav::SAMPLE_RATE;

/// Records when each piece of audio arrived.
pub struct ListenerSink {
    arrivals: Arc<Mutex<Vec<(Instant, usize)>>>,
}

/// The arrivals a [`ListenerSink`] recorded.
#[derive(Clone, Default)]
pub struct Arrivals(Arc<Mutex<Vec<(Instant, usize)>>>);

impl ListenerSink {
    pub fn new() -> (Self, Arrivals) {
        let arrivals = Arrivals::default();
        let sink = Self {
            arrivals: arrivals.0.clone(),
        };
        (sink, arrivals)
    }
}

impl Sink for ListenerSink {
    fn write(&mut self, interleaved: &[f32]) -> anyhow::Result<()> {
        let frames = interleaved.len() / 2;
        self.arrivals
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((Instant::now(), frames));
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl Arrivals {
    /// Underruns of a listener that starts with the first sample.
    pub fn underruns(&self) -> u64 {
        let arrivals = self.0.lock().unwrap_or_else(|e| e.into_inner());
        count_underruns(&arrivals)
    }
}

fn count_underruns(arrivals: &[(Instant, usize)]) -> u64 {
    let Some(&(first, _)) = arrivals.first() else {
        return 0;
    };
    // The moment the listener will have played everything received so far.
    let mut runs_dry = first;
    let mut underruns = 0;
    for &(at, frames) in arrivals {
        if at > runs_dry {
            underruns += u64::from(at != first);
            runs_dry = at;
        }
        runs_dry += std::time::Duration::from_secs_f64(frames as f64 / SAMPLE_RATE as f64);
    }
    underruns
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn late_audio_is_an_underrun_and_early_audio_is_not() {
        let t0 = Instant::now();
        let second = SAMPLE_RATE as usize;
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 1 s of audio, the next second arrives at 0.5 s: in time.
        assert_eq!(count_underruns(&[(at(0), second), (at(500), second)]), 0);
        // The next second arrives at 1.5 s: the listener ran dry once, then waited.
        let late = [(at(0), second), (at(1500), second), (at(2400), second)];
        assert_eq!(count_underruns(&late), 1);
        assert_eq!(count_underruns(&[]), 0);
    }
}
