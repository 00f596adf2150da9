//! The prompt token grid, built exactly as heartlib's `HeartMuLaGenPipeline.preprocess`:
//! rows of `audio_num_codebooks + 1` columns, the text id in the last column (the only one the
//! mask lets through), tags first, then the muq slot, then the lyrics.

use anyhow::{bail, Result};

use super::config::GenConfig;
use super::tokenizer::TextTokenizer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    /// Text id of each row; the audio columns of a prompt row are all `0` and masked out.
    pub text: Vec<u32>,
    /// Row of the muq (reference-audio) slot: just after the tags.
    pub muq_row: usize,
}

impl Prompt {
    /// Lower-cases, wraps the tags in `<tag>…</tag>` and tokenizes both texts.
    pub fn from_text(
        tags: &str,
        lyrics: &str,
        tokenizer: &TextTokenizer,
        gen: &GenConfig,
    ) -> Result<Prompt> {
        if tags.trim().is_empty() {
            bail!(
                "the tags are empty: give comma-separated style tags, e.g. --tags \"piano,happy\""
            );
        }
        if lyrics.trim().is_empty() {
            bail!("the lyrics are empty: give the song's lyrics, e.g. --lyrics \"[Verse] ...\" or --lyrics @lyrics.txt");
        }
        let mut tags = tags.to_lowercase();
        if !tags.starts_with("<tag>") {
            tags.insert_str(0, "<tag>");
        }
        if !tags.ends_with("</tag>") {
            tags.push_str("</tag>");
        }
        let lyrics = lyrics.to_lowercase();
        Ok(Self::from_ids(
            tokenizer.encode(&tags)?,
            tokenizer.encode(&lyrics)?,
            gen,
        ))
    }

    /// Builds the grid from already tokenized texts, adding BOS/EOS where missing.
    pub fn from_ids(tags: Vec<u32>, lyrics: Vec<u32>, gen: &GenConfig) -> Prompt {
        let tags = with_bos_eos(tags, gen);
        let lyrics = with_bos_eos(lyrics, gen);
        let muq_row = tags.len();
        let mut text = tags;
        text.push(0);
        text.extend(lyrics);
        Prompt { text, muq_row }
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

fn with_bos_eos(mut ids: Vec<u32>, gen: &GenConfig) -> Vec<u32> {
    if ids.first() != Some(&gen.text_bos_id) {
        ids.insert(0, gen.text_bos_id);
    }
    if ids.last() != Some(&gen.text_eos_id) {
        ids.push(gen.text_eos_id);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    const GEN: GenConfig = GenConfig {
        text_bos_id: 1000,
        text_eos_id: 1001,
        audio_eos_id: 513,
        empty_id: 0,
    };

    #[test]
    fn layout_is_tags_muq_slot_lyrics_with_bos_and_eos() {
        let p = Prompt::from_ids(vec![1000, 5, 6], vec![7], &GEN);
        assert_eq!(p.text, vec![1000, 5, 6, 1001, 0, 1000, 7, 1001]);
        assert_eq!(p.muq_row, 4);
    }

    #[test]
    fn text_is_lowercased_and_tags_wrapped_once() {
        let tok = TextTokenizer::Bytes { offset: 0 };
        let p = Prompt::from_text("<tag>Piano</tag>", "La", &tok, &GEN).unwrap();
        let tags: Vec<u32> = "<tag>piano</tag>".bytes().map(u32::from).collect();
        assert_eq!(&p.text[1..=tags.len()], tags.as_slice());
        let q = Prompt::from_text("Piano", "La", &tok, &GEN).unwrap();
        assert_eq!(p, q);
        assert_eq!(
            &q.text[q.len() - 3..],
            &[u32::from(b'l'), u32::from(b'a'), 1001]
        );
    }

    #[test]
    fn empty_texts_are_refused_by_name() {
        let tok = TextTokenizer::Bytes { offset: 0 };
        let e = Prompt::from_text(" ", "la", &tok, &GEN)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tags"), "{e}");
        let e = Prompt::from_text("piano", "", &tok, &GEN)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lyrics"), "{e}");
    }
}
