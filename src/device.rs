//! `--device cpu|cuda[:N]` and the dtype each model runs in there.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n
                    .parse::<usize>()
                    .with_context(|| format!("--device {s}: expected cuda:N with N a GPU index"))?,
            };
            if !cfg!(feature = "cuda") {
                bail!("--device {s}: this binary was built without CUDA; rebuild with `cargo build --release --features cuda`");
            }
            Device::new_cuda(ordinal)
                .with_context(|| format!("--device {s}: cannot open CUDA device {ordinal}"))
        }
        other => bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

/// `--dtype`: the precision of the LM and of the codec's flow matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DtypeArg {
    /// bf16 on a GPU, f32 on the CPU
    Auto,
    F32,
    Bf16,
}

impl DtypeArg {
    pub fn resolve(self, device: &Device) -> DType {
        match self {
            DtypeArg::Auto if device.is_cuda() => DType::BF16,
            DtypeArg::Auto | DtypeArg::F32 => DType::F32,
            DtypeArg::Bf16 => DType::BF16,
        }
    }
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

/// Bytes of GPU memory in use on `device`'s GPU (by every process: on a lent machine, ours),
/// or `None` on the CPU.
pub fn gpu_memory_used(device: &Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(d) = device {
        let (free, total) = d.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = device;
    None
}

/// A GPU's memory at one moment (MiB): in use device-wide, and, with CUDA, what its
/// allocators hold — the stream-ordered pool candle allocates from (reserved ≥ used: freed
/// blocks stay until released) and captured graphs' own allocations.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct GpuMemory {
    pub used_mib: f64,
    pub pool_reserved_mib: Option<f64>,
    pub pool_used_mib: Option<f64>,
    pub graphs_reserved_mib: Option<f64>,
}

/// Bytes CUDA's allocators hold on a GPU (see [`GpuMemory`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolBytes {
    pub pool_reserved: u64,
    pub pool_used: u64,
    pub graphs_reserved: u64,
}

impl GpuMemory {
    /// `device`'s memory now, or `None` on the CPU.
    pub fn now(device: &Device) -> Option<Self> {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let used = gpu_memory_used(device)?;
        #[cfg(feature = "cuda")]
        let pools = crate::gpu::pool_bytes(device);
        #[cfg(not(feature = "cuda"))]
        let pools: Option<PoolBytes> = None;
        Some(Self {
            used_mib: mib(used),
            pool_reserved_mib: pools.map(|p| mib(p.pool_reserved)),
            pool_used_mib: pools.map(|p| mib(p.pool_used)),
            graphs_reserved_mib: pools.map(|p| mib(p.graphs_reserved)),
        })
    }
}

/// The process's peak resident memory (Linux: VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_and_nonsense_is_named() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn peak_rss_is_read_and_the_cpu_has_no_gpu_memory() {
        let rss = peak_rss().unwrap();
        assert!(rss > 1 << 20, "{rss} bytes");
        assert_eq!(gpu_memory_used(&Device::Cpu), None);
    }
}
