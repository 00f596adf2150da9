//! How full a lock-free ring is, readable from any thread: the pipeline's rings and the
//! playback buffer report their fill through this (for the UI and the run supervisor).

use std::sync::Arc;

use ringbuf::traits::Observer;
use ringbuf::HeapRb;

/// How full a ring is, readable from any thread (for the UI).
#[derive(Clone)]
pub struct Level(Arc<dyn Fn() -> (usize, usize) + Send + Sync>);

impl Level {
    /// The level of `rb`, read through a shared handle while its ends are in use.
    pub fn of<T: Send + 'static>(rb: &Arc<HeapRb<T>>) -> Self {
        let rb = rb.clone();
        Self(Arc::new(move || (rb.occupied_len(), rb.capacity().get())))
    }

    /// `(occupied, capacity)`.
    pub fn get(&self) -> (usize, usize) {
        (self.0)()
    }

    /// Occupied share of the capacity, 0..=1.
    pub fn fraction(&self) -> f64 {
        let (occupied, capacity) = self.get();
        occupied as f64 / capacity.max(1) as f64
    }
}
