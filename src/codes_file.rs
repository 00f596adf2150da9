//! The codes JSON written by `heartstream codes` and read by `heartstream decode`:
//! `{"frame_rate_hz": 12.5, "frames": [[c0, …, c7], …]}` — one row per 80 ms frame, one token
//! per codebook, as the LM emitted them (special ids above the codebook included). A bare
//! `[[…], …]` array is read too.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::files::OutputFile;

/// Writes `frames` into `out` (opened before the work, so a bad path failed early).
pub fn write(mut out: OutputFile, frame_rate_hz: f64, frames: &[Vec<u32>]) -> Result<()> {
    let file = serde_json::json!({ "frame_rate_hz": frame_rate_hz, "frames": frames });
    let text = serde_json::to_string(&file)?;
    let target = out.target().display().to_string();
    let result = out.file().write_all(text.as_bytes());
    result.with_context(|| format!("cannot write {target}"))?;
    out.commit().map(drop)
}

/// Reads frames and checks they form a rectangle of `codebooks` columns of tokens.
pub fn read(path: &Path, codebooks: usize) -> Result<Vec<Vec<u32>>> {
    let what = format!("--codes {}", path.display());
    let text =
        crate::files::read_regular(path, "a codes JSON file").with_context(|| what.clone())?;
    parse(&text, codebooks).with_context(|| what)
}

/// The frames of a codes JSON text; errors name the frame and codebook at fault.
pub fn parse(text: &str, codebooks: usize) -> Result<Vec<Vec<u32>>> {
    let expected = format!("expected {{\"frames\": [[{codebooks} tokens], …]}}");
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("not JSON ({expected})"))?;
    let rows = match &value {
        Value::Array(rows) => rows,
        Value::Object(map) => match map.get("frames") {
            Some(Value::Array(rows)) => rows,
            Some(_) => bail!("\"frames\" is not an array: {expected}"),
            None => bail!("no \"frames\" key: {expected}"),
        },
        _ => bail!("{expected}"),
    };
    if rows.is_empty() {
        bail!("holds no frames");
    }
    rows.iter()
        .enumerate()
        .map(|(i, row)| frame(i, row, codebooks))
        .collect()
}

fn frame(index: usize, row: &Value, codebooks: usize) -> Result<Vec<u32>> {
    let Value::Array(tokens) = row else {
        bail!("frame {index} is not an array of {codebooks} tokens");
    };
    if tokens.len() != codebooks {
        bail!(
            "frame {index} has {} tokens, expected one per codebook ({codebooks})",
            tokens.len()
        );
    }
    tokens
        .iter()
        .enumerate()
        .map(|(codebook, t)| {
            t.as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .with_context(|| {
                    format!(
                        "frame {index}, codebook {codebook}: {t} is not a token \
                         (expected an integer from 0 to {})",
                        u32::MAX
                    )
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        format!("{:#}", parse(text, 2).unwrap_err())
    }

    #[test]
    fn round_trips_and_reads_bare_arrays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        let frames = vec![vec![1, 2], vec![3, 8193]];
        write(OutputFile::create(&p, "--out").unwrap(), 12.5, &frames).unwrap();
        assert_eq!(read(&p, 2).unwrap(), frames);
        assert_eq!(
            parse(r#"{"frames": [[7, 8]]}"#, 2).unwrap(),
            vec![vec![7, 8]]
        );
        assert_eq!(parse("[[5,6]]", 2).unwrap(), vec![vec![5, 6]]);
    }

    #[test]
    fn bad_codes_are_named_by_frame_and_codebook() {
        assert!(error("[[5,6,7]]").contains("frame 0 has 3 tokens"));
        assert!(error("[]").contains("no frames"));
        assert!(error("[[1, 2], [3, -1]]").contains("frame 1, codebook 1: -1 is not a token"));
        assert!(error("[[1.5, 2]]").contains("codebook 0: 1.5"));
        assert!(error("[[1, 4294967296]]").contains("4294967296 is not a token"));
        assert!(error("[[1, 2], 3]").contains("frame 1 is not an array"));
        assert!(error(r#"{"codes": []}"#).contains("no \"frames\" key"));
        assert!(error("{").contains("not JSON"));
    }
}
