//! FP8 matrices made and decoded on the test device against the host's bytes: on a GPU the
//! codes and scales come from a quantising kernel and the prompt's matrices from a decoding
//! kernel, and both must round exactly as the host does (the fused step and the CPU path read
//! the same codes). On the CPU both sides are the host.

use candle_core::{DType, Device, Tensor};
use heartstream::weights::Fp8Matrix;

use crate::fixture::test_device;

/// Rows spanning E4M3's range after scaling: magnitudes over 12 decades (many codes land in
/// the subnormal range of their row), both signs, zeros, and one all-zero row.
fn values(rows: usize, cols: usize) -> Vec<f32> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..rows * cols)
        .map(|i| {
            let (row, col) = (i / cols, i % cols);
            let (u, v) = (next(), next());
            if row == 3 || col % 17 == 0 {
                0.0
            } else {
                (u - 0.5) * 10f32.powf(12.0 * v - 8.0) * (1.0 + row as f32)
            }
        })
        .collect()
}

fn bits(t: &Tensor) -> Vec<u32> {
    let t = t.flatten_all().unwrap().to_dtype(DType::F32).unwrap();
    t.to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn fp8_matrices_made_and_decoded_on_the_test_device_are_the_hosts_byte_for_byte() {
    // Rows of whole groups of sixteen codes (decoded sixteen a thread on a GPU) and rows of not.
    for (rows, cols) in [(37, 1008), (9, 1003)] {
        check_shape(rows, cols);
    }
}

fn check_shape(rows: usize, cols: usize) {
    let device = test_device();
    let host_values = Tensor::from_vec(values(rows, cols), (rows, cols), &Device::Cpu).unwrap();
    let host = Fp8Matrix::quantize_tensor(&host_values, &Device::Cpu).unwrap();
    let on_device =
        Fp8Matrix::quantize_tensor(&host_values.to_device(&device).unwrap(), &device).unwrap();
    assert!(on_device.codes().device().same_device(&device));
    assert_eq!(bits(on_device.codes()), bits(host.codes()), "codes");
    assert_eq!(bits(on_device.scales()), bits(host.scales()), "scales");
    let codes: Vec<u8> = host.codes().flatten_all().unwrap().to_vec1().unwrap();
    let subnormal = codes
        .iter()
        .filter(|&&c| c & 0x78 == 0 && c & 0x7 != 0)
        .count();
    assert!(
        subnormal > rows * cols / 40,
        "only {subnormal} subnormal codes exercised"
    );
    for dtype in [DType::F32, DType::BF16] {
        assert_eq!(
            bits(&on_device.dequantize(dtype).unwrap()),
            bits(&host.dequantize(dtype).unwrap()),
            "{rows}×{cols} decoded to {dtype:?}"
        );
    }
}
