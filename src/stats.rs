//! Small statistics over measured durations.

use serde::Serialize;

/// Mean and percentiles of per-frame times, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameTimes {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
}

impl FrameTimes {
    pub fn of(ms: &[f64]) -> Option<FrameTimes> {
        if ms.is_empty() {
            return None;
        }
        let mut sorted = ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        // Nearest-rank percentile.
        let rank =
            |p: f64| sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(FrameTimes {
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
            p50: rank(0.5),
            p90: rank(0.9),
        })
    }

    /// Times of the frames after the first (which also reads the prompt).
    pub fn steady_state(ms: &[f64]) -> Option<FrameTimes> {
        Self::of(ms.get(1..)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let t = FrameTimes::of(&[5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 8.0, 9.0]).unwrap();
        assert_eq!((t.mean, t.p50, t.p90), (5.5, 5.0, 9.0));
        assert_eq!(FrameTimes::of(&[]), None);
        assert_eq!(FrameTimes::steady_state(&[100.0]), None);
        assert_eq!(FrameTimes::steady_state(&[100.0, 2.0]).unwrap().p90, 2.0);
    }
}
