//! The streaming commands as users run them, on the CPU with the tiny synthetic model:
//! raw PCM on stdout read by a real consumer (sox), a closed pipe, Ctrl-C during a WAV
//! write, playback through a real audio server (PulseAudio, null sink), the terminal UI
//! under a real pseudo-terminal (tmux), and the bench report.

#[path = "streaming/support.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

/// Per channel samples of one LM frame (2 latents × 1920) and the channels.
const SAMPLES_PER_FRAME: usize = 3840;
const CHANNELS: usize = 2;

#[test]
fn stdout_carries_exactly_the_frames_audio_in_both_formats() {
    for (pcm, bytes) in [("s16le", 2), ("f32le", 4)] {
        let out = heartstream(&tiny(
            "generate",
            "2",
            "5",
            &["--stream-to", "stdout", "--pcm", pcm],
        ));
        assert_success(&out);
        // 2 s at 12.5 frames/s.
        let frames = 25;
        assert_eq!(
            out.stdout.len(),
            frames * SAMPLES_PER_FRAME * CHANNELS * bytes,
            "{pcm}"
        );
        assert!(stderr(&out).contains("done: 25 frames"), "{}", stderr(&out));
    }
}

#[test]
fn synthetic_weights_play_their_full_length() {
    // Random weights emit end-of-song tokens by chance (seed 1 does within a second); a
    // synthetic run ignores them, so the length is --max-seconds.
    let out = heartstream(&[
        "generate",
        "--synthetic",
        "tiny",
        "--max-seconds",
        "2",
        "--seed",
        "1",
        "--stream-to",
        "stdout",
    ]);
    assert_success(&out);
    assert_eq!(out.stdout.len(), 25 * SAMPLES_PER_FRAME * CHANNELS * 2);
}

#[test]
fn sox_reads_the_raw_stream_into_a_wav_of_the_right_length() {
    require(&["sox"]);
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("piped.wav");
    let script = format!(
        "set -o pipefail; {} generate --synthetic tiny --max-seconds 3 --ignore-eos --seed 2 \
         --stream-to stdout | sox -t raw -r 48000 -e signed -b 16 -c 2 - {}",
        bin(),
        wav.display()
    );
    assert_success(&shell(&script));
    let duration = shell(&format!("soxi -D {}", wav.display()));
    assert_success(&duration);
    let seconds: f64 = String::from_utf8_lossy(&duration.stdout)
        .trim()
        .parse()
        .unwrap();
    // 3 s → 38 frames (37.5 rounded) of 80 ms.
    assert!((seconds - 38.0 * 0.08).abs() < 1e-6, "{seconds} s");
    let reader = hound::WavReader::open(&wav).unwrap();
    assert_eq!(reader.spec().sample_rate, 48_000);
    assert_eq!(reader.spec().channels, 2);
}

#[test]
fn a_closed_pipe_ends_the_run_cleanly_and_early() {
    let started = Instant::now();
    let script = format!(
        "set -o pipefail; {} generate --synthetic tiny --max-seconds 600 --ignore-eos --seed 2 \
         --stream-to stdout | head -c 1000 | wc -c",
        bin()
    );
    let out = shell(&script);
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
    assert!(stderr(&out).contains("stdout closed"), "{}", stderr(&out));
    // Ten minutes of audio were asked for; the closed pipe stopped the run long before.
    assert!(started.elapsed() < Duration::from_secs(120));
}

#[test]
fn ctrl_c_mid_run_leaves_a_valid_wav_of_what_was_generated() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("interrupted.wav");
    let mut child = spawn(&tiny(
        "generate",
        "600",
        "4",
        &["--out", wav.to_str().unwrap()],
    ));
    // Wait until more than a second of audio is on disk (in the file beside the target
    // that becomes it when the run ends).
    let one_second_bytes = 48_000 * CHANNELS * 4;
    wait_for(Duration::from_secs(120), || {
        std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .metadata()
                .is_ok_and(|m| m.len() as usize > one_second_bytes)
        })
    });
    interrupt(&child);
    let out = wait_with_timeout(&mut child, Duration::from_secs(60));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped:"), "{}", stderr(&out));
    let mut reader = hound::WavReader::open(&wav).unwrap();
    let samples = reader.len() as usize;
    assert!(samples > 48_000 * CHANNELS, "{samples} samples");
    // The header was finalized: it counts exactly the samples the file holds.
    let readable = reader
        .samples::<f32>()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .len();
    assert_eq!(readable, samples);
    let header = std::fs::metadata(&wav).unwrap().len() as usize - samples * 4;
    assert!(header < 100, "{header} bytes beyond the samples");
    // Whole frames only: what the decoder finished, nothing cut mid-frame.
    assert_eq!(samples % (SAMPLES_PER_FRAME * CHANNELS), 0);
}

