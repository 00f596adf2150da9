//! Loading the official checkpoint layout: single-file and sharded safetensors, the real
//! model's tensor list, and a clear error for every kind of bad checkpoint.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use heartstream::lm::spec::lm_spec;
use heartstream::lm::{
    FrameGenerator, GenConfig, GenerationOptions, HeartMuLa, KvPrecision, LmConfig,
    MatrixPrecision, Prompt, SamplingParams,
};
use heartstream::weights::ReadTimes;

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
    match HeartMuLa::load(dir, &Device::Cpu, DType::F32, MatrixPrecision::Dense) {
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
        kv: KvPrecision::Dense,
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

    // Both precisions: FP8 quantises each shard's tensors as they are read.
    for matrices in [MatrixPrecision::Dense, MatrixPrecision::Fp8] {
        let load = |dir: &Path| HeartMuLa::load(dir, &Device::Cpu, DType::F32, matrices).unwrap();
        let (sharded, single) = (load(dir.path()), load(&fixture_lm()));
        assert_eq!(
            greedy_frames(sharded, 4),
            greedy_frames(single, 4),
            "{matrices:?}"
        );
    }
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
    assert!(HeartMuLa::load(dir.path(), &Device::Cpu, DType::F32, MatrixPrecision::Dense).is_ok());
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
    let model = Arc::new(
        HeartMuLa::load(
            &fixture_lm(),
            &Device::Cpu,
            DType::F32,
            MatrixPrecision::Dense,
        )
        .unwrap(),
    );
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
        kv: KvPrecision::Dense,
    };
    assert!(FrameGenerator::new(model.clone(), gen, prompt.clone(), options(fits)).is_ok());
    let e = FrameGenerator::new(model, gen, prompt, options(fits + 1))
        .err()
        .expect("one frame too many is refused")
        .to_string();
    assert!(e.contains("max_seq_len"), "{e}");
}

/// A copy of the fixture's LM folder whose config.json is edited by `edit`.
fn folder_with_config(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = folder_with(&fixture_tensors());
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir
}

#[test]
fn out_of_range_config_values_name_the_field_and_the_file() {
    let backbone = |field: &'static str, value: serde_json::Value| {
        move |c: &mut serde_json::Value| c["flavors"]["tiny-backbone"][field] = value
    };
    for (dir, needle) in [
        (
            folder_with_config(backbone("max_seq_len", (1u64 << 40).into())),
            "max_seq_len 1099511627776",
        ),
        (
            folder_with_config(backbone("max_seq_len", u64::MAX.into())),
            "max_seq_len 18446744073709551615",
        ),
        (
            folder_with_config(backbone("rope_base", 0.into())),
            "rope_base 0",
        ),
        (
            folder_with_config(backbone("rope_base", (-5).into())),
            "rope_base -5",
        ),
        (
            folder_with_config(backbone("norm_eps", (-1e-5).into())),
            "norm_eps -0.00001",
        ),
        (
            folder_with_config(backbone("num_layers", 0.into())),
            "num_layers 0",
        ),
        (
            folder_with_config(|c| c["audio_num_codebooks"] = 1.into()),
            "audio_num_codebooks 1",
        ),
    ] {
        let e = load_err(dir.path());
        assert!(e.contains(needle), "{needle}: {e}");
        assert!(
            e.contains("config.json"),
            "{needle}: the file is named: {e}"
        );
    }
}

