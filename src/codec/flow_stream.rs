//! `FlowStream`: flow matching as codes arrive. Windows of at most `window` latents, each
//! starting with up to `context` latents of the stream so far as in-context prefix (as
//! heartlib's detokenize re-uses the previous window's tail); the first window is shorter
//! (no prefix) so audio starts early, and the new part of each later window doubles until it
//! reaches `window − context`.

use anyhow::{bail, ensure, Result};
use candle_core::{DType, Tensor};

use super::codes::CodeFrames;
use super::config::{CodecConfig, LATENTS_PER_CODE, REFERENCE_WINDOW_SECONDS};
use super::error::CodecInputError;
use super::euler::{Cancel, SolverParams};
use super::flow::FlowMatching;
use super::noise::NoiseSource;
use super::HeartCodec;

/// Window sizes in latent frames (all even: 2 latents per code).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowStreamConfig {
    /// Largest window, prefix included (heartlib: 744 = 29.76 s).
    pub window_latents: usize,
    /// In-context prefix of every window after the first (heartlib: 104).
    pub context_latents: usize,
    /// The first window (no prefix); ≤ `window_latents`.
    pub first_window_latents: usize,
    pub solver: SolverParams,
    /// At the end of the stream, run the last window at its scheduled size on codes repeated
    /// from the start (heartlib's padding, needed to reproduce its latents); otherwise it
    /// covers just the codes that are left, which costs far less when few are.
    pub pad_last_window: bool,
}

/// heartstream's streaming windows, in seconds: heartlib's window and context, and a short
/// first window so that audio starts early (later windows double up to the full one).
pub const STREAM_WINDOW_SECONDS: f64 = REFERENCE_WINDOW_SECONDS;
pub const STREAM_CONTEXT_SECONDS: f64 = 4.16;
pub const STREAM_FIRST_WINDOW_SECONDS: f64 = 0.64;

impl FlowStreamConfig {
    /// The default streaming windows for `config`'s latent rate, solved with `solver`.
    pub fn streaming(config: &CodecConfig) -> Self {
        let rates = config.rates();
        Self {
            window_latents: rates.latents_in(STREAM_WINDOW_SECONDS),
            context_latents: rates.latents_in(STREAM_CONTEXT_SECONDS),
            first_window_latents: rates.latents_in(STREAM_FIRST_WINDOW_SECONDS),
            solver: SolverParams::default(),
            // Streaming never re-solves a whole window for the last few latents.
            pad_last_window: false,
        }
    }

    /// heartlib's windows: 744-latent windows, 104 latents of context, no short first window.
    pub fn reference(config: &CodecConfig) -> Self {
        let g = config.window_geometry(REFERENCE_WINDOW_SECONDS);
        Self {
            window_latents: g.window_latents,
            context_latents: g.context_latents,
            first_window_latents: g.window_latents,
            solver: SolverParams::default(),
            pad_last_window: true,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.window_latents,
            self.context_latents,
            self.first_window_latents,
        ];
        ensure!(
            sizes.iter().all(|s| s % LATENTS_PER_CODE == 0),
            "FlowStream window sizes must be multiples of {LATENTS_PER_CODE} latents (whole codes): {self:?}"
        );
        ensure!(
            self.context_latents < self.window_latents,
            "the context ({}) must leave room for new latents in a window of {}",
            self.context_latents,
            self.window_latents
        );
        ensure!(
            self.first_window_latents > 0 && self.first_window_latents <= self.window_latents,
            "the first window ({}) must hold 1..={} latents",
            self.first_window_latents,
            self.window_latents
        );
        Ok(())
    }

    /// The `(size, prefix)` of every window of the schedule until it repeats itself: the
    /// shapes every song of this configuration solves (its last window aside).
    pub fn window_shapes(&self) -> Vec<(usize, usize)> {
        let mut shapes: Vec<(usize, usize)> = Vec::new();
        for w in self.schedule() {
            let shape = (w.size(), w.context);
            if shapes.last() == Some(&shape) {
                break;
            }
            shapes.push(shape);
        }
        shapes
    }

