//! Loading the official checkpoint layout: single-file and sharded safetensors, the real
//! model's tensor list, and a clear error for every kind of bad checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use heartstream::lm::spec::lm_spec;
use heartstream::lm::{
    FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, LmConfig, Prompt, SamplingParams,
};

fn fixture_lm() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference-tiny/heartmula")
}

fn fixture_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture_lm().join("model.safetensors"), &Device::Cpu).unwrap()
}

/// A model folder with the fixture's config and the given tensors in one file.
fn folder_with(tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

fn load_err(dir: &Path) -> String {
    match HeartMuLa::load(dir, &Device::Cpu, DType::F32) {
        Ok(_) => panic!("{} loaded, expected an error", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

fn greedy_frames(model: HeartMuLa, n: usize) -> Vec<Vec<u32>> {
    let gen = GenConfig {
        text_bos_id: 1000,
        text_eos_id: 1001,
        audio_eos_id: 513,
        empty_id: 0,
    };
    let prompt = Prompt::from_ids(vec![1, 2, 3], vec![4, 5], &gen);
    let sampling = SamplingParams {
        topk: 1,
        ..Default::default()
    };
    let options = GenerationOptions {
        sampling,
        max_frames: n,
        stop_at_eos: false,
    };
    let mut g = FrameGenerator::new(Arc::new(model), gen, prompt, options).unwrap();
    std::iter::from_fn(|| g.next_frame().unwrap()).collect()
}

#[test]
fn spec_of_the_default_config_is_exactly_the_real_3b_checkpoint() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/real-checkpoint-layout/heartmula-3b.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let real: BTreeMap<String, Vec<usize>> = json["tensors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            (k.clone(), shape)
        })
        .collect();
    let spec = lm_spec(&LmConfig::oss_3b());
    let ours: BTreeMap<String, Vec<usize>> = spec
        .required
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    assert_eq!(real.len(), 289);
    assert_eq!(ours, real);
}

#[test]
fn sharded_checkpoint_with_index_loads_like_the_single_file() {
    let tensors = fixture_tensors();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [first, second].iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let shard: HashMap<String, Tensor> = part
            .iter()
            .map(|n| ((*n).clone(), tensors[*n].clone()))
            .collect();
        candle_core::safetensors::save(&shard, dir.path().join(&file)).unwrap();
        for n in part.iter() {
            weight_map.insert((*n).clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let sharded = HeartMuLa::load(dir.path(), &Device::Cpu, DType::F32).unwrap();
    let single = HeartMuLa::load(&fixture_lm(), &Device::Cpu, DType::F32).unwrap();
    assert_eq!(greedy_frames(sharded, 4), greedy_frames(single, 4));
}

#[test]
fn rope_buffers_of_repacked_checkpoints_are_ignored() {
    let mut tensors = fixture_tensors();
    let extra = Tensor::zeros(8, DType::F32, &Device::Cpu).unwrap();
    tensors.insert(
        "backbone.layers.0.attn.pos_embeddings.theta".into(),
        extra.clone(),
    );
    tensors.insert("decoder.layers.1.attn.pos_embeddings.cache".into(), extra);
    let dir = folder_with(&tensors);
    assert!(HeartMuLa::load(dir.path(), &Device::Cpu, DType::F32).is_ok());
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_all_named_in_one_error() {
    let mut tensors = fixture_tensors();
    tensors.remove("backbone.norm.scale").unwrap();
    let projection = tensors["projection.weight"]
        .t()
        .unwrap()
        .contiguous()
        .unwrap();
    let (rows, cols) = projection.dims2().unwrap();
    tensors.insert("projection.weight".into(), projection);
    tensors.insert(
        "extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let e = load_err(folder_with(&tensors).path());
    assert!(
        e.contains("1 missing, 1 unexpected, 1 with the wrong shape"),
        "{e}"
    );
    assert!(e.contains("missing    backbone.norm.scale"), "{e}");
    assert!(e.contains("unexpected extra.weight"), "{e}");
    assert!(
        e.contains(&format!(
            "projection.weight: expected [{cols}, {rows}], found [{rows}, {cols}]"
        )),
        "{e}"
    );
}

#[test]
fn truncated_and_corrupt_safetensors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture_lm().join("model.safetensors")).unwrap();
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, &bytes[..bytes.len() * 3 / 5]).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(&file.display().to_string()) && e.contains("not a readable safetensors"),
        "{e}"
    );
    std::fs::write(&file, b"definitely not a safetensors header").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains(&file.display().to_string()), "{e}");
}

#[test]
fn pickle_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("pytorch_model.bin"), b"\x80\x02").unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("pytorch_model.bin") && e.contains("only safetensors"),
        "{e}"
    );
}

#[test]
fn missing_folder_config_and_shards_are_named() {
    let e = load_err(Path::new("/definitely/not/here"));
    assert!(e.contains("/definitely/not/here"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("config.json"), "{e}");

    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors"), "{e}");

    let index = r#"{"weight_map": {"backbone.norm.scale": "model-00001-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("model-00001-of-00002.safetensors") && e.contains("shard"),
        "{e}"
    );
}

#[test]
fn unknown_flavor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"backbone_flavor": "llama-9B"}"#,
    )
    .unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("llama-9B") && e.contains("unknown flavor"),
        "{e}"
    );
}

#[test]
fn prompt_plus_length_beyond_max_seq_len_is_refused() {
    let model = Arc::new(HeartMuLa::load(&fixture_lm(), &Device::Cpu, DType::F32).unwrap());
    let gen = GenConfig {
        text_bos_id: 1000,
        text_eos_id: 1001,
        audio_eos_id: 513,
        empty_id: 0,
    };
    let prompt = Prompt::from_ids(vec![1; 10], vec![2; 10], &gen);
    let limit = model.config.backbone.max_seq_len;
    let fits = limit + 1 - prompt.len();
    let options = |max_frames| GenerationOptions {
        sampling: SamplingParams::default(),
        max_frames,
        stop_at_eos: true,
    };
    assert!(FrameGenerator::new(model.clone(), gen, prompt.clone(), options(fits)).is_ok());
    let e = FrameGenerator::new(model, gen, prompt, options(fits + 1))
        .err()
        .expect("one frame too many is refused")
        .to_string();
    assert!(e.contains("max_seq_len"), "{e}");
}
