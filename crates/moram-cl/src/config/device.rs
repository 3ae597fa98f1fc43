//! `model.device`: where a run's model lives.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Where the model runs: `auto` (the first CUDA device when libtorch sees one, else the CPU),
/// `cpu`, `cuda` (device 0) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA device 0 when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device `N`.
    Cuda(usize),
}

impl DeviceChoice {
    /// The libtorch device; an unavailable CUDA device is an error naming it.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            DeviceChoice::Auto => Ok(tch::Device::cuda_if_available()),
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda(n) => {
                let count = tch::Cuda::device_count() as usize;
                if n >= count {
                    return Err(Error::config(
                        "model.device",
                        format!("cuda:{n} is not available (libtorch sees {count} CUDA device(s))"),
                    ));
                }
                Ok(tch::Device::Cuda(n))
            }
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceChoice::Cuda)
                .ok_or_else(|| format!("`{other}` is not a device (auto, cpu, cuda, cuda:N)")),
        }
    }
}

impl Serialize for DeviceChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
