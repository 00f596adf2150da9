//! A long-lived process: 100 songs in a row through the library API on the tiny model, with
//! resident memory flat: the median of the last 30 songs within 5 % of the median of songs 10–39.
//!
//! Medians, not two single readings, each taken after the allocator's free pages are returned
//! (`malloc_trim`): its arenas make the resident size of one moment swing from song to song
//! (threads start and stop per song), while a leak moves every reading after it. Keeping one song's audio (≈ 215 kB) per song would raise the median by more than half.

use heartstream::engine::{Engine, EngineConfig, SongRequest};
use heartstream::models::{ModelChoice, SyntheticSize};

/// Resident memory now (Linux: VmRSS), in bytes, after glibc has returned the free pages of
/// its arenas to the system: what the process still holds, not what the allocator keeps in
/// reserve for the threads each song starts (without the trim that reserve alone varied by
/// tens of percent between runs, and failed this test now and then with no leak).
fn rss() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn median(readings: &[u64]) -> u64 {
    let mut sorted = readings.to_vec();
    sorted.sort_unstable();
    sorted[sorted.len() / 2]
}

#[test]
fn a_hundred_songs_in_one_process_keep_memory_flat() {
    let model = ModelChoice::Synthetic {
        size: SyntheticSize::Tiny,
        seed: 9,
    };
    let engine = Engine::load(EngineConfig::new(model, candle_core::Device::Cpu).unwrap()).unwrap();
    let mut readings = Vec::with_capacity(100);
    for i in 0..100u64 {
        // Half a second each; every fourth song is stopped early, as listeners do.
        let request = SongRequest::new("piano", "[verse] la", 7, i, engine.codec_config());
        let song = engine.song(&request).unwrap();
        let mut samples = 0;
        while let Some(chunk) = song.next_chunk() {
            samples += chunk.len() / 2;
            if i % 4 == 3 && samples > 0 {
                song.stop();
            }
        }
        let report = song.finish().unwrap();
        assert_eq!(report.decode.samples, samples, "song {i}");
        if i % 4 != 3 {
            assert_eq!(samples, 7 * 3840, "song {i}");
        }
        readings.push(rss());
    }
    let warm = median(&readings[10..40]);
    let end = median(&readings[70..100]);
    let growth = end as f64 / warm as f64 - 1.0;
    println!(
        "median resident memory: {warm} → {end} bytes ({:+.1} %)",
        growth * 100.0
    );
    assert!(
        growth < 0.05,
        "median resident memory grew {:.1} % from songs 10–39 to songs 70–99 ({warm} → {end} bytes)",
        growth * 100.0
    );
}
