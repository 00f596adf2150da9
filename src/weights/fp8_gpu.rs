//! FP8 quantisation and decoding on the GPU (`fp8.cu`). A matrix already on the device is
//! quantised where it is, instead of crossing to the host and back (the host took ~18 s for
//! the 3B LM's matrices; the device takes milliseconds). The codes and scales are the host's:
//! the first matrix's first and last rows are checked against host quantisation, and a
//! difference turns GPU quantisation off for the process, with a warning. Decoding (for the
//! LM's prompt step and every FP8 flow-matching product, which multiply with whole matrices)
//! is one pass from codes to the target dtype, where the generic path took three through f32.

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, CudaStorageSlice, WrapErr};
use candle_core::{CudaDevice, DType, Device, Result, Storage, Tensor};

use super::Fp8Matrix;

static DISABLED: AtomicBool = AtomicBool::new(false);
/// Whether a quantised block was compared with the host's yet. Once is enough (kernel and
/// host either agree or not, for the process); comparing every block made the loader wait
/// for each block's copy before reading the next (~500 blocks for the 3B LM).
static COMPARED: AtomicBool = AtomicBool::new(false);

/// `rows` (rows, cols) on `dev` quantised there, or `None` where the host must do it.
pub(super) fn quantize(rows: &Tensor, dev: &CudaDevice) -> Result<Option<Fp8Matrix>> {
    if DISABLED.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let (n, cols) = rows.dims2()?;
    if n == 0 || cols == 0 {
        return Ok(None);
    }
    let Some(ptx) = super::kernels::ptx(dev)? else {
        DISABLED.store(true, Ordering::Relaxed);
        return Ok(None);
    };
    let func = dev.get_or_load_custom_func("quantize_e4m3_rows", super::kernels::MODULE, ptx)?;
    let values = rows.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = values.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        return Ok(None);
    };
    let CudaStorageSlice::F32(slice) = &cs.slice else {
        return Ok(None);
    };
    let input = slice.slice(layout.start_offset()..);
    // SAFETY: the kernel writes every code and every scale.
    let mut codes: CudaSlice<u8> = unsafe { dev.alloc::<u8>(n * cols)? };
    let mut scales: CudaSlice<f32> = unsafe { dev.alloc::<f32>(n)? };
    let cols_arg = cols as i32;
    let mut launch = func.builder();
    launch.arg(&input);
    launch.arg(&mut codes);
    launch.arg(&mut scales);
    launch.arg(&cols_arg);
    let cfg = LaunchConfig {
        grid_dim: (n as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: the arguments match the kernel's (const float*, u8*, float*, int), the input
    // holds n·cols values and the kernel's block size is the one it was written for.
    unsafe { launch.launch(cfg) }.w()?;
    drop(storage);
    let made = Fp8Matrix::from_parts(
        crate::gpu::tensor_of(codes, dev, (n, cols)),
        crate::gpu::tensor_of(scales, dev, n),
    );
    if COMPARED.swap(true, Ordering::Relaxed) {
        return Ok(Some(made));
    }
    if let Some(row) = first_difference(&values, &made)? {
        DISABLED.store(true, Ordering::Relaxed);
        tracing::warn!(
            "FP8 codes quantised on the GPU differ from the host's in row {row}; \
             quantising on the host from now on"
        );
        return Ok(None);
    }
    Ok(Some(made))
}

/// `m` decoded to `dtype` (f32 or bf16) on `dev`, or `None` where the generic path must do it.
pub(super) fn dequantize(m: &Fp8Matrix, dtype: DType, dev: &CudaDevice) -> Result<Option<Tensor>> {
    let (rows, cols) = m.dims();
    if rows * cols == 0 {
        return Ok(None);
    }
    let Some(ptx) = super::kernels::ptx(dev)? else {
        return Ok(None);
    };
    let (codes, codes_layout) = m.codes().storage_and_layout();
    let (scales, scales_layout) = m.scales().storage_and_layout();
    let (Storage::Cuda(codes), Storage::Cuda(scales)) = (&*codes, &*scales) else {
        return Ok(None);
    };
    let (CudaStorageSlice::U8(codes), CudaStorageSlice::F32(scales)) =
        (&codes.slice, &scales.slice)
    else {
        return Ok(None);
    };
    let args = DecodeArgs {
        codes: codes.slice(codes_layout.start_offset()..),
        scales: scales.slice(scales_layout.start_offset()..),
        rows,
        cols,
        ptx,
        // Sixteen codes a thread where rows split into aligned groups of sixteen.
        by_sixteen: cols % 16 == 0
            && codes_layout.start_offset() % 16 == 0
            && rows * cols / 16 <= u32::MAX as usize,
    };
    Ok(Some(match dtype {
        DType::F32 => args.decode::<f32>("dequantize_e4m3_f32", dev)?,
        DType::BF16 => args.decode::<half::bf16>("dequantize_e4m3_bf16", dev)?,
        _ => return Ok(None),
    }))
}

/// What a dequantising kernel reads.
struct DecodeArgs<'a> {
    codes: CudaView<'a, u8>,
    scales: CudaView<'a, f32>,
    rows: usize,
    cols: usize,
    ptx: &'static str,
    by_sixteen: bool,
}

