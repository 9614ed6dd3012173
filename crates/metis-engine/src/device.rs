//! Where a model computes: the `--device` setting (`cpu`, `cuda`, `cuda:N`) that `generate`,
//! `chat`, `serve`, `eval --local-model`, `safety` and the trainers share, and the compute
//! dtype a device defaults to.
//!
//! It serialises as the string the flag takes, so a run's config file reads like its command
//! line.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::model::EngineError;

type Result<T> = std::result::Result<T, EngineError>;

/// The device a model runs on. `cuda` needs a build with the `cuda` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ComputeDevice {
    #[default]
    Cpu,
    /// The CUDA device with this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl ComputeDevice {
    /// Open the device (for CUDA: create its context). A build without the `cuda` feature
    /// says how to get one.
    pub fn open(self) -> Result<Device> {
        match self {
            ComputeDevice::Cpu => Ok(Device::Cpu),
            ComputeDevice::Cuda(n) if !cfg!(feature = "cuda") => {
                Err(EngineError::InvalidArgument(format!(
                    "--device cuda:{n}: this metis was built without CUDA \
                     (build it with `cargo build --release --features cuda`)"
                )))
            }
            ComputeDevice::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                EngineError::InvalidArgument(format!("--device cuda:{n}: cannot open it: {e}"))
            }),
        }
    }

    /// The compute dtype of a model on this device when none is asked for: bf16 on a GPU
    /// (tensor cores, half the memory traffic of f32), `None` on the CPU, where the
    /// checkpoint's own dtype is kept.
    pub fn default_dtype(self) -> Option<DType> {
        default_dtype_on_gpu(self != ComputeDevice::Cpu)
    }
}

/// [`ComputeDevice::default_dtype`] for a device already open.
pub fn default_dtype(device: &Device) -> Option<DType> {
    default_dtype_on_gpu(!device.is_cpu())
}

/// The dtype a model on `device` computes in: the one `requested`, else the device's default
/// (bf16 on a GPU), else the checkpoint's own, else f32.
pub fn compute_dtype(
    requested: Option<DType>,
    device: &Device,
    checkpoint: Option<DType>,
) -> DType {
    requested
        .or_else(|| default_dtype(device))
        .or(checkpoint)
        .unwrap_or(DType::F32)
}

fn default_dtype_on_gpu(gpu: bool) -> Option<DType> {
    gpu.then_some(DType::BF16)
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeDevice::Cpu => f.write_str("cpu"),
            ComputeDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for ComputeDevice {
    type Err = String;
    /// `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(ComputeDevice::Cpu),
            "cuda" => Ok(ComputeDevice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(ComputeDevice::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda, cuda:N)")),
        }
    }
}

impl TryFrom<String> for ComputeDevice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<ComputeDevice> for String {
    fn from(d: ComputeDevice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_spellings_round_trip() {
        assert_eq!("cpu".parse::<ComputeDevice>().unwrap(), ComputeDevice::Cpu);
        assert_eq!(
            "cuda".parse::<ComputeDevice>().unwrap(),
            ComputeDevice::Cuda(0)
        );
        assert_eq!(
            "cuda:3".parse::<ComputeDevice>().unwrap(),
            ComputeDevice::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = bad.parse::<ComputeDevice>().unwrap_err();
            assert!(err.contains("cpu, cuda, cuda:N"), "{bad}: {err}");
        }
        for d in [ComputeDevice::Cpu, ComputeDevice::Cuda(2)] {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<ComputeDevice>(&json).unwrap(), d);
        }
        assert_eq!(
            serde_json::to_string(&ComputeDevice::Cpu).unwrap(),
            "\"cpu\""
        );
        assert!(serde_json::from_str::<ComputeDevice>("\"tpu\"").is_err());
        assert!(matches!(ComputeDevice::Cpu.open().unwrap(), Device::Cpu));
    }

    #[test]
    fn gpus_default_to_bf16_and_the_cpu_to_the_checkpoint() {
        assert_eq!(ComputeDevice::Cpu.default_dtype(), None);
        assert_eq!(ComputeDevice::Cuda(1).default_dtype(), Some(DType::BF16));
        assert_eq!(default_dtype(&Device::Cpu), None);
        let cpu = &Device::Cpu;
        assert_eq!(compute_dtype(None, cpu, Some(DType::BF16)), DType::BF16);
        assert_eq!(compute_dtype(None, cpu, None), DType::F32);
        assert_eq!(
            compute_dtype(Some(DType::F16), cpu, Some(DType::BF16)),
            DType::F16
        );
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn a_cpu_build_says_how_to_get_cuda() {
        let err = ComputeDevice::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
