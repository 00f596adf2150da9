//! heartstream: HeartMuLa music generation that plays while it is being generated.
//!
//! Model code (`lm`, `codec`) is kept apart from the runtime (`pipeline`, `audio`, `tui`,
//! `cli`); `weights` loads the official checkpoint layout for both models.

pub mod codec;
pub mod weights;