impl DecodeArgs<'_> {
    /// Runs `kernel` (its output type `T`; its `_x16` twin where `by_sixteen`) into a fresh
    /// (rows, cols) tensor.
    fn decode<T: CudaDType + DeviceRepr>(&self, kernel: &str, dev: &CudaDevice) -> Result<Tensor> {
        const THREADS: usize = 256;
        let n = self.rows * self.cols;
        // SAFETY: the kernel writes all n elements.
        let mut out: CudaSlice<T> = unsafe { dev.alloc::<T>(n)? };
        let (items, func) = if self.by_sixteen {
            let name = format!("{kernel}_x16");
            (
                n / 16,
                dev.get_or_load_custom_func(&name, super::kernels::MODULE, self.ptx)?,
            )
        } else {
            (
                n,
                dev.get_or_load_custom_func(kernel, super::kernels::MODULE, self.ptx)?,
            )
        };
        let (groups, groups_per_row) = ((n / 16) as u32, (self.cols / 16) as u32);
        let (count, width) = (n as u64, self.cols as u64);
        let mut launch = func.builder();
        launch.arg(&self.codes).arg(&self.scales).arg(&mut out);
        if self.by_sixteen {
            launch.arg(&groups).arg(&groups_per_row);
        } else {
            launch.arg(&count).arg(&width);
        }
        let cfg = LaunchConfig {
            grid_dim: (items.div_ceil(THREADS).clamp(1, 65536) as u32, 1, 1),
            block_dim: (THREADS as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the arguments match the kernel's: (const u8*, const float*, T*, u64 n,
        // u64 cols), or for `_x16` (const uint4*, const float*, T*, u32 groups, u32 groups
        // a row) with the codes 16-byte aligned and rows of whole groups (`by_sixteen`); a
        // fresh output is aligned for 16-byte stores.
        unsafe { launch.launch(cfg) }.w()?;
        Ok(crate::gpu::tensor_of(out, dev, (self.rows, self.cols)))
    }
}

/// The first of the checked rows (the first and the last) whose codes or scale are not what
/// the host makes of the same values.
fn first_difference(values: &Tensor, made: &Fp8Matrix) -> Result<Option<usize>> {
    let (n, cols) = values.dims2()?;
    let host = |t: &Tensor, range| super::kernels::elements_to_host(t, range);
    for row in [0, n - 1] {
        let elements = row * cols..(row + 1) * cols;
        let want = Fp8Matrix::quantize(&host(values, elements.clone())?, cols, &Device::Cpu)?;
        let same = |got: Vec<f32>, want: &Tensor| -> Result<bool> {
            let want: Vec<f32> = want.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            Ok(got
                .iter()
                .map(|v| v.to_bits())
                .eq(want.iter().map(|v| v.to_bits())))
        };
        if !same(host(made.codes(), elements)?, want.codes())?
            || !same(host(made.scales(), row..row + 1)?, want.scales())?
        {
            return Ok(Some(row));
        }
    }
    Ok(None)
}
