//! Every way a run can stop or fail, as a user meets it: existing files survive a failure,
//! Ctrl-C is honoured promptly on every path, closed or full outputs are errors (not panics,
//! not silent successes), and bad checkpoints are refused with the file and field named.

#[path = "streaming/support.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const USER_FILE: &[u8] = b"a file the user cares about";

/// `generate` into `target` (holding USER_FILE) with `extra`; asserts it fails naming
/// `needle`, and that the folder holds exactly what it held before.
fn fails_leaving_the_file(dir: &Path, extra: &[&str], needle: &str) {
    let target = dir.join("p.wav");
    std::fs::write(&target, USER_FILE).unwrap();
    let before = files_in(dir);
    let mut args = vec!["generate", "--out", target.to_str().unwrap()];
    args.extend(extra);
    fails_naming(&args, needle);
    assert_eq!(std::fs::read(&target).unwrap(), USER_FILE, "{extra:?}");
    assert_eq!(files_in(dir), before, "{extra:?} left files behind");
}

#[test]
fn a_failed_run_leaves_an_existing_output_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_leaving_the_file(d, &["--model", "/no/such/ckpt"], "/no/such/ckpt");
    fails_leaving_the_file(d, &["--synthetic", "tiny", "--tags", " "], "tags are empty");
    // Too long for the tiny model's context: refused, with a length a person can read.
    let err = stderr(&heartstream(&[
        "generate",
        "--synthetic",
        "tiny",
        "--max-seconds",
        "1e9",
        "--out",
        "/dev/null",
    ]));
    let at_most = err
        .split("at most ")
        .nth(1)
        .and_then(|s| s.split(' ').next());
    let decimals = at_most.and_then(|n| n.split('.').nth(1)).map(str::len);
    assert!(err.contains("max_seq_len") && decimals == Some(2), "{err}");
    fails_leaving_the_file(
        d,
        &["--synthetic", "tiny", "--max-seconds", "1e9"],
        "max_seq_len",
    );
    // Bad weights in a checkpoint: refused while loading.
    let ckpt = tiny_checkpoint();
    let weights = ckpt.path().join("HeartCodec-oss/model.safetensors");
    std::fs::write(&weights, b"not safetensors").unwrap();
    let model = ckpt.path().to_str().unwrap();
    fails_leaving_the_file(d, &["--model", model], "model.safetensors");
}

#[test]
fn ctrl_c_while_the_prompt_is_read_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("lyrics.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let target = dir.path().join("p.wav");
    std::fs::write(&target, USER_FILE).unwrap();
    let lyrics = format!("@{}", fifo.display());
    let mut child = spawn(&tiny(
        "generate",
        "5",
        "1",
        &["--lyrics", &lyrics, "--out", target.to_str().unwrap()],
    ));
    std::thread::sleep(Duration::from_millis(500));
    interrupt(&child);
    let out = wait_with_timeout(&mut child, Duration::from_secs(10));
    assert!(!out.status.success());
    assert_eq!(std::fs::read(&target).unwrap(), USER_FILE);
    assert_eq!(files_in(dir.path()), vec!["lyrics.fifo", "p.wav"]);
}

/// Reads `child`'s stdout at real-time speed (s16 stereo at 48 kHz) until it closes.
fn listen_in_real_time(child: &mut std::process::Child) -> std::thread::JoinHandle<usize> {
    let mut stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut buffer = vec![0u8; 19_200];
        let mut total = 0;
        while let Ok(n) = stdout.read(&mut buffer) {
            if n == 0 {
                break;
            }
            total += n;
            std::thread::sleep(Duration::from_millis(100));
        }
        total
    })
}

