//! Parity with the official heartlib code, checked against a reference fixture folder: the
//! one named by `HEARTSTREAM_FIXTURE`, or the project's copy of `reference-tiny`. Every
//! dimension comes from the fixture's own files, so fixtures of the same format with other
//! dimensions and seeds pass unchanged. A missing fixture fails; nothing here skips.

#[path = "reference_parity/codec.rs"]
mod codec;
#[path = "reference_parity/fixture.rs"]
mod fixture;
#[path = "reference_parity/fp8.rs"]
mod fp8;
#[path = "reference_parity/kernels.rs"]
mod kernels;
#[path = "reference_parity/lm.rs"]
mod lm;
#[cfg(feature = "cuda")]
#[path = "reference_parity/lm_kernels.rs"]
mod lm_kernels;
#[cfg(feature = "cuda")]
#[path = "reference_parity/loading.rs"]
mod loading;
