//! A long-lived process: 100 songs in a row through the library API on the tiny model, with
//! resident memory flat (growth under 5 % after the first songs have warmed every pool up).

use heartstream::engine::{Engine, EngineConfig, SongRequest};
use heartstream::models::{ModelChoice, SyntheticSize};

/// Resident memory now (Linux: VmRSS), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn a_hundred_songs_in_one_process_keep_memory_flat() {
    let model = ModelChoice::Synthetic {
        size: SyntheticSize::Tiny,
        seed: 9,
    };
    let engine = Engine::load(EngineConfig::new(model, candle_core::Device::Cpu).unwrap()).unwrap();
    let mut warm = 0;
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
        if i == 9 {
            warm = rss();
        }
    }
    let end = rss();
    let growth = end as f64 / warm as f64 - 1.0;
    assert!(
        growth < 0.05,
        "resident memory grew {:.1} % over 90 songs ({warm} → {end} bytes)",
        growth * 100.0
    );
}
