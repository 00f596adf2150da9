//! heartstream: HeartMuLa music generation that plays while it is being generated.
//!
//! Model code (`lm`, `codec`) is kept apart from the runtime (`pipeline`, `audio`, `tui`,
//! `cli`); `weights` loads the official checkpoint layout for both models.

pub mod audio;
pub mod checkpoint;
pub mod cli;
pub mod codec;
pub mod codes_file;
pub mod device;
pub mod files;
pub mod lm;
pub mod models;
pub mod pipeline;
pub mod stats;
pub mod tui;
pub mod weights;