    /// The windows in order (an endless schedule: the stream stops at its last code).
    pub fn schedule(&self) -> impl Iterator<Item = StreamWindow> + '_ {
        std::iter::successors(Some(self.first()), move |w| Some(self.after(w)))
    }

    fn first(&self) -> StreamWindow {
        StreamWindow {
            index: 0,
            start: 0,
            context: 0,
            new: self.first_window_latents,
        }
    }

    fn after(&self, w: &StreamWindow) -> StreamWindow {
        let start = w.end();
        StreamWindow {
            index: w.index + 1,
            start,
            context: self.context_latents.min(start),
            new: (2 * w.new).min(self.window_latents - self.context_latents),
        }
    }
}

/// One window of the schedule, in latent frames of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamWindow {
    pub index: usize,
    /// Stream position of the first new latent.
    pub start: usize,
    /// Latents before `start` re-used as in-context prefix.
    pub context: usize,
    /// Latents this window adds to the stream.
    pub new: usize,
}

impl StreamWindow {
    /// Latents the solver runs on: prefix + new.
    pub fn size(&self) -> usize {
        self.context + self.new
    }

    /// Stream position after the window's last latent.
    pub fn end(&self) -> usize {
        self.start + self.new
    }

    /// Code frames that must have arrived before the window can run.
    pub fn codes_needed(&self) -> usize {
        self.end() / LATENTS_PER_CODE
    }

    fn first_code(&self) -> usize {
        (self.start - self.context) / LATENTS_PER_CODE
    }
}

/// One window as it ran.
#[derive(Debug, Clone)]
pub struct SolvedWindow {
    /// The window's new latents `(n, latent_dim)` f32, computed (the device has finished).
    pub latents: Tensor,
    /// The window run (its real size: the last one may be shorter than scheduled).
    pub window: StreamWindow,
    /// Seconds from the start of the solve until its latents were ready.
    pub seconds: f64,
}

pub struct FlowStream {
    flow: FlowMatching,
    config: FlowStreamConfig,
    noise: Box<dyn NoiseSource>,
    codes: CodeFrames,
    next: StreamWindow,
    /// The stream's last `context_latents` latents (fewer at the start), f32.
    tail: Tensor,
    /// Set once a window ran on padded codes: the stream is complete.
    ended: bool,
}

impl FlowStream {
    pub fn new(
        codec: &HeartCodec,
        config: FlowStreamConfig,
        noise: Box<dyn NoiseSource>,
    ) -> Result<Self> {
        config.validate()?;
        let flow = codec.flow.clone();
        let tail = Tensor::zeros((0, flow.latent_dim()), DType::F32, flow.device())?;
        let next = config.first();
        Ok(Self {
            flow,
            config,
            noise,
            codes: CodeFrames::empty(&codec.config),
            next,
            tail,
            ended: false,
        })
    }

    /// Makes every later window's solve stop between Euler steps once `cancel` says so
    /// (the window then fails with [`super::Cancelled`]).
    pub fn set_cancel(&mut self, cancel: Cancel) {
        self.flow.set_cancel(cancel);
    }

    /// Appends one code frame (`num_quantizers` codes).
    pub fn push(&mut self, frame: &[u32]) -> Result<()> {
        if self.ended {
            bail!("FlowStream::push after the stream ended (a window already ran on padded codes)");
        }
        Ok(self.codes.push(frame)?)
    }

    pub fn config(&self) -> &FlowStreamConfig {
        &self.config
    }

    /// The window `next_window` runs next.
    pub fn next_plan(&self) -> StreamWindow {
        self.next
    }

    pub fn codes_received(&self) -> usize {
        self.codes.len()
    }

    /// Latents emitted so far.
    pub fn latents_emitted(&self) -> usize {
        self.next.start
    }

