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
}
