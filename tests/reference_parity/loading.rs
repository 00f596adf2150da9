//! Checkpoint tensors crossing to the GPU (CUDA builds only): a tensor of several blocks,
//! read through the page-locked double buffers, arrives exactly as the host reads it — f32 as
//! stored, rounded to bf16 as the host rounds, and as the f32 blocks FP8 quantisation reads —
//! and a value that is not finite in a later block is named. Not a fixture test: the
//! checkpoint is written here. Needs `HEARTSTREAM_TEST_DEVICE=cuda`.

use candle_core::{DType, Device, Tensor};
use heartstream::weights::WeightStore;

use crate::fixture::test_device;

/// Rows of 3,001 f32: 72 MB, more than two of the GPU path's 32 MB blocks.
const ROWS: usize = 6000;
const COLS: usize = 3001;

fn write(dir: &std::path::Path, name: &str, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![values.len() / COLS, COLS],
        &bytes,
    )
    .unwrap();
    safetensors::serialize_to_file([(name, view)], None, &dir.join("model.safetensors")).unwrap();
}

fn bits(t: &Tensor) -> Vec<u32> {
    let f = t
        .to_device(&Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    f.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn tensors_of_several_blocks_reach_the_gpu_exactly() {
    let dev = test_device();
    assert!(dev.is_cuda(), "set HEARTSTREAM_TEST_DEVICE=cuda");
    let dir = tempfile::tempdir().unwrap();
    // Values with ties at bf16's rounding and subnormals among them.
    let values: Vec<f32> = (0..(ROWS * COLS) as u32)
        .map(|i| f32::from_bits(i.wrapping_mul(2_654_435_761) & 0xbeff_ffff))
        .collect();
    write(dir.path(), "w", &values);
    let store = WeightStore::open(dir.path()).unwrap();
    let host = store.load("w", DType::F32, &Device::Cpu).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let got = store.load("w", dtype, &dev).unwrap();
        assert_eq!(got.dims(), [ROWS, COLS]);
        assert_eq!(got.dtype(), dtype);
        let want = host.to_dtype(dtype).unwrap();
        assert!(
            bits(&got) == bits(&want),
            "{dtype:?} differs from the host's"
        );
    }
    let blocks: Vec<Tensor> = store
        .blocks_on("w", &dev)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(blocks.len() > 2, "{} blocks", blocks.len());
    assert!(bits(&Tensor::cat(&blocks, 0).unwrap()) == bits(&host));
}

#[test]
fn a_value_that_is_not_finite_in_a_later_gpu_block_is_named() {
    let dev = test_device();
    assert!(dev.is_cuda(), "set HEARTSTREAM_TEST_DEVICE=cuda");
    let dir = tempfile::tempdir().unwrap();
    let mut values = vec![0.5f32; ROWS * COLS];
    let bad = (ROWS - 3) * COLS + 17;
    values[bad] = f32::INFINITY;
    write(dir.path(), "w", &values);
    let store = WeightStore::open(dir.path()).unwrap();
    for dtype in [DType::F32, DType::BF16] {
        let err = store.load("w", dtype, &dev).unwrap_err().to_string();
        assert!(
            err.contains(&format!("element {bad} is not finite")),
            "{err}"
        );
    }
}
