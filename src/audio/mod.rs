//! Audio output: PCM formats and the sinks a run writes to.

pub mod wav;
