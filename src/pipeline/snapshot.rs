//! One reading of a run's counters, in seconds of audio: what the UI shows, the bench
//! reports and the supervisor acts on.

use std::time::Duration;

use super::control::RunControl;
use super::metrics::{Metrics, StageMeter};
use crate::audio::playback::PlaybackStats;
use crate::audio::Level;

/// Throughput of one stage.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageRate {
    /// Audio seconds this stage has produced.
    pub audio_seconds: f64,
    /// Seconds of compute per second of audio (< 1: faster than real time).
    pub rtf: Option<f64>,
}

impl StageRate {
    fn of(meter: &StageMeter, seconds_per_item: f64) -> Self {
        let audio_seconds = meter.items() as f64 * seconds_per_item;
        let rtf = (audio_seconds > 0.0).then(|| meter.busy_seconds() / audio_seconds);
        Self { audio_seconds, rtf }
    }
}

/// A ring's fill level.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fill {
    pub occupied: usize,
    pub capacity: usize,
}

impl Fill {
    fn of(level: &Option<Level>) -> Option<Fill> {
        level.as_ref().map(|l| {
            let (occupied, capacity) = l.get();
            Fill { occupied, capacity }
        })
    }

    pub fn ratio(&self) -> f64 {
        (self.occupied as f64 / self.capacity.max(1) as f64).clamp(0.0, 1.0)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub elapsed: Duration,
    pub frames: u64,
    pub lm: StageRate,
    pub flow: StageRate,
    pub decode: StageRate,
    pub ttfa: Option<Duration>,
    pub codes_fill: Option<Fill>,
    pub latents_fill: Option<Fill>,
    pub playback_fill: Option<Fill>,
    pub playback: Option<PlaybackStats>,
    /// A stop was asked for and the audio in flight is being finished.
    pub stopping: bool,
}

impl Snapshot {
    pub fn read(metrics: &Metrics, control: &RunControl, playback: Option<PlaybackStats>) -> Self {
        let levels = metrics.levels();
        let rates = metrics.rates;
        Self {
            elapsed: metrics.start.elapsed(),
            frames: metrics.lm.items(),
            lm: StageRate::of(&metrics.lm, rates.seconds_per_frame()),
            flow: StageRate::of(&metrics.flow, rates.seconds_per_latent()),
            decode: StageRate::of(&metrics.decode, rates.seconds_per_sample()),
            ttfa: metrics.ttfa(),
            codes_fill: Fill::of(&levels.codes),
            latents_fill: Fill::of(&levels.latents),
            playback_fill: Fill::of(&levels.playback),
            playback,
            stopping: control.stop_requested() && !control.aborted(),
        }
    }

    /// Wall-clock seconds per second of audio delivered so far.
    pub fn overall_rtf(&self) -> Option<f64> {
        let audio = self.decode.audio_seconds;
        (audio > 0.0).then(|| self.elapsed.as_secs_f64() / audio)
    }

    /// One line for logs and non-terminal stderr.
    pub fn progress_line(&self) -> String {
        let rtf = |r: Option<f64>| r.map_or("-".into(), |r| format!("{r:.3}"));
        let mut line = format!(
            "[{:6.1} s] {} frames · audio {:.1} s · rtf {} (lm {} · flow {} · decode {})",
            self.elapsed.as_secs_f64(),
            self.frames,
            self.decode.audio_seconds,
            rtf(self.overall_rtf()),
            rtf(self.lm.rtf),
            rtf(self.flow.rtf),
            rtf(self.decode.rtf),
        );
        if let Some(t) = self.ttfa {
            line += &format!(" · first audio {:.0} ms", t.as_secs_f64() * 1e3);
        }
        if let Some(p) = self.playback {
            line += &format!(
                " · played {:.1} s · underruns {}",
                p.played_seconds, p.underruns
            );
        }
        line
    }
}
