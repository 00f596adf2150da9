//! Audio output: PCM formats and the sinks a run writes to.

pub mod level;
pub mod listener;
pub mod pcm;
pub mod playback;
pub mod resample;
pub mod sink;
pub mod wav;

pub use level::Level;
pub use listener::{Arrivals, ListenerSink};
pub use pcm::{interleave, PcmFormat, PcmSink};
pub use playback::{Playback, PlaybackOptions};
pub use sink::{is_closed, OutputClosed, Sink};
pub use wav::WavSink;
