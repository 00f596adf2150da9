//! Running the binary, a shell, an audio server and a pseudo-terminal for the tests.
//! Shared by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Makes sure the Debian packages a test drives are installed, with the project's own
/// installer (the one the build uses for ALSA): a fresh clone's `cargo test` sets up what it
/// needs, and names the packages where it cannot.
pub fn require(packages: &[&str]) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install-packages");
    let out = Command::new(script)
        .arg("the streaming tests")
        .args(packages)
        .output()
        .expect("scripts/install-packages runs");
    assert!(
        out.status.success(),
        "the tests need {packages:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_heartstream")
}

pub fn heartstream<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("the binary runs")
}

/// `command` on the tiny synthetic model, exactly `seconds` long, seeded, then `extra`.
pub fn tiny(command: &str, seconds: &str, seed: &str, extra: &[&str]) -> Vec<String> {
    let base = [command, "--synthetic", "tiny", "--max-seconds", seconds];
    base.iter()
        .chain(&["--ignore-eos", "--seed", seed])
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

pub fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Child {
    Command::new(bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

pub fn shell(script: &str) -> Output {
    Command::new("bash")
        .arg("-c")
        .arg(script)
        .output()
        .expect("bash runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}:\n{}",
        out.status,
        stderr(out)
    );
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

pub fn fails_naming(args: &[&str], needle: &str) {
    let out = heartstream(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        err.contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
}

pub fn wait_for(timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn interrupt(child: &Child) {
    signal(child, "INT");
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Output {
    wait_for(timeout, || child.try_wait().unwrap().is_some());
    let child = std::mem::replace(child, Command::new("true").spawn().unwrap());
    child.wait_with_output().unwrap()
}

/// A PulseAudio server (started if none runs) whose default sink is a null sink that
/// consumes audio in real time, as a sound card would. One test at a time holds it, so no
/// test re-routes another's stream.
pub struct AudioServer {
    _one_at_a_time: MutexGuard<'static, ()>,
}

static AUDIO: Mutex<()> = Mutex::new(());

impl AudioServer {
    pub fn start() -> AudioServer {
        require(&[
            "pulseaudio",
            "pulseaudio-utils",
            "libasound2-plugins",
            "alsa-utils",
        ]);
        let guard = AUDIO.lock().unwrap_or_else(|e| e.into_inner());
        let running = |cmd: &str| shell(cmd).status.success();
        if !running("pulseaudio --check") {
            let out = shell("pulseaudio --daemonize --exit-idle-time=-1 --log-target=stderr");
            assert!(
                out.status.success() || running("pulseaudio --check"),
                "cannot start PulseAudio: {}",
                stderr(&out)
            );
        }
        wait_for(Duration::from_secs(20), || running("pactl info"));
        if !running("pactl list short sinks | grep -q heartstream_null") {
            let _ = shell("pactl load-module module-null-sink sink_name=heartstream_null");
        }
        assert!(running("pactl set-default-sink heartstream_null"));
        AudioServer {
            _one_at_a_time: guard,
        }
    }
}

/// A tmux server of its own running an interactive bash, in a scratch directory.
pub struct Tmux {
    socket: String,
    pub dir: tempfile::TempDir,
}

impl Tmux {
    pub fn new(width: u16, height: u16) -> Tmux {
        require(&["tmux"]);
        let dir = tempfile::tempdir().unwrap();
        let socket = format!("heartstream-test-{}", std::process::id());
        let t = Tmux { socket, dir };
        let status = t
            .command()
            .args(["new-session", "-d", "-s", "t", "-x", &width.to_string()])
            .args(["-y", &height.to_string(), "-c"])
            .arg(t.dir.path())
            .args(["bash", "--norc", "--noprofile"])
            .status()
            .expect("tmux runs");
        assert!(status.success());
        t
    }

    fn command(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    pub fn send_key(&self, key: &str) {
        assert!(self
            .command()
            .args(["send-keys", "-t", "t", key])
            .status()
            .unwrap()
            .success());
    }

    pub fn type_line(&self, line: &str) {
        assert!(self
            .command()
            .args(["send-keys", "-t", "t", "-l", line])
            .status()
            .unwrap()
            .success());
        self.send_key("Enter");
    }

    pub fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-t", "t"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn alternate_screen(&self) -> bool {
        let out = self
            .command()
            .args(["display-message", "-p", "-t", "t", "#{alternate_on}"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    pub fn wait_for_screen(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} not on screen after {timeout:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// The reference fixture laid out as heartlib's `ckpt/` folder, with a word-level
/// tokenizer.json (the fixture models have no Llama tokenizer; ids stay below their
/// text vocabulary).
pub fn tiny_checkpoint() -> tempfile::TempDir {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-tiny");
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("heartmula", "HeartMuLa-oss-3B"),
        ("heartcodec", "HeartCodec-oss"),
    ] {
        let target = dir.path().join(to);
        std::fs::create_dir(&target).unwrap();
        for file in ["config.json", "model.safetensors"] {
            std::fs::copy(fixture.join(from).join(file), target.join(file)).unwrap();
        }
    }
    std::fs::copy(
        fixture.join("gen_config.json"),
        dir.path().join("gen_config.json"),
    )
    .unwrap();
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "[UNK]",
                  "vocab": {"[UNK]": 0, "<tag>": 1, "</tag>": 2, "piano": 3, "la": 4}}
    });
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer.to_string()).unwrap();
    dir
}

/// Edits a JSON file in place.
pub fn edit_json(path: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, value.to_string()).unwrap();
}

/// The regular files directly in `dir`, by name.
pub fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