#[test]
fn a_second_ctrl_c_ends_a_run_that_a_slow_reader_holds_back() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("held.wav");
    let args = tiny(
        "generate",
        "600",
        "2",
        &["--stream-to", "stdout", "--out", wav.to_str().unwrap()],
    );
    let mut child = Command::new(bin())
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reader = listen_in_real_time(&mut child);
    // Generation is far ahead of the reader: minutes of audio are buffered after a few seconds.
    std::thread::sleep(Duration::from_secs(4));
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let asked = Instant::now();
    let out = wait_with_timeout(&mut child, Duration::from_secs(30));
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the second Ctrl-C took {took:?}"
    );
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("Ctrl-C again") && err.contains("stopped:"),
        "{err}"
    );
    let streamed = reader.join().unwrap();
    let reader = hound::WavReader::open(&wav).unwrap();
    assert!(reader.len() > 0);
    // Each piece reaches the file before the pipe: the file holds all the reader got.
    let in_file = reader.len() as usize;
    assert!(
        in_file >= streamed / 2,
        "{in_file} samples vs {streamed} bytes streamed"
    );
}

#[test]
fn ctrl_c_stops_a_flow_solve_of_endless_steps() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("never.wav");
    let mut child = spawn(&tiny(
        "generate",
        "2",
        "3",
        &["--flow-steps", "100000", "--out", wav.to_str().unwrap()],
    ));
    std::thread::sleep(Duration::from_secs(3));
    interrupt(&child);
    std::thread::sleep(Duration::from_millis(300));
    interrupt(&child);
    let asked = Instant::now();
    let out = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "took {:?}",
        asked.elapsed()
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped:"), "{}", stderr(&out));
    // No audio was made: no file was made either.
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[test]
fn the_bench_report_to_a_closed_or_full_stdout_is_an_error_not_a_panic() {
    for redirect in ["| head -c 0", "> /dev/full"] {
        let script = format!(
            "{} bench --synthetic tiny --max-seconds 1 --seed 1 {redirect}; echo \"exit=${{PIPESTATUS[0]}}\" >&2",
            bin()
        );
        let out = shell(&script);
        let err = stderr(&out);
        assert!(!err.contains("panicked"), "{redirect}: {err}");
        assert!(
            err.contains("cannot write the bench report"),
            "{redirect}: {err}"
        );
        assert!(err.contains("exit=1"), "{redirect}: {err}");
    }
}

#[test]
fn a_closed_stdout_is_refused_before_any_work() {
    let script = format!("{} generate --synthetic tiny --stream-to stdout >&-", bin());
    let out = shell(&script);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("standard output is closed"), "{err}");
    assert!(!err.contains("loaded"), "refused before loading: {err}");
    // Sent to /dev/null on purpose it is a normal output.
    let script = format!(
        "{} generate --synthetic tiny --max-seconds 0.5 --stream-to stdout > /dev/null",
        bin()
    );
    assert_success(&shell(&script));
}

#[test]
fn outputs_in_a_missing_folder_fail_before_the_work() {
    fails_naming(
        &[
            "codes",
            "--synthetic",
            "tiny",
            "--out",
            "/no/such/dir/c.json",
        ],
        "--out /no/such/dir/c.json",
    );
    let out = heartstream(&[
        "codes",
        "--synthetic",
        "tiny",
        "--out",
        "/no/such/dir/c.json",
    ]);
    assert!(!stderr(&out).contains("loaded"), "{}", stderr(&out));
    let dir = tempfile::tempdir().unwrap();
    let codes = dir.path().join("c.json");
    std::fs::write(&codes, "[[1,2,3,4,5,6,7,8]]").unwrap();
    let decode_to = |out: &str| {
        let codes = codes.to_str().unwrap().to_string();
        [
            "decode",
            "--synthetic",
            "tiny",
            "--codes",
            &codes,
            "--out",
            out,
        ]
        .map(String::from)
    };
    let args = decode_to("/no/such/dir/a.wav");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_naming(&args, "--out /no/such/dir/a.wav");
    assert!(!stderr(&heartstream(&args)).contains("loaded"));
    // A full device is named.
    let args = decode_to("/dev/full");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_naming(&args, "/dev/full");
}

