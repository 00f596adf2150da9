//! The weights' CUDA module (`synthetic.cu`, `fp8.cu`): compiled with NVRTC once per process,
//! or read from the kernel disk cache. Where it cannot be had, the host does the work.

use std::sync::OnceLock;

use candle_core::{CudaDevice, DType, Result, Tensor};

pub(super) const MODULE: &str = "heartstream_weights";

static PTX: OnceLock<std::result::Result<String, String>> = OnceLock::new();

/// The module's source: the hash, then the kernels.
pub(super) fn source() -> String {
    [
        crate::hash::SPLITMIX64_CUDA,
        super::E4M3_CUDA,
        include_str!("synthetic.cu"),
        include_str!("fp8.cu"),
    ]
    .concat()
}

/// The module's PTX for `dev` (load a kernel with `dev.get_or_load_custom_func(name, MODULE,
/// ptx)`), or `None` (with one warning a process) if NVRTC fails.
pub(super) fn ptx(dev: &CudaDevice) -> Result<Option<&'static str>> {
    let arch = crate::gpu::compute_arch(dev)?;
    let ptx = PTX.get_or_init(|| {
        let source = source();
        crate::gpu::cached_ptx(MODULE, &source, arch).map(|(ptx, _)| ptx)
    });
    match ptx {
        Ok(p) => Ok(Some(p.as_str())),
        Err(e) => {
            static WARNED: OnceLock<()> = OnceLock::new();
            WARNED.get_or_init(|| {
                tracing::warn!("weight kernels unavailable ({e}); using the host");
            });
            Ok(None)
        }
    }
}

/// Elements `range` of `t` (flattened), as f32 on the host. They are gathered on the device
/// first: copying a narrowed view to the host would copy its whole storage (candle moves
/// storage, not views), gigabytes for one check of a large tensor.
pub(super) fn elements_to_host(t: &Tensor, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
    let ids: Vec<u32> = (range.start as u32..range.end as u32).collect();
    let ids = Tensor::from_vec(ids, range.len(), t.device())?;
    t.flatten_all()?
        .index_select(&ids, 0)?
        .to_dtype(DType::F32)?
        .to_vec1()
}

#[cfg(test)]
mod tests {
    /// NVRTC needs no GPU: the module must compile for Hopper on any build machine, with no
    /// fused multiply-add that would round differently from the host.
    #[test]
    fn weight_kernels_compile_with_nvrtc_without_contractions() {
        let ptx = crate::gpu::compile("sm_90", super::source()).unwrap_or_else(|e| panic!("{e}"));
        let kernels = [
            "synthetic_f32",
            "synthetic_bf16",
            "quantize_e4m3_rows",
            "dequantize_e4m3_f32",
            "dequantize_e4m3_bf16",
        ];
        for name in kernels {
            assert!(ptx.contains(&format!(".entry {name}(")), "no kernel {name}");
        }
        assert!(
            !ptx.contains("fma."),
            "a contracted multiply-add in the PTX"
        );
    }
}