#[test]
fn non_finite_or_integer_weights_are_refused_by_name() {
    let mut tensors = fixture_tensors();
    let name = "backbone.layers.1.mlp.w2.weight";
    let mut values: Vec<f32> = tensors[name].flatten_all().unwrap().to_vec1().unwrap();
    values[7] = f32::NAN;
    let shape = tensors[name].shape().clone();
    tensors.insert(
        name.into(),
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap(),
    );
    let e = load_err(folder_with(&tensors).path());
    assert!(
        e.contains(name) && e.contains("element 7 is not finite"),
        "{e}"
    );

    // Every weight NaN (the issue's all-NaN checkpoint): refused, not every code 0.
    let nan: HashMap<String, Tensor> = fixture_tensors()
        .into_iter()
        .map(|(k, t)| (k, (t * f64::NAN).unwrap()))
        .collect();
    assert!(load_err(folder_with(&nan).path()).contains("not finite"));

    // F32 bytes labelled I32 in the header (same size, so the file is otherwise valid).
    let dir = folder_with(&fixture_tensors());
    let file = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let relabelled = header.replacen("\"F32\"", "\"I32\"", 1);
    bytes[8..8 + header_len].copy_from_slice(relabelled.as_bytes());
    std::fs::write(&file, bytes).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains("stored as I32") && e.contains("floating-point"),
        "{e}"
    );
}

/// Overwrites the first element of tensor `name` (f32) in a safetensors file with `value`.
fn poison_in_place(file: &Path, name: &str, value: f32) {
    let mut bytes = std::fs::read(file).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let entry = &header[name];
    assert_eq!(entry["dtype"], "F32", "{name}");
    let start = 8 + header_len + entry["data_offsets"][0].as_u64().unwrap() as usize;
    bytes[start..start + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_codec_weight_that_is_not_finite_is_refused_by_name() {
    let fixture = fixture_lm().with_file_name("heartcodec");
    let name = "scalar_model.decoder.1.convs.0.conv1.bias";
    let dir = tempfile::tempdir().unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    poison_in_place(&dir.path().join("model.safetensors"), name, f32::INFINITY);
    let precision = heartstream::codec::CodecPrecision::uniform(DType::F32);
    let e = match heartstream::codec::HeartCodec::load(dir.path(), &Device::Cpu, precision) {
        Ok(_) => panic!("loaded a codec with an infinite weight"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains(name) && e.contains("element 0 is not finite"),
        "{e}"
    );
}

#[test]
fn special_files_and_escaping_index_entries_are_refused_by_name() {
    // A folder named model.safetensors is not "missing".
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_lm().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors is a folder"), "{e}");

    // A FIFO named config.json is refused at once instead of hanging the loader.
    let dir = folder_with(&fixture_tensors());
    let config = dir.path().join("config.json");
    std::fs::remove_file(&config).unwrap();
    assert!(std::process::Command::new("mkfifo")
        .arg(&config)
        .status()
        .unwrap()
        .success());
    let e = load_err(dir.path());
    assert!(e.contains("config.json is a FIFO"), "{e}");

    // Index entries may not leave the model folder.
    for outside in [
        "../HeartCodec-oss/model.safetensors",
        "/etc/passwd",
        "sub/model.safetensors",
    ] {
        let dir = folder_with(&fixture_tensors());
        let index = serde_json::json!({"weight_map": {"backbone.norm.scale": outside}});
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        let e = load_err(dir.path());
        assert!(
            e.contains(outside) && e.contains("expected a file name inside"),
            "{e}"
        );
    }
}

#[test]
fn loading_accounts_every_byte_it_reads_to_the_loading_thread() {
    // Every tensor of the fixture's file is one the model loads, so a load reads exactly the
    // file's data section: its length less the 8-byte header size and the header.
    let file = fixture_lm().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    let data = bytes.len() as u64 - 8 - header;
    for matrices in [MatrixPrecision::Dense, MatrixPrecision::Fp8] {
        let before = ReadTimes::of_this_thread();
        HeartMuLa::load(&fixture_lm(), &Device::Cpu, DType::F32, matrices).unwrap();
        let read = ReadTimes::of_this_thread().since(before);
        assert_eq!(read.bytes, data, "{matrices:?}");
        assert!(read.read_ms > 0.0 && read.copy_ms > 0.0, "{read:?}");
    }
    // Another thread's loads are not this thread's.
    let before = ReadTimes::of_this_thread();
    std::thread::spawn(|| {
        HeartMuLa::load(
            &fixture_lm(),
            &Device::Cpu,
            DType::F32,
            MatrixPrecision::Dense,
        )
        .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(ReadTimes::of_this_thread(), before);
}