#[test]
fn codes_and_decode_compose_and_special_codes_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let codes = dir.path().join("c.json");
    let wav = dir.path().join("c.wav");
    let out = heartstream(&tiny(
        "codes",
        "1",
        "5",
        &["--out", codes.to_str().unwrap()],
    ));
    assert_success(&out);
    assert!(stderr(&out).contains("seed 5"));
    // Special ids above the codebook (audio EOS 513, padding 516) as `codes --ignore-eos` may write.
    std::fs::write(
        &codes,
        "[[1,2,3,4,5,6,7,8],[513,2,3,4,5,6,7,516],[9,9,9,9,9,9,9,9]]",
    )
    .unwrap();
    let out = heartstream(&[
        "decode",
        "--synthetic",
        "tiny",
        "--codes",
        codes.to_str().unwrap(),
        "--out",
        wav.to_str().unwrap(),
    ]);
    assert_success(&out);
    assert!(stderr(&out).contains("2 special codes"), "{}", stderr(&out));
    assert_eq!(
        hound::WavReader::open(&wav).unwrap().duration() as usize,
        3 * 3840
    );
    // Negative numbers are named by frame and codebook.
    std::fs::write(&codes, "[[1,2,3,4,5,6,7,8],[1,2,-3,4,5,6,7,8]]").unwrap();
    fails_naming(
        &[
            "decode",
            "--synthetic",
            "tiny",
            "--codes",
            codes.to_str().unwrap(),
            "--out",
            wav.to_str().unwrap(),
        ],
        "frame 1, codebook 2: -3 is not a token",
    );
}

#[test]
fn every_command_prints_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("s.wav");
    let out = heartstream(&[
        "generate",
        "--synthetic",
        "tiny",
        "--max-seconds",
        "0.5",
        "--out",
        wav.to_str().unwrap(),
    ]);
    assert_success(&out);
    let err = stderr(&out);
    let seed: u64 = err
        .split("(seed ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no seed in {err}"));
    let out = heartstream(&tiny("bench", "0.5", &seed.to_string(), &[]));
    assert_success(&out);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["seed"], seed);
}

#[test]
fn play_without_an_audio_device_writes_the_song_and_prints_no_alsa_noise() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty-alsa.conf");
    std::fs::write(&empty, "").unwrap();
    let out = Command::new(bin())
        .args(tiny("play", "1", "7", &[]))
        .current_dir(dir.path())
        .env("ALSA_CONFIG_PATH", &empty)
        .output()
        .unwrap();
    assert_success(&out);
    let err = stderr(&out);
    assert!(
        err.contains("no audio output here") && err.contains("heartstream-7.wav"),
        "{err}"
    );
    assert!(
        !err.contains("ALSA lib"),
        "alsa-lib's own printing leaked: {err}"
    );
    let reader = hound::WavReader::open(dir.path().join("heartstream-7.wav")).unwrap();
    assert_eq!(
        reader.duration() as usize,
        13 * 3840,
        "1 s rounds to 13 frames"
    );
}

#[test]
fn sigterm_and_sighup_stop_like_ctrl_c() {
    for sig in ["TERM", "HUP"] {
        let dir = tempfile::tempdir().unwrap();
        let wav = dir.path().join("signalled.wav");
        let mut child = spawn(&tiny(
            "generate",
            "600",
            "4",
            &["--out", wav.to_str().unwrap()],
        ));
        wait_for(Duration::from_secs(120), || {
            std::fs::read_dir(dir.path())
                .unwrap()
                .any(|e| e.unwrap().metadata().is_ok_and(|m| m.len() > 400_000))
        });
        signal(&child, sig);
        let out = wait_with_timeout(&mut child, Duration::from_secs(60));
        assert!(out.status.success(), "SIG{sig}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("stopped:"),
            "SIG{sig}: {}",
            stderr(&out)
        );
        let reader = hound::WavReader::open(&wav).unwrap();
        let samples = reader.len() as usize;
        // Finalized: the header counts every sample the file holds.
        let header = std::fs::metadata(&wav).unwrap().len() as usize - samples * 4;
        assert!(header < 100, "SIG{sig}: {header} bytes beyond the samples");
        assert_eq!(files_in(dir.path()), vec!["signalled.wav"]);
    }
}
