//! The HeartMuLa language model: text prompt → audio codes, one 80 ms frame per step.

pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod generator;
pub mod kv_cache;
pub mod kv_fp8;
pub mod model;
pub mod projection;
pub mod prompt;
pub mod rope;
pub mod sampling;
pub mod spec;
pub mod tokenizer;
mod transformer;

pub use config::{Flavor, GenConfig, LmConfig};
pub use generator::{FrameGenerator, FrameTrace, GenerationOptions};
pub use kv_cache::KvPrecision;
pub use model::HeartMuLa;
pub use projection::MatrixPrecision;
pub use prompt::Prompt;
pub use sampling::SamplingParams;
pub use tokenizer::TextTokenizer;
