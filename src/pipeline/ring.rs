//! Blocking ends for the lock-free SPSC rings that join the stages.
//!
//! `ringbuf` gives wait-free push/pop; a stage that finds its ring full (or empty) parks
//! until the other side moves, so a slow consumer holds its producer back (backpressure:
//! bounded memory, nothing dropped). Every wait also watches the run's abort flag, so no
//! stage can hang on a peer that has failed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use ringbuf::traits::{Consumer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

use super::control::{Aborted, RunControl};
use crate::audio::Level;

/// A lost wake-up costs at most this long.
const PARK_TIMEOUT: Duration = Duration::from_millis(5);

/// State both ends share: who to wake, and whether the producer has hung up.
struct Shared {
    producer: OnceLock<Thread>,
    consumer: OnceLock<Thread>,
    closed: AtomicBool,
}

impl Shared {
    fn wake(slot: &OnceLock<Thread>) {
        if let Some(t) = slot.get() {
            t.unpark();
        }
    }
}

pub struct RingSender<T> {
    ring: HeapProd<T>,
    shared: Arc<Shared>,
    control: Arc<RunControl>,
}

pub struct RingReceiver<T> {
    ring: HeapCons<T>,
    shared: Arc<Shared>,
    control: Arc<RunControl>,
}

/// A ring of `capacity` items between two stages of the run `control`.
pub fn ring<T: Send + 'static>(
    capacity: usize,
    control: &Arc<RunControl>,
) -> (RingSender<T>, RingReceiver<T>, Level) {
    let rb = Arc::new(HeapRb::<T>::new(capacity.max(1)));
    let level = Level::of(&rb);
    let (prod, cons) = rb.split();
    let shared = Arc::new(Shared {
        producer: OnceLock::new(),
        consumer: OnceLock::new(),
        closed: AtomicBool::new(false),
    });
    let tx = RingSender {
        ring: prod,
        shared: shared.clone(),
        control: control.clone(),
    };
    let rx = RingReceiver {
        ring: cons,
        shared,
        control: control.clone(),
    };
    (tx, rx, level)
}

impl<T> RingSender<T> {
    /// Pushes `item`, waiting while the ring is full; `Err` once the run is aborted.
    pub fn send(&mut self, mut item: T) -> Result<(), Aborted> {
        self.shared.producer.get_or_init(std::thread::current);
        loop {
            match self.ring.try_push(item) {
                Ok(()) => {
                    Shared::wake(&self.shared.consumer);
                    return Ok(());
                }
                Err(back) => item = back,
            }
            self.control.check()?;
            std::thread::park_timeout(PARK_TIMEOUT);
        }
    }
}

impl<T> Drop for RingSender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        Shared::wake(&self.shared.consumer);
    }
}

impl<T> RingReceiver<T> {
    /// The next item, waiting while the ring is empty; `Ok(None)` once the producer has
    /// hung up and everything it sent has been taken; `Err` once the run is aborted.
    pub fn recv(&mut self) -> Result<Option<T>, Aborted> {
        self.shared.consumer.get_or_init(std::thread::current);
        loop {
            // Read `closed` before popping: an item pushed before the hang-up is never missed.
            let closed = self.shared.closed.load(Ordering::Acquire);
            if let Some(item) = self.ring.try_pop() {
                Shared::wake(&self.shared.producer);
                return Ok(Some(item));
            }
            if closed {
                return Ok(None);
            }
            self.control.check()?;
            std::thread::park_timeout(PARK_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ring_holds_its_producer_back_and_loses_nothing() {
        let control = RunControl::new();
        let (mut tx, mut rx, level) = ring::<u32>(3, &control);
        let producer = std::thread::spawn(move || {
            for i in 0..1000 {
                tx.send(i).unwrap();
            }
        });
        let mut got = Vec::new();
        while let Some(i) = rx.recv().unwrap() {
            let (occupied, capacity) = level.get();
            assert!(occupied <= capacity && capacity == 3);
            got.push(i);
        }
        producer.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn an_abort_releases_a_blocked_producer_and_consumer() {
        let control = RunControl::new();
        let (mut tx, _rx_kept, _) = ring::<u32>(1, &control);
        let (_tx_kept, mut rx, _) = ring::<u32>(1, &control);
        tx.send(1).unwrap();
        let blocked_send = std::thread::spawn(move || tx.send(2));
        let blocked_recv = std::thread::spawn(move || rx.recv());
        std::thread::sleep(Duration::from_millis(30));
        control.abort();
        assert!(blocked_send.join().unwrap().is_err());
        assert!(blocked_recv.join().unwrap().is_err());
    }
}