    /// The next window's new latents `(n, latent_dim)` f32 once its codes have arrived, else
    /// `None`. With `end_of_stream`, a window short of codes runs anyway on the codes
    /// repeated from the start (heartlib's padding), at its scheduled size, and only the
    /// latents of real codes (up to 2 · codes) are returned — or, without
    /// `pad_last_window`, runs on just the codes left; `None` once all are out.
    pub fn next_window(&mut self, end_of_stream: bool) -> Result<Option<Tensor>> {
        Ok(self.solve_next(end_of_stream)?.map(|w| w.latents))
    }

    /// As [`next_window`](Self::next_window), with the window that ran and how long it took
    /// (it waits for the device, so the latents are ready for a consumer on another stream).
    pub fn solve_next(&mut self, end_of_stream: bool) -> Result<Option<SolvedWindow>> {
        let started = std::time::Instant::now();
        let total_latents = LATENTS_PER_CODE * self.codes.len();
        if end_of_stream && self.codes.is_empty() {
            return Err(CodecInputError::NoCodes {
                num_codebooks: self.codes.num_codebooks(),
            }
            .into());
        }
        if self.ended || (end_of_stream && self.next.start >= total_latents) {
            return Ok(None);
        }
        let mut w = self.next;
        if end_of_stream && !self.config.pad_last_window {
            w.new = w.new.min(total_latents - w.start);
        }
        let complete = self.codes.len() >= w.codes_needed();
        if !complete && !end_of_stream {
            return Ok(None);
        }
        let window_codes = self
            .codes
            .cyclic(w.first_code(), w.size() / LATENTS_PER_CODE);
        let latents = self.flow.inference_codes(
            &window_codes,
            &self.tail,
            w.size(),
            w.context,
            &self.config.solver,
            self.noise.as_mut(),
        )?;
        let new = latents.narrow(0, w.context, w.new)?;
        let emitted = if complete {
            w.new
        } else {
            total_latents - w.start
        };
        self.ended = !complete;
        self.tail = last_frames(
            &Tensor::cat(&[&self.tail, &new], 0)?,
            self.config.context_latents,
        )?;
        self.next = self.config.after(&w);
        let latents = new.narrow(0, 0, emitted)?;
        latents.device().synchronize()?;
        Ok(Some(SolvedWindow {
            latents,
            window: w,
            seconds: started.elapsed().as_secs_f64(),
        }))
    }
}

