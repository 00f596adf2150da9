//! heartstream: HeartMuLa music generation that plays while it is being generated.
//!
//! The engine is a library; the `heartstream` command line is one program built on it.
//! Load both models once with [`engine::Engine`], then make songs: each is streamed into
//! sinks ([`audio::Sink`]: a WAV file, a pipe, the sound card) or pulled by the caller as
//! PCM chunks.
//!
//! ```
//! use heartstream::engine::{Engine, EngineConfig, SongRequest};
//! use heartstream::models::{ModelChoice, SyntheticSize};
//!
//! # fn main() -> anyhow::Result<()> {
//! // Random weights of the real architecture, small enough for a CPU (noise, not music);
//! // `ModelChoice::Checkpoint("ckpt".into())` loads heartlib's checkpoint folder instead.
//! let model = ModelChoice::Synthetic { size: SyntheticSize::Tiny, seed: 1 };
//! let engine = Engine::load(EngineConfig::new(model, candle_core::Device::Cpu)?)?;
//!
//! // Six frames (0.48 s) of a song; 48 kHz stereo arrives while later frames are made.
//! let request = SongRequest::new("piano,happy", "[verse] la la la", 6, 42, engine.codec_config());
//! let song = engine.song(&request)?;
//! let mut samples = 0;
//! while let Some(chunk) = song.next_chunk() {
//!     samples += chunk.len() / 2; // interleaved left, right
//!     if samples > 48_000 {
//!         song.stop(); // a listener who has heard enough: the rest is not generated
//!     }
//! }
//! let report = song.finish()?;
//! assert_eq!(report.lm.frame_ms.len(), 6);
//! assert_eq!(samples, 6 * 3840);
//! # Ok(())
//! # }
//! ```
//!
//! Layout, one way down: the front end (`cli`, `tui`) uses the engine (`engine`,
//! `pipeline`, `audio`), which uses the models (`lm`, `codec`) and their weights
//! (`weights`, `checkpoint`). docs/architecture.md walks a frame through it.

pub mod analysis;
pub mod audio;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod codes_file;
pub mod device;
pub mod engine;
pub mod files;
#[cfg(feature = "cuda")]
pub mod gpu;
pub mod hash;
pub mod limits;
pub mod lm;
pub mod memory;
pub mod models;
pub mod pipeline;
pub mod stats;
pub mod tui;
pub mod weights;
