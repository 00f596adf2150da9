//! Property-based fuzzing of every parser that reads a user's file: the safetensors header
//! (through the checkpoint loader), HeartMuLa's and HeartCodec's config.json, and the codes
//! JSON. Whatever the bytes, each returns a value or an error — never a panic, an abort or
//! a hang — and what it accepts is valid. The case count bounds the time CI spends here;
//! failures proptest finds are kept in proptest-regressions/ and replayed first, and the
//! inputs that broke the parsers before are regression tests below.

use std::path::Path;

use candle_core::{DType, Device};
use heartstream::codec::{CodecConfig, CodecPrecision, HeartCodec};
use heartstream::lm::{HeartMuLa, LmConfig, MatrixPrecision};
use proptest::prelude::*;
use serde_json::Value;

fn fixture(model: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference-tiny")
        .join(model)
}

fn fixture_bytes(model: &str, file: &str) -> Vec<u8> {
    std::fs::read(fixture(model).join(file)).unwrap()
}

/// A model folder with the fixture's config and `weights` as model.safetensors.
fn load_lm_from(weights: &[u8]) -> Result<HeartMuLa, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("heartmula").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    HeartMuLa::load(dir.path(), &Device::Cpu, DType::F32, MatrixPrecision::Dense)
        .map_err(|e| format!("{e:#}"))
}

/// The LM's header region: the 8-byte length and the JSON after it.
fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

/// Mutates a JSON value: replaces, removes or retypes values anywhere in the tree.
fn mutate(value: &mut Value, path: &[usize], replacement: &Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(path.first().copied().unwrap_or(0) % map.len())
                .cloned()
                .unwrap();
            if path.len() <= 1 {
                if replacement.is_null() {
                    map.remove(&key);
                } else {
                    map.insert(key, replacement.clone());
                }
            } else {
                mutate(map.get_mut(&key).unwrap(), &path[1..], replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = path.first().copied().unwrap_or(0) % items.len();
            if path.len() <= 1 {
                items[i] = replacement.clone();
            } else {
                mutate(&mut items[i], &path[1..], replacement);
            }
        }
        other => *other = replacement.clone(),
    }
}

