//! The codes JSON written by `heartstream codes` and read by `heartstream decode`:
//! `{"frame_rate_hz": 12.5, "frames": [[c0, …, c7], …]}` — one row per 80 ms frame, one token
//! per codebook. A bare `[[…], …]` array is read too.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct CodesFile {
    #[serde(default = "frame_rate_hz")]
    frame_rate_hz: f64,
    frames: Vec<Vec<u32>>,
}

fn frame_rate_hz() -> f64 {
    12.5
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyCodes {
    File(CodesFile),
    Bare(Vec<Vec<u32>>),
}

pub fn write(path: &Path, frames: &[Vec<u32>]) -> Result<()> {
    let file = CodesFile {
        frame_rate_hz: frame_rate_hz(),
        frames: frames.to_vec(),
    };
    let text = serde_json::to_string(&file)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Reads frames and checks they form a rectangle of `codebooks` columns.
pub fn read(path: &Path, codebooks: usize) -> Result<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --codes {}", path.display()))?;
    let parsed: AnyCodes = serde_json::from_str(&text).with_context(|| {
        format!(
            "--codes {}: expected {{\"frames\": [[{codebooks} non-negative integer tokens], …]}}",
            path.display()
        )
    })?;
    let frames = match parsed {
        AnyCodes::File(f) => f.frames,
        AnyCodes::Bare(f) => f,
    };
    if frames.is_empty() {
        bail!("--codes {}: holds no frames", path.display());
    }
    if let Some((i, f)) = frames
        .iter()
        .enumerate()
        .find(|(_, f)| f.len() != codebooks)
    {
        bail!(
            "--codes {}: frame {i} has {} tokens, expected one per codebook ({codebooks})",
            path.display(),
            f.len()
        );
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reads_bare_arrays() {
        let dir = std::env::temp_dir().join(format!("hs-codes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.json");
        let frames = vec![vec![1, 2], vec![3, 4]];
        write(&p, &frames).unwrap();
        assert_eq!(read(&p, 2).unwrap(), frames);
        std::fs::write(&p, r#"{"frames": [[7, 8]]}"#).unwrap();
        assert_eq!(read(&p, 2).unwrap(), vec![vec![7, 8]]);
        std::fs::write(&p, "[[5,6]]").unwrap();
        assert_eq!(read(&p, 2).unwrap(), vec![vec![5, 6]]);
        std::fs::write(&p, "[[5,6,7]]").unwrap();
        assert!(read(&p, 2)
            .unwrap_err()
            .to_string()
            .contains("frame 0 has 3 tokens"));
        std::fs::write(&p, "[]").unwrap();
        assert!(read(&p, 2).unwrap_err().to_string().contains("no frames"));
        std::fs::write(&p, "[[-1, 2]]").unwrap();
        assert!(read(&p, 2).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