#[test]
fn play_runs_to_the_end_through_a_real_audio_server() {
    let _server = AudioServer::start();
    let out = heartstream(&tiny("play", "2", "6", &[]));
    assert_success(&out);
    let err = stderr(&out);
    // 25 frames = 2.00 s played in full, underruns reported.
    assert!(err.contains("played 2.00 s"), "{err}");
    assert!(err.contains("underruns"), "{err}");
}

#[test]
fn the_ui_quits_on_q_and_gives_the_terminal_back() {
    let _server = AudioServer::start();
    let tmux = Tmux::new(120, 40);
    tmux.type_line("stty -g > before.txt");
    tmux.type_line(&format!(
        "{} play --synthetic tiny --max-seconds 600 --ignore-eos; echo EXIT=$?",
        bin()
    ));
    tmux.wait_for_screen("time to first audio", Duration::from_secs(120));
    tmux.wait_for_screen("underruns", Duration::from_secs(30));
    assert!(
        tmux.alternate_screen(),
        "the UI draws on the alternate screen"
    );
    tmux.send_key("q");
    tmux.wait_for_screen("EXIT=0", Duration::from_secs(60));
    assert!(!tmux.alternate_screen(), "the alternate screen was left");
    tmux.type_line("stty -g > after.txt; cmp before.txt after.txt && echo SAME-TTY");
    tmux.wait_for_screen("SAME-TTY", Duration::from_secs(10));
}

#[test]
fn bench_prints_one_json_line_with_every_figure() {
    let out = heartstream(&tiny("bench", "2", "1", &[]));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(j["frames"], 25);
    assert!((j["audio_seconds"].as_f64().unwrap() - 2.0).abs() < 1e-9);
    let ttfa = j["ttfa_ms"].as_f64().unwrap();
    assert!(ttfa > 0.0 && ttfa < 60_000.0, "{ttfa}");
    for stage in ["overall", "lm", "flow", "decode"] {
        assert!(j["rtf"][stage].as_f64().unwrap() > 0.0, "rtf.{stage}");
    }
    let lm = &j["lm_ms_per_frame"];
    assert!(lm["p50"].as_f64().unwrap() <= lm["p90"].as_f64().unwrap());
    assert!(j["load_ms"].as_f64().unwrap() >= 0.0);
    assert!(j["underruns"].is_u64());
    assert!(j["peak_rss_mib"].as_f64().unwrap() > 1.0);
    assert!(j["peak_gpu_mib"].is_null(), "no GPU on the CPU");
    assert_eq!(j["outcome"], "completed");
    // Synthetic weights are not read from files.
    assert!(j["load"]["lm_read"].is_null() && j["load"]["codec_read"].is_null());
}

#[test]
fn bench_on_a_checkpoint_says_where_reading_each_model_went() {
    let ckpt = tiny_checkpoint();
    let model = ckpt.path().to_str().unwrap();
    let out = heartstream(&[
        "bench",
        "--model",
        model,
        "--max-seconds",
        "0.5",
        "--seed",
        "1",
    ]);
    assert_success(&out);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (model, dir) in [("lm", "HeartMuLa-oss-3B"), ("codec", "HeartCodec-oss")] {
        let read = &j["load"][format!("{model}_read")];
        // At least the safetensors' data section was read (the codec's may be sharded).
        let on_disk: u64 = std::fs::read_dir(ckpt.path().join(dir))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        let bytes = read["bytes"].as_u64().unwrap();
        assert!(
            bytes > 0 && bytes < on_disk,
            "{model}: read {bytes} of {on_disk}"
        );
        for part in ["read_ms", "copy_ms"] {
            assert!(read[part].as_f64().unwrap() >= 0.0, "{model}.{part}");
        }
        let total = read["read_ms"].as_f64().unwrap() + read["copy_ms"].as_f64().unwrap();
        let weights_ms = j["load"][format!("{model}_weights_ms")].as_f64().unwrap();
        assert!(
            total <= weights_ms,
            "{model}: parts {total} ms > {weights_ms} ms"
        );
    }
}

#[test]
fn bad_streaming_options_get_one_clear_error() {
    for (args, needle) in [
        (vec!["generate", "--synthetic", "tiny"], "nothing to write"),
        (
            vec![
                "generate",
                "--synthetic",
                "tiny",
                "--out",
                "/no/such/dir/a.wav",
            ],
            "/no/such/dir/a.wav",
        ),
        (
            vec!["bench", "--synthetic", "tiny", "--stream-to", "stdout"],
            "JSON report on stdout",
        ),
        (
            vec!["play", "--synthetic", "tiny", "--preroll", "-1"],
            "--preroll -1",
        ),
    ] {
        fails_naming(&args, needle);
    }
    // Streaming settings, each named back in its error.
    let streaming = ["generate", "--synthetic", "tiny", "--stream-to", "stdout"];
    for (flag, value) in [
        ("--window", "0"),
        ("--context", "40"),
        ("--codec-device", "tpu"),
    ] {
        let args: Vec<&str> = streaming.iter().copied().chain([flag, value]).collect();
        fails_naming(&args, &format!("{flag} {value}"));
    }
}