fn last_frames(x: &Tensor, n: usize) -> Result<Tensor> {
    let len = x.dim(0)?;
    let n = n.min(len);
    Ok(x.narrow(0, len - n, n)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(first: usize) -> FlowStreamConfig {
        FlowStreamConfig {
            window_latents: 744,
            context_latents: 104,
            first_window_latents: first,
            solver: SolverParams::default(),
            pad_last_window: true,
        }
    }

    #[test]
    fn reference_schedule_is_heartlibs_windows() {
        let c = FlowStreamConfig::reference(&CodecConfig::default());
        assert_eq!(c, config(744));
        let w: Vec<_> = c
            .schedule()
            .take(3)
            .map(|w| (w.start, w.context, w.new, w.size()))
            .collect();
        assert_eq!(
            w,
            vec![
                (0, 0, 744, 744),
                (744, 104, 640, 744),
                (1384, 104, 640, 744)
            ]
        );
    }

    #[test]
    fn the_default_schedule_has_seven_window_shapes() {
        let shapes = FlowStreamConfig::streaming(&CodecConfig::default()).window_shapes();
        let sizes: Vec<usize> = shapes.iter().map(|s| s.0).collect();
        assert_eq!(sizes, vec![16, 48, 112, 232, 360, 616, 744]);
        assert_eq!(
            shapes[1],
            (48, 16),
            "the second window's prefix is all the first window"
        );
        assert!(shapes[3..].iter().all(|s| s.1 == 104));
    }

    #[test]
    fn short_first_window_doubles_up_to_a_full_window() {
        let sizes: Vec<_> = config(64)
            .schedule()
            .take(6)
            .map(|w| (w.context, w.new))
            .collect();
        assert_eq!(
            sizes,
            vec![
                (0, 64),
                (64, 128),
                (104, 256),
                (104, 512),
                (104, 640),
                (104, 640)
            ]
        );
        let needed: Vec<_> = config(64)
            .schedule()
            .take(3)
            .map(|w| w.codes_needed())
            .collect();
        assert_eq!(needed, vec![32, 96, 224]);
    }

    fn tiny_stream(first: usize) -> FlowStream {
        tiny_stream_padded(first, true)
    }

    fn tiny_stream_padded(first: usize, pad_last_window: bool) -> FlowStream {
        let codec = crate::codec::testing::tiny_codec();
        let config = FlowStreamConfig {
            window_latents: 16,
            context_latents: 4,
            first_window_latents: first,
            solver: SolverParams {
                num_steps: 2,
                guidance_scale: 1.25,
            },
            pad_last_window,
        };
        FlowStream::new(
            &codec,
            config,
            Box::new(crate::codec::GaussianNoise::new(3)),
        )
        .unwrap()
    }

    #[test]
    fn windows_run_as_soon_as_their_codes_arrive() {
        let mut s = tiny_stream(4);
        let mut emitted = Vec::new();
        for frame in 0..13u32 {
            s.push(&[frame; 8]).unwrap();
            let needed = s.next_plan().codes_needed();
            match s.next_window(false).unwrap() {
                Some(new) => {
                    assert_eq!(
                        s.codes_received(),
                        needed,
                        "a window ran before or after its codes"
                    );
                    emitted.push(new.dim(0).unwrap());
                }
                None => assert!(s.codes_received() < needed),
            }
        }
        // New parts 4, 8, 12 (= window − context): codes needed 2, 6, 12.
        assert_eq!(emitted, vec![4, 8, 12]);
        // 13 codes = 26 latents; 24 are out, the last window runs on padded codes.
        let last = s.solve_next(true).unwrap().unwrap();
        assert_eq!(last.latents.dim(0).unwrap(), 2);
        assert_eq!(last.window.size(), 4 + 12, "padded to its scheduled size");
        assert!(s.next_window(true).unwrap().is_none());
        assert!(s.push(&[0; 8]).is_err(), "push after the end");
    }

    #[test]
    fn an_unpadded_last_window_covers_only_the_codes_left() {
        let mut s = tiny_stream_padded(4, false);
        for frame in 0..13u32 {
            s.push(&[frame; 8]).unwrap();
            while s.next_window(false).unwrap().is_some() {}
        }
        let last = s.solve_next(true).unwrap().unwrap();
        assert_eq!(last.latents.dim(0).unwrap(), 2);
        let w = last.window;
        assert_eq!((w.context, w.new, w.size()), (4, 2, 6));
        assert!(s.next_window(true).unwrap().is_none());
        assert_eq!(s.latents_emitted(), 26);
    }

    #[test]
    fn bad_codes_are_errors_naming_frame_and_codebook() {
        let mut s = tiny_stream(4);
        let err = s.next_window(true).unwrap_err();
        assert!(
            matches!(err.downcast_ref(), Some(CodecInputError::NoCodes { .. })),
            "{err}"
        );
        s.push(&[1; 8]).unwrap();
        let err = s.push(&[1; 9]).unwrap_err();
        assert!(matches!(
            err.downcast_ref(),
            Some(CodecInputError::WrongCodebookCount {
                frame: 1,
                found: 9,
                expected: 8
            })
        ));
        // An audio EOS id (codebook size + 1) in codebook 3 of frame 1.
        let err = s.push(&[0, 0, 0, 513, 0, 0, 0, 0]).unwrap_err();
        assert!(
            err.to_string().contains("code 513 in frame 1, codebook 3"),
            "{err}"
        );
        assert_eq!(s.codes_received(), 1, "rejected frames are not kept");
    }

    #[test]
    fn odd_or_oversized_windows_are_rejected() {
        assert!(config(63).validate().is_err());
        assert!(config(746).validate().is_err());
        assert!(FlowStreamConfig {
            context_latents: 744,
            ..config(64)
        }
        .validate()
        .is_err());
    }
}
