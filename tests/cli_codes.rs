//! `heartstream codes` as a user runs it: output file, speed report, and one clear error
//! (non-zero exit, no panic) for each kind of bad input.

use std::process::{Command, Output};

fn heartstream(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_heartstream"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fails_naming(args: &[&str], needle: &str) {
    let out = heartstream(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
}

#[test]
fn codes_writes_the_requested_frames_and_reports_speed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("codes.json");
    let o = heartstream(&[
        "codes",
        "--synthetic",
        "tiny",
        "--max-seconds",
        "1",
        "--seed",
        "3",
        "--ignore-eos",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let frames = json["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 13, "1 s at 12.5 frames/s, rounded");
    assert!(frames.iter().all(|f| f.as_array().unwrap().len() == 8));
    assert!(String::from_utf8_lossy(&o.stderr).contains("frames/s"));
    assert!(o.stdout.is_empty(), "codes prints nothing on stdout");

    // Same seed, same frames.
    let again = dir.path().join("again.json");
    heartstream(&[
        "codes",
        "--synthetic",
        "tiny",
        "--max-seconds",
        "1",
        "--seed",
        "3",
        "--ignore-eos",
        "--out",
        again.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

/// `--kv-precision fp8` (and `--lm-precision fp8`, whose `auto` cache follows it) runs the
/// song with the FP8 cache: every frame, reproducibly; an unknown precision is named.
#[test]
fn codes_run_with_an_fp8_kv_cache() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, precision: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec!["codes", "--synthetic", "tiny", "--max-seconds", "1"];
        args.extend([
            "--seed",
            "5",
            "--ignore-eos",
            "--out",
            out.to_str().unwrap(),
        ]);
        args.extend(precision);
        let o = heartstream(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        json["frames"].as_array().unwrap().clone()
    };
    let fp8 = run("kv.json", &["--kv-precision", "fp8"]);
    assert_eq!(fp8.len(), 13);
    assert_eq!(fp8, run("again.json", &["--kv-precision", "fp8"]));
    assert_eq!(run("lm.json", &["--lm-precision", "fp8"]).len(), 13);
    fails_naming(&["codes", "--kv-precision", "fp4"], "fp4");
}

#[test]
fn invalid_sampling_values_are_refused_by_flag() {
    let base = ["codes", "--synthetic", "tiny", "--out", "/dev/null"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails_naming(&with(&["--topk", "0"]), "--topk");
    fails_naming(&with(&["--topk", "100000"]), "--topk");
    fails_naming(&with(&["--temperature", "0"]), "--temperature");
    fails_naming(&with(&["--temperature", "-1"]), "--temperature");
    fails_naming(&with(&["--cfg-scale", "0.5"]), "--cfg-scale");
    fails_naming(&with(&["--max-seconds", "0"]), "--max-seconds");
    fails_naming(&with(&["--max-seconds", "1e9"]), "max_seq_len");
}

#[test]
fn empty_prompt_texts_and_unreadable_files_are_named() {
    let base = ["codes", "--synthetic", "tiny", "--out", "/dev/null"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> {
        base.iter().copied().chain(extra.iter().copied()).collect()
    };
    fails_naming(&with(&["--tags", ""]), "tags");
    fails_naming(&with(&["--lyrics", "  "]), "lyrics");
    fails_naming(
        &with(&["--lyrics", "@/no/such/lyrics.txt"]),
        "/no/such/lyrics.txt",
    );
}

#[test]
fn bad_model_folders_and_devices_are_named() {
    fails_naming(
        &["codes", "--model", "/no/such/ckpt", "--out", "/dev/null"],
        "/no/such/ckpt",
    );
    let dir = tempfile::tempdir().unwrap();
    fails_naming(
        &[
            "codes",
            "--model",
            dir.path().to_str().unwrap(),
            "--out",
            "/dev/null",
        ],
        "gen_config.json",
    );
    fails_naming(
        &[
            "codes",
            "--synthetic",
            "tiny",
            "--device",
            "tpu",
            "--out",
            "/dev/null",
        ],
        "--device tpu",
    );
}
