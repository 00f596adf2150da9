//! Listening tests as numbers: log-mel spectrograms and distances between recordings, and
//! the comparison of the streaming windows with heartlib's (`heartstream compare-windows`).

pub mod mel;
pub mod windows;
