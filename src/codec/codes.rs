//! Code frames as the language model emits them: one code per codebook per frame (12.5 Hz).

use super::config::CodecConfig;
use super::error::CodecInputError;

/// Validated code frames, frame-major: `as_slice()[frame * num_codebooks + codebook]`.
/// Every code is below the codebook size, so the RVQ lookup can never index out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFrames {
    codes: Vec<u32>,
    num_codebooks: usize,
    codebook_size: usize,
}

impl CodeFrames {
    /// No frames yet, for the codebooks of `config`.
    pub fn empty(config: &CodecConfig) -> Self {
        Self {
            codes: Vec::new(),
            num_codebooks: config.num_quantizers,
            codebook_size: config.codebook_size,
        }
    }

    /// Validates every frame; the error names the first bad frame, codebook and value.
    pub fn from_frames<F: AsRef<[u32]>>(
        frames: &[F],
        config: &CodecConfig,
    ) -> Result<Self, CodecInputError> {
        let mut codes = Self::empty(config);
        for frame in frames {
            codes.push(frame.as_ref())?;
        }
        Ok(codes)
    }

    /// Appends one frame after checking it; a rejected frame leaves `self` unchanged.
    pub fn push(&mut self, frame: &[u32]) -> Result<(), CodecInputError> {
        let index = self.len();
        if frame.len() != self.num_codebooks {
            return Err(CodecInputError::WrongCodebookCount {
                frame: index,
                found: frame.len(),
                expected: self.num_codebooks,
            });
        }
        if let Some((codebook, &value)) = frame
            .iter()
            .enumerate()
            .find(|(_, &c)| c as usize >= self.codebook_size)
        {
            return Err(CodecInputError::CodeOutOfRange {
                frame: index,
                codebook,
                value,
                codebook_size: self.codebook_size,
            });
        }
        self.codes.extend_from_slice(frame);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.codes.len() / self.num_codebooks
    }

    pub fn is_empty(&self) -> bool {
        self.codes.is_empty()
    }

    pub fn num_codebooks(&self) -> usize {
        self.num_codebooks
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.codes
    }

    /// An error unless there is at least one frame.
    pub fn require_frames(&self) -> Result<(), CodecInputError> {
        if self.is_empty() {
            return Err(CodecInputError::NoCodes {
                num_codebooks: self.num_codebooks,
            });
        }
        Ok(())
    }

    /// Frames `start .. start + len` of the sequence repeated end to end: frame j is frame
    /// `j % self.len()`, which is what heartlib's `torch.cat([codes, codes], -1)` padding
    /// produces. Panics on an empty sequence (callers check `require_frames` first).
    pub fn cyclic(&self, start: usize, len: usize) -> Self {
        let n = self.len();
        let q = self.num_codebooks;
        let codes = (start..start + len)
            .flat_map(|j| &self.codes[(j % n) * q..(j % n + 1) * q])
            .copied()
            .collect();
        Self { codes, ..*self }
    }
}

/// Replaces codes the codec cannot look up. The LM's vocabulary has special ids above the
/// codebook (EOS among them); they can appear in codebooks 1–7, or anywhere with
/// `--ignore-eos`. Each is replaced by the last valid code of its codebook (0 before any),
/// which continues the sound instead of inventing one; replacements are counted.
#[derive(Debug, Clone)]
pub struct CodeSanitizer {
    codebook_size: u32,
    last: Vec<u32>,
    pub replaced: usize,
}

impl CodeSanitizer {
    pub fn new(codebook_size: usize, num_codebooks: usize) -> Self {
        Self {
            codebook_size: codebook_size as u32,
            last: vec![0; num_codebooks],
            replaced: 0,
        }
    }

    pub fn clean(&mut self, frame: &mut [u32]) {
        for (code, last) in frame.iter_mut().zip(self.last.iter_mut()) {
            if *code < self.codebook_size {
                *last = *code;
            } else {
                *code = *last;
                self.replaced += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CodecConfig {
        CodecConfig {
            num_quantizers: 2,
            codebook_size: 10,
            ..CodecConfig::default()
        }
    }

    #[test]
    fn bad_frames_are_named_precisely() {
        let err = CodeFrames::from_frames(&[vec![1, 2], vec![3, 10]], &config()).unwrap_err();
        assert_eq!(
            err,
            CodecInputError::CodeOutOfRange {
                frame: 1,
                codebook: 1,
                value: 10,
                codebook_size: 10
            }
        );
        assert!(err.to_string().contains("code 10 in frame 1, codebook 1"));
        let err = CodeFrames::from_frames(&[vec![1, 2, 3]], &config()).unwrap_err();
        assert_eq!(
            err,
            CodecInputError::WrongCodebookCount {
                frame: 0,
                found: 3,
                expected: 2
            }
        );
        let empty = CodeFrames::from_frames::<Vec<u32>>(&[], &config()).unwrap();
        assert!(matches!(
            empty.require_frames(),
            Err(CodecInputError::NoCodes { .. })
        ));
    }

    #[test]
    fn cyclic_padding_repeats_the_whole_sequence() {
        let codes = CodeFrames::from_frames(&[[0, 1], [2, 3], [4, 5]], &config()).unwrap();
        assert_eq!(codes.cyclic(2, 4).as_slice(), &[4, 5, 0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn special_codes_hold_the_last_valid_code_of_their_codebook() {
        let mut s = CodeSanitizer::new(512, 3);
        let mut a = [513, 7, 511];
        s.clean(&mut a);
        assert_eq!(a, [0, 7, 511]);
        let mut b = [5, 514, 512];
        s.clean(&mut b);
        assert_eq!(b, [5, 7, 511]);
        assert_eq!(s.replaced, 3);
    }
}
