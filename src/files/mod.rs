//! Files the user names: inputs are read only when they are regular files (a FIFO named
//! config.json would hang the loader, a folder named model.safetensors is not "missing"),
//! and outputs never destroy what was there before ([`OutputFile`]).

mod output;

use std::path::Path;

use anyhow::{bail, Context, Result};

pub use output::{OutputFile, Pending};

/// What is at a path (symbolic links followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Nothing,
    File,
    Folder,
    /// Something else, described for messages ("a FIFO", "a device", …).
    Other(&'static str),
}

impl Entry {
    pub fn at(path: &Path) -> Entry {
        let Ok(meta) = std::fs::metadata(path) else {
            return Entry::Nothing;
        };
        if meta.is_file() {
            return Entry::File;
        }
        if meta.is_dir() {
            return Entry::Folder;
        }
        Entry::Other(special_kind(&meta))
    }

    pub fn describe(self) -> &'static str {
        match self {
            Entry::Nothing => "missing",
            Entry::File => "a file",
            Entry::Folder => "a folder",
            Entry::Other(kind) => kind,
        }
    }
}

#[cfg(unix)]
fn special_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

#[cfg(not(unix))]
fn special_kind(_: &std::fs::Metadata) -> &'static str {
    "not a regular file"
}

/// Whether `path` is a regular file: `Ok(false)` when nothing is there, an error naming
/// what is there instead when it is something else.
pub fn regular_file_exists(path: &Path, what: &str) -> Result<bool> {
    match Entry::at(path) {
        Entry::Nothing => Ok(false),
        Entry::File => Ok(true),
        other => bail!(
            "{} is {}: expected {what} (a regular file)",
            path.display(),
            other.describe()
        ),
    }
}

/// Reads `path` as UTF-8 text, refusing anything but a regular file.
pub fn read_regular(path: &Path, what: &str) -> Result<String> {
    if !regular_file_exists(path, what)? {
        bail!("{} is missing: expected {what}", path.display());
    }
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {} ({what})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, "{}").unwrap();
        assert_eq!(read_regular(&file, "a config").unwrap(), "{}");
        let err = read_regular(dir.path(), "a config").unwrap_err();
        assert!(
            format!("{err:#}").contains("is a folder: expected a config"),
            "{err:#}"
        );
        let fifo = dir.path().join("fifo.json");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let err = read_regular(&fifo, "a config").unwrap_err();
        assert!(format!("{err:#}").contains("is a FIFO"), "{err:#}");
        let err = read_regular(&dir.path().join("none"), "a config").unwrap_err();
        assert!(format!("{err:#}").contains("is missing"), "{err:#}");
    }
}
