//! Output files that never destroy what was there before.
//!
//! A regular file is written to a hidden temporary file beside its target and renamed over
//! the target only when it is committed: a run that fails (or is stopped) before it has
//! anything to write leaves an existing file untouched. A target that exists and is not a
//! regular file (a FIFO, `/dev/stdout`, `/dev/full`) is written in place: renaming over it
//! would replace the device or pipe with a file.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::TempPath;

/// An output file being written.
pub struct OutputFile {
    file: File,
    /// The temporary file, for a target that is renamed into place on commit.
    temp: Option<TempPath>,
    target: PathBuf,
}

impl OutputFile {
    /// Opens the output for `target` now, so a bad path fails before any work is done;
    /// `flag` names the option in errors (e.g. `--out`).
    pub fn create(target: &Path, flag: &str) -> Result<OutputFile> {
        let what = || format!("{flag} {}", target.display());
        if let Ok(meta) = std::fs::metadata(target) {
            if meta.is_dir() {
                anyhow::bail!("{}: is a folder, expected a file name", what());
            }
            if !meta.is_file() {
                let file = OpenOptions::new()
                    .write(true)
                    .open(target)
                    .with_context(|| format!("{}: cannot open it for writing", what()))?;
                return Ok(OutputFile {
                    file,
                    temp: None,
                    target: target.to_path_buf(),
                });
            }
        }
        // Through a symbolic link, the file it points to is the one replaced.
        let real = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        let dir = match real.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = real
            .file_name()
            .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(&dir)
            .with_context(|| format!("{}: cannot create a file in {}", what(), dir.display()))?;
        let (file, temp) = temp.into_parts();
        Ok(OutputFile {
            file,
            temp: Some(temp),
            target: real,
        })
    }

    /// Checks now that `target` can be written, leaving nothing behind. A FIFO or device is
    /// not opened here: opening a FIFO waits for its reader.
    pub fn check(target: &Path, flag: &str) -> Result<()> {
        match std::fs::metadata(target) {
            Ok(meta) if !meta.is_file() && !meta.is_dir() => Ok(()),
            _ => Self::create(target, flag).map(drop),
        }
    }

    /// Where the data ends up.
    pub fn target(&self) -> &Path {
        &self.target
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Takes the file handle out (for a writer that owns it); commit with [`Pending`].
    pub fn into_parts(self) -> (File, Pending) {
        (
            self.file,
            Pending {
                temp: self.temp,
                target: self.target,
            },
        )
    }

    /// Flushes the data to disk and moves it into place.
    pub fn commit(self) -> Result<PathBuf> {
        let (file, pending) = self.into_parts();
        file.sync_all()
            .or_else(ignore_unsupported)
            .with_context(|| format!("cannot write {}", pending.target.display()))?;
        drop(file);
        pending.commit()
    }
}

/// Syncing a pipe or device is not supported; that is not an error for them.
fn ignore_unsupported(e: std::io::Error) -> std::io::Result<()> {
    match e.raw_os_error() {
        Some(code) if code == libc::EINVAL || code == libc::ENOTSUP => Ok(()),
        _ => Err(e),
    }
}

/// The part of an [`OutputFile`] that decides where its data ends up. Dropped without
/// [`Pending::commit`], a temporary file is removed and the target stays as it was.
pub struct Pending {
    temp: Option<TempPath>,
    target: PathBuf,
}

impl Pending {
    /// Renames the written file over the target (files readable as a user's new file are).
    pub fn commit(self) -> Result<PathBuf> {
        if let Some(temp) = self.temp {
            set_readable(&temp);
            temp.persist(&self.target).map_err(|e| {
                anyhow::Error::new(e.error).context(format!(
                    "cannot move the output into {}",
                    self.target.display()
                ))
            })?;
        }
        Ok(self.target)
    }
}

/// Temporary files are private (0600); an output file gets the usual 0644.
fn set_readable(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_target_changes_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("song.wav");
        std::fs::write(&target, b"old").unwrap();
        let mut out = OutputFile::create(&target, "--out").unwrap();
        out.file().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        drop(out);
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"old",
            "dropped: untouched"
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no leftovers"
        );
        let mut out = OutputFile::create(&target, "--out").unwrap();
        out.file().write_all(b"new").unwrap();
        assert_eq!(out.commit().unwrap(), target.canonicalize().unwrap());
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
    }

    #[test]
    fn bad_targets_are_named_and_devices_are_written_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/a.wav");
        let err = OutputFile::check(&missing, "--out").unwrap_err();
        assert!(format!("{err:#}").contains("--out") && format!("{err:#}").contains("no/such"));
        let err = OutputFile::check(dir.path(), "--out").unwrap_err();
        assert!(format!("{err:#}").contains("is a folder"), "{err:#}");
        let mut null = OutputFile::create(Path::new("/dev/null"), "--out").unwrap();
        null.file().write_all(b"x").unwrap();
        assert_eq!(null.commit().unwrap(), Path::new("/dev/null"));
        assert!(Path::new("/dev/null").exists());
    }
}
