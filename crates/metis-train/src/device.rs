//! Where and in what precision a trainer computes: the `--dtype` and `--device` settings that
//! SFT and GRPO share, typed once so that both trainers parse, store and open them the same
//! way.
//!
//! Both serialise as the strings the flags take (`"f32"`, `"bf16"`; `"cpu"`, `"cuda:N"`), so
//! a run's `*_config.json` reads like its command line.

use std::fmt;
use std::str::FromStr;

use candle_core::DType;
use serde::{Deserialize, Serialize};

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

/// The device a trainer computes on: the engine's, so that `--device` reads the same in
/// every command.
pub use metis_engine::device::ComputeDevice as TrainDevice;

impl TrainDtype {
    /// The dtype a run on `device` trains in when `--dtype` is not given: bf16 on a GPU
    /// (the optimizer keeps f32 master weights and moments), f32 on the CPU.
    pub fn default_for(device: TrainDevice) -> TrainDtype {
        match device.default_dtype() {
            Some(DType::BF16) => TrainDtype::Bf16,
            _ => TrainDtype::F32,
        }
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
    fn trainers_default_to_bf16_on_a_gpu() {
        assert_eq!(TrainDtype::default_for(TrainDevice::Cpu), TrainDtype::F32);
        assert_eq!(
            TrainDtype::default_for(TrainDevice::Cuda(0)),
            TrainDtype::Bf16
        );
    }
}
