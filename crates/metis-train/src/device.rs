//! Where and in what precision a trainer computes: the `--dtype` and `--device` settings that
//! SFT and GRPO share, typed once so that both trainers parse, store and open them the same
//! way.
//!
//! Both serialise as the strings the flags take (`"f32"`, `"bf16"`; `"cpu"`, `"cuda:N"`), so
//! a run's `*_config.json` reads like its command line.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::model::Result;

/// The compute dtype of the trained model (its weights, activations and gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum TrainDtype {
    /// 32-bit floats.
    #[default]
    #[serde(alias = "float32")]
    #[cfg_attr(feature = "clap", value(alias = "float32"))]
    F32,
    /// bfloat16 (the optimizer moments stay f32, see [`crate::optim`]).
    #[serde(alias = "bfloat16")]
    #[cfg_attr(feature = "clap", value(alias = "bfloat16"))]
    Bf16,
}

impl TrainDtype {
    pub fn dtype(self) -> DType {
        match self {
            TrainDtype::F32 => DType::F32,
            TrainDtype::Bf16 => DType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TrainDtype::F32 => "f32",
            TrainDtype::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for TrainDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TrainDtype {
    type Err = String;
    /// `f32` / `bf16`, also `float32` / `bfloat16`, in any case.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(TrainDtype::F32),
            "bf16" | "bfloat16" => Ok(TrainDtype::Bf16),
            other => Err(format!("unsupported training dtype {other:?} (f32, bf16)")),
        }
    }
}

/// The device a trainer computes on. `cuda` needs a build with the `cuda` feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TrainDevice {
    #[default]
    Cpu,
    /// The CUDA device with this ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl TrainDevice {
    /// Open the device (for CUDA: create its context).
    pub fn open(self) -> Result<Device> {
        Ok(match self {
            TrainDevice::Cpu => Device::Cpu,
            TrainDevice::Cuda(n) => Device::new_cuda(n)?,
        })
    }
}

impl fmt::Display for TrainDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrainDevice::Cpu => f.write_str("cpu"),
            TrainDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for TrainDevice {
    type Err = String;
    /// `cpu`, `cuda` or `cuda:N`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(TrainDevice::Cpu),
            "cuda" => Ok(TrainDevice::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(TrainDevice::Cuda)
                .ok_or_else(|| format!("unknown device {s:?} (cpu, cuda, cuda:N)")),
        }
    }
}

impl TryFrom<String> for TrainDevice {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<TrainDevice> for String {
    fn from(d: TrainDevice) -> String {
        d.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_spellings() {
        for (s, d) in [
            ("f32", TrainDtype::F32),
            ("Float32", TrainDtype::F32),
            ("bf16", TrainDtype::Bf16),
            ("BFLOAT16", TrainDtype::Bf16),
        ] {
            assert_eq!(s.parse::<TrainDtype>().unwrap(), d, "{s}");
        }
        let err = "f16".parse::<TrainDtype>().unwrap_err();
        assert!(err.contains("f32, bf16"), "{err}");
        assert_eq!(TrainDtype::Bf16.dtype(), DType::BF16);
        // The config files keep the flag spelling, and read the long names too.
        assert_eq!(
            serde_json::to_string(&TrainDtype::Bf16).unwrap(),
            "\"bf16\""
        );
        let d: TrainDtype = serde_json::from_str("\"bfloat16\"").unwrap();
        assert_eq!(d, TrainDtype::Bf16);
    }

    #[test]
    fn device_spellings_round_trip() {
        assert_eq!("cpu".parse::<TrainDevice>().unwrap(), TrainDevice::Cpu);
        assert_eq!("cuda".parse::<TrainDevice>().unwrap(), TrainDevice::Cuda(0));
        assert_eq!(
            "cuda:3".parse::<TrainDevice>().unwrap(),
            TrainDevice::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = bad.parse::<TrainDevice>().unwrap_err();
            assert!(err.contains("cpu, cuda, cuda:N"), "{bad}: {err}");
        }
        for d in [TrainDevice::Cpu, TrainDevice::Cuda(2)] {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<TrainDevice>(&json).unwrap(), d);
        }
        assert_eq!(serde_json::to_string(&TrainDevice::Cpu).unwrap(), "\"cpu\"");
        assert!(serde_json::from_str::<TrainDevice>("\"tpu\"").is_err());
        assert!(matches!(TrainDevice::Cpu.open().unwrap(), Device::Cpu));
    }
}
