//! Live counters of a run, written by the stages and read by the UI and the bench report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::audio::Level;
use crate::codec::Rates;

/// Work done by one stage: items out and time spent computing them (waits excluded).
#[derive(Debug, Default)]
pub struct StageMeter {
    busy_ns: AtomicU64,
    items: AtomicU64,
}

impl StageMeter {
    pub fn record(&self, items: usize, busy: Duration) {
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        self.busy_ns
            .fetch_add(busy.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    pub fn busy_seconds(&self) -> f64 {
        self.busy_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

/// The ring levels a run exposes.
#[derive(Clone, Default)]
pub struct Levels {
    /// LM → flow matching, in code frames.
    pub codes: Option<Level>,
    /// Flow matching → decoder, in latent chunks.
    pub latents: Option<Level>,
    /// Decoder → audio device, in samples.
    pub playback: Option<Level>,
}

pub struct Metrics {
    /// When generation started (after loading).
    pub start: Instant,
    /// Code frames generated.
    pub lm: StageMeter,
    /// Latent frames produced.
    pub flow: StageMeter,
    /// Stereo sample frames (per channel) handed to the sinks.
    pub decode: StageMeter,
    /// The run's time units (items of each meter to seconds of audio).
    pub rates: Rates,
    first_audio_ns: AtomicU64,
    levels: Mutex<Levels>,
}

impl Metrics {
    pub fn new(start: Instant, rates: Rates) -> Self {
        Self {
            start,
            lm: StageMeter::default(),
            flow: StageMeter::default(),
            decode: StageMeter::default(),
            rates,
            first_audio_ns: AtomicU64::new(0),
            levels: Mutex::new(Levels::default()),
        }
    }

    /// Records the moment the first PCM reached the sinks (only the first call counts).
    pub fn first_audio(&self) {
        let ns = self.start.elapsed().as_nanos().max(1) as u64;
        let _ = self
            .first_audio_ns
            .compare_exchange(0, ns, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Time to first audio, once there is audio.
    pub fn ttfa(&self) -> Option<Duration> {
        match self.first_audio_ns.load(Ordering::Acquire) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Seconds of audio delivered beyond what a listener who started at the first sample
    /// has heard by now (0 before the first sample).
    pub fn audio_lead_seconds(&self) -> f64 {
        let Some(ttfa) = self.ttfa() else {
            return 0.0;
        };
        let heard = self.start.elapsed().saturating_sub(ttfa).as_secs_f64();
        let delivered = self.decode.items() as f64 * self.rates.seconds_per_sample();
        (delivered - heard).max(0.0)
    }

    pub fn set_levels(&self, levels: Levels) {
        *self.levels.lock().unwrap_or_else(|e| e.into_inner()) = levels;
    }

    pub fn set_playback_level(&self, level: Level) {
        self.levels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .playback = Some(level);
    }

    pub fn levels(&self) -> Levels {
        self.levels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_audio_counts() {
        let m = Metrics::new(Instant::now(), crate::codec::CodecConfig::default().rates());
        assert_eq!(m.ttfa(), None);
        std::thread::sleep(Duration::from_millis(2));
        m.first_audio();
        let first = m.ttfa().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        m.first_audio();
        assert_eq!(m.ttfa(), Some(first));
        assert!(first >= Duration::from_millis(2));
        m.lm.record(3, Duration::from_millis(500));
        m.lm.record(1, Duration::from_millis(500));
        assert_eq!(m.lm.items(), 4);
        assert!((m.lm.busy_seconds() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn the_lead_is_audio_delivered_minus_audio_heard() {
        let m = Metrics::new(Instant::now(), crate::codec::CodecConfig::default().rates());
        m.decode.record(48_000 * 10, Duration::ZERO);
        assert_eq!(
            m.audio_lead_seconds(),
            0.0,
            "no lead before the first sample"
        );
        m.first_audio();
        let lead = m.audio_lead_seconds();
        assert!(lead > 9.9 && lead <= 10.0, "{lead}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(m.audio_lead_seconds() < lead - 0.19);
    }
}
