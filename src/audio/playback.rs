//! Live playback through cpal on the default output device.
//!
//! The decoder thread pushes samples into a lock-free ring ([`PlaybackSink`]); the device's
//! callback pops them. Playback starts once `preroll` seconds are buffered (or the song is
//! complete) and re-buffers after an underrun; underruns are counted and filled with
//! silence. 48 kHz stereo f32 is used where the device offers it; otherwise the audio is
//! resampled (rubato) and mapped onto the device's channels.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, SampleFormat, SizedSample, StreamConfig, SupportedStreamConfig};
use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::level::Level;
use super::resample::StereoResampler;
use super::sink::{OutputClosed, Sink};
use super::wav::SAMPLE_RATE;

#[derive(Debug, Clone, Copy)]
pub struct PlaybackOptions {
    /// Audio buffered before playback starts (and after an underrun).
    pub preroll_seconds: f64,
    /// Capacity of the playback ring; a full ring holds generation back.
    pub buffer_seconds: f64,
}

/// Shared between the device callback, the decoder thread and the UI.
#[derive(Debug, Default)]
pub struct PlaybackState {
    played_frames: AtomicU64,
    underruns: AtomicU64,
    /// The decoder has delivered its last samples: an empty ring is the end, not an underrun.
    complete: AtomicBool,
    /// Stopped by the user: the callback plays silence and the sink discards.
    muted: AtomicBool,
    playing: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl PlaybackState {
    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Live counters of the playback.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PlaybackStats {
    pub played_seconds: f64,
    pub underruns: u64,
}

/// Owns the device stream; stays on the thread that made it (cpal streams are not `Send`).
pub struct Playback {
    stream: cpal::Stream,
    state: Arc<PlaybackState>,
    level: Level,
    pub device_name: String,
    pub device_rate: u32,
}

/// The decoder thread's end of the playback ring.
pub struct PlaybackSink {
    ring: HeapProd<f32>,
    resampler: Option<StereoResampler>,
    resampled: Vec<f32>,
    state: Arc<PlaybackState>,
}

impl Playback {
    /// Opens the default output device and starts its stream (silent until pre-rolled).
    pub fn start(options: PlaybackOptions) -> Result<(Playback, PlaybackSink)> {
        silence_alsa_errors();
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| anyhow!("no audio output device on the {} host", host.id().name()))?;
        let device_name = device
            .description()
            .map_or_else(|_| "default".to_string(), |d| d.name().to_string());
        let supported = choose_config(&device)
            .with_context(|| format!("audio device {device_name}: no usable output format"))?;
        let config: StreamConfig = supported.config();
        let rate = config.sample_rate;
        let samples = |seconds: f64| (seconds * rate as f64).ceil() as usize * 2;
        let rb = Arc::new(HeapRb::<f32>::new(
            samples(options.buffer_seconds).max(4096),
        ));
        let level = Level::of(&rb);
        let (prod, cons) = rb.split();
        let state = Arc::new(PlaybackState::default());
        let player = Player {
            ring: cons,
            state: state.clone(),
            preroll: samples(options.preroll_seconds),
            device_channels: config.channels as usize,
            stereo: Vec::new(),
        };
        let stream = build_stream(&device, &config, supported.sample_format(), player)
            .with_context(|| format!("audio device {device_name}: cannot open a stream"))?;
        stream
            .play()
            .with_context(|| format!("audio device {device_name}: cannot start playing"))?;
        let resampler = match rate {
            SAMPLE_RATE => None,
            other => Some(StereoResampler::new(SAMPLE_RATE, other)?),
        };
        let sink = PlaybackSink {
            ring: prod,
            resampler,
            resampled: Vec::new(),
            state: state.clone(),
        };
        let playback = Playback {
            stream,
            state,
            level,
            device_name,
            device_rate: rate,
        };
        Ok((playback, sink))
    }

    pub fn level(&self) -> Level {
        self.level.clone()
    }

    pub fn stats(&self) -> PlaybackStats {
        PlaybackStats {
            played_seconds: self.state.played_frames.load(Ordering::Relaxed) as f64
                / self.device_rate as f64,
            underruns: self.state.underruns.load(Ordering::Relaxed),
        }
    }

    pub fn is_muted(&self) -> bool {
        self.state.muted.load(Ordering::Acquire)
    }

    /// Silences the device now (the user quit).
    pub fn mute(&self) {
        self.state.muted.store(true, Ordering::Release);
    }

    /// After the last samples were handed over: waits until the device has played them,
    /// or `give_up` passes (a device that stopped consuming must not hang the run).
    pub fn drain(&self, give_up: Duration) -> Result<()> {
        let deadline = Instant::now() + give_up;
        while self.level.get().0 > 0 && !self.state.muted.load(Ordering::Acquire) {
            if let Some(failure) = self.state.failed() {
                bail!("audio device {}: {failure}", self.device_name);
            }
            if Instant::now() > deadline {
                bail!(
                    "audio device {} stopped taking samples ({} s of audio left unplayed)",
                    self.device_name,
                    self.level.get().0 / 2 / self.device_rate as usize
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The device's own buffer still holds the last few milliseconds.
        std::thread::sleep(Duration::from_millis(100));
        let _ = self.stream.pause();
        Ok(())
    }
}

/// alsa-lib prints every failed probe of a missing device to stderr before cpal returns the
/// error that becomes our own message: drop its printing (the errors still come back).
#[cfg(target_os = "linux")]
fn silence_alsa_errors() {
    use std::ffi::{c_char, c_int};
    unsafe extern "C" fn ignore(
        _: *const c_char,
        _: c_int,
        _: *const c_char,
        _: c_int,
        _: *const c_char,
    ) {
    }
    type Fixed = unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char);
    // SAFETY: the handler is declared variadic; a callee that reads none of the variadic
    // arguments has the same calling convention on Linux targets (the caller cleans up).
    unsafe {
        let handler = std::mem::transmute::<
            Fixed,
            unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char, ...),
        >(ignore);
        alsa_sys::snd_lib_error_set_handler(Some(handler));
    }
}

#[cfg(not(target_os = "linux"))]
fn silence_alsa_errors() {}

/// 48 kHz f32 stereo if the device offers it, else 48 kHz in any format, else its default.
fn choose_config(device: &cpal::Device) -> Result<SupportedStreamConfig> {
    let ranges: Vec<_> = device.supported_output_configs()?.collect();
    let at_48k = |r: &&cpal::SupportedStreamConfigRange| {
        r.min_sample_rate() <= SAMPLE_RATE && SAMPLE_RATE <= r.max_sample_rate()
    };
    let preferred = ranges
        .iter()
        .filter(at_48k)
        .min_by_key(|r| (r.sample_format() != SampleFormat::F32, r.channels() != 2));
    match preferred {
        Some(r) => Ok(r.with_sample_rate(SAMPLE_RATE)),
        None => Ok(device.default_output_config()?),
    }
}

/// The device callback's state.
struct Player {
    ring: HeapCons<f32>,
    state: Arc<PlaybackState>,
    preroll: usize,
    device_channels: usize,
    /// Stereo scratch, grown once to the device's period.
    stereo: Vec<f32>,
}

impl Player {
    /// Fills one device period of `frames` frames with stereo samples in `self.stereo`.
    fn fill(&mut self, frames: usize) {
        self.stereo.clear();
        self.stereo.resize(2 * frames, 0.0);
        let state = &self.state;
        if state.muted.load(Ordering::Acquire) {
            return;
        }
        let complete = state.complete.load(Ordering::Acquire);
        if !state.playing.load(Ordering::Acquire) {
            if self.ring.occupied_len() < self.preroll && !complete {
                return;
            }
            state.playing.store(true, Ordering::Release);
        }
        let got = self.ring.pop_slice(&mut self.stereo);
        state
            .played_frames
            .fetch_add((got / 2) as u64, Ordering::Relaxed);
        if got < self.stereo.len() && !complete {
            // Ran dry mid-song: silence, and buffer up again before resuming.
            state.underruns.fetch_add(1, Ordering::Relaxed);
            state.playing.store(false, Ordering::Release);
        }
    }

    fn write<T: SizedSample + FromSample<f32>>(&mut self, data: &mut [T]) {
        let channels = self.device_channels.max(1);
        self.fill(data.len() / channels);
        for (out, lr) in data.chunks_mut(channels).zip(self.stereo.chunks(2)) {
            match out {
                [mono] => *mono = T::from_sample(0.5 * (lr[0] + lr[1])),
                [left, right, rest @ ..] => {
                    *left = T::from_sample(lr[0]);
                    *right = T::from_sample(lr[1]);
                    rest.fill(T::from_sample(0.0));
                }
                [] => {}
            }
        }
    }
}

fn build_stream(
    device: &cpal::Device,
    config: &StreamConfig,
    format: SampleFormat,
    player: Player,
) -> Result<cpal::Stream> {
    match format {
        SampleFormat::F32 => stream_of::<f32>(device, config, player),
        SampleFormat::I16 => stream_of::<i16>(device, config, player),
        SampleFormat::I32 => stream_of::<i32>(device, config, player),
        SampleFormat::U16 => stream_of::<u16>(device, config, player),
        other => bail!("sample format {other} is not supported"),
    }
}

fn stream_of<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: &StreamConfig,
    mut player: Player,
) -> Result<cpal::Stream> {
    let state = player.state.clone();
    let on_error = move |err: cpal::Error| {
        match err.kind() {
            cpal::ErrorKind::Xrun => {
                state.underruns.fetch_add(1, Ordering::Relaxed);
            }
            // The device is gone; cpal's stream has stopped.
            cpal::ErrorKind::DeviceNotAvailable | cpal::ErrorKind::StreamInvalidated => {
                *state.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(err.to_string())
            }
            // Anything else (a moved stream, a transient backend error): the stream goes on.
            _ => tracing::warn!("audio device: {err}"),
        }
    };
    let stream = device.build_output_stream(
        *config,
        move |data: &mut [T], _: &cpal::OutputCallbackInfo| player.write(data),
        on_error,
        None,
    )?;
    Ok(stream)
}

impl PlaybackSink {
    /// Pushes device-rate samples, waiting while the ring is full (the decoder is ahead of
    /// the listener: this is where generation is held back to real time).
    fn push(&mut self, mut samples: &[f32]) -> Result<()> {
        while !samples.is_empty() {
            if self.state.muted.load(Ordering::Acquire) {
                return Ok(());
            }
            if let Some(failure) = self.state.failed() {
                return Err(OutputClosed(format!("audio device ({failure})")).into());
            }
            let n = self.ring.push_slice(samples);
            samples = &samples[n..];
            if n == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }
}

impl Sink for PlaybackSink {
    fn write(&mut self, interleaved: &[f32]) -> Result<()> {
        match self.resampler.as_mut() {
            None => self.push(interleaved),
            Some(r) => {
                let mut out = std::mem::take(&mut self.resampled);
                out.clear();
                r.process(interleaved, &mut out)?;
                let result = self.push(&out);
                self.resampled = out;
                result
            }
        }
    }

    fn finish(&mut self) -> Result<()> {
        let result = match self.resampler.as_mut() {
            Some(r) => {
                let mut out = Vec::new();
                r.flush(&mut out).and_then(|()| self.push(&out))
            }
            None => Ok(()),
        };
        self.state.complete.store(true, Ordering::Release);
        result
    }
}