/// Values a config field might be given by mistake or malice.
fn odd_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..4).prop_map(Value::from),
        prop::num::f64::ANY
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[a-z0-9_.-]{0,12}".prop_map(Value::from),
        Just(Value::Array(vec![])),
        prop::collection::vec(0u64..20, 0..6).prop_map(Value::from),
        Just(serde_json::json!({})),
    ]
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn safetensors_headers_with_bytes_changed_load_or_fail_cleanly(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut bytes = fixture_bytes("heartmula", "model.safetensors");
        let end = header_end(&bytes);
        for (at, byte) in edits {
            let i = at.index(end);
            bytes[i] = byte;
        }
        // An Ok is fine too (a change inside a number can keep the header valid).
        let _ = load_lm_from(&bytes);
    }

    #[test]
    fn truncated_or_random_safetensors_fail_cleanly(
        keep in any::<prop::sample::Index>(),
        noise in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let bytes = fixture_bytes("heartmula", "model.safetensors");
        let mut cut = bytes[..keep.index(bytes.len())].to_vec();
        cut.extend(noise);
        prop_assert!(load_lm_from(&cut).is_err());
    }

    #[test]
    fn lm_configs_parse_to_a_valid_config_or_an_error(
        path in prop::collection::vec(0usize..64, 1..4),
        value in odd_value(),
    ) {
        let mut config: Value = serde_json::from_slice(&fixture_bytes("heartmula", "config.json")).unwrap();
        mutate(&mut config, &path, &value);
        if let Ok(c) = LmConfig::from_json(&config.to_string()) {
            for f in [&c.backbone, &c.decoder] {
                prop_assert!(f.num_layers > 0 && f.head_dim() > 0 && f.head_dim() % 2 == 0);
                prop_assert!(f.num_heads % f.num_kv_heads == 0 && f.max_seq_len > 0);
                prop_assert!(f.norm_eps > 0.0 && f.rope_base > 1.0);
            }
            prop_assert!(c.audio_num_codebooks >= 2);
            // What validates can be built: its weight list never overflows.
            let _ = heartstream::lm::spec::lm_spec(&c);
        }
    }

    #[test]
    fn codec_configs_parse_to_a_valid_config_or_an_error(
        path in prop::collection::vec(0usize..64, 1..3),
        value in odd_value(),
    ) {
        let mut config: Value = serde_json::from_slice(&fixture_bytes("heartcodec", "config.json")).unwrap();
        mutate(&mut config, &path, &value);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(&file, config.to_string()).unwrap();
        if let Ok(c) = CodecConfig::from_file(&file) {
            prop_assert!(c.validate().is_ok());
            prop_assert!(c.rates().samples_per_latent > 0 && c.rates().frames_per_second() > 0.0);
            let _ = heartstream::codec::codec_spec(&c);
        }
    }

    #[test]
    fn codes_json_parses_to_rectangular_frames_or_an_error(text in "\\PC{0,64}") {
        if let Ok(frames) = heartstream::codes_file::parse(&text, 8) {
            prop_assert!(!frames.is_empty() && frames.iter().all(|f| f.len() == 8));
        }
    }

    #[test]
    fn structured_codes_json_is_accepted_exactly_when_well_formed(
        rows in prop::collection::vec(prop::collection::vec(odd_value(), 0..10), 0..5),
        wrapped in any::<bool>(),
    ) {
        let frames = Value::Array(rows.iter().cloned().map(Value::Array).collect());
        let text = if wrapped { serde_json::json!({"frames": frames}).to_string() } else { frames.to_string() };
        let well_formed = !rows.is_empty() && rows.iter().all(|r| {
            r.len() == 8 && r.iter().all(|t| t.as_u64().is_some_and(|v| v <= u32::MAX as u64))
        });
        prop_assert_eq!(heartstream::codes_file::parse(&text, 8).is_ok(), well_formed);
    }
}

/// A codec checkpoint whose weights file is `weights`, loaded.
fn load_codec_from(weights: &[u8]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("heartcodec").join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("model.safetensors"), weights).unwrap();
    HeartCodec::load(
        dir.path(),
        &Device::Cpu,
        CodecPrecision::uniform(DType::F32),
    )
    .map(drop)
    .map_err(|e| format!("{e:#}"))
}

#[test]
fn a_header_length_beyond_the_file_is_an_error() {
    let mut bytes = fixture_bytes("heartcodec", "model.safetensors");
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = load_codec_from(&bytes).unwrap_err();
    assert!(e.contains("model.safetensors"), "{e}");
}

/// Found by the fuzzer: a vocabulary this large overflowed the weight-shape arithmetic.
#[test]
fn a_huge_vocabulary_is_named_not_overflowed() {
    let mut config: Value =
        serde_json::from_slice(&fixture_bytes("heartmula", "config.json")).unwrap();
    config["text_vocab_size"] = 35_680_356_041_991_396u64.into();
    let e = format!(
        "{:#}",
        LmConfig::from_json(&config.to_string()).unwrap_err()
    );
    assert!(
        e.contains("text_vocab_size 35680356041991396 is invalid"),
        "{e}"
    );
}

/// Found by the fuzzer: a layer count this large made the codec's weight list loop for
/// minutes before any file was read.
#[test]
fn a_huge_codec_layer_count_is_refused_at_once() {
    let mut config: Value =
        serde_json::from_slice(&fixture_bytes("heartcodec", "config.json")).unwrap();
    config["num_layers"] = (1u64 << 62).into();
    let c: CodecConfig = serde_json::from_value(config).unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(
        e.contains("num_layers 4611686018427387904 is invalid"),
        "{e}"
    );
}
