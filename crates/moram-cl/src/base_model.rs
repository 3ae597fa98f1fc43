//! Which base model an adapter belongs to. An adapter's atoms only mean something on top of the
//! base weights they were trained with: loaded onto another checkpoint of the same shapes (a base
//! and its Instruct version, a file replaced at the same path) they load silently and answer
//! wrongly. So every adapter file records its base ([`BASE_KEY`] in the safetensors metadata) and
//! loading compares it with the model at hand.
//!
//! The identity is the architecture, the model file's name, the dtype, and a checksum of the
//! base weights of the adapted layers (the tensors the adapter touches): the SHA-256 of each
//! layer's name, shape and 4,096 evenly spaced weights rounded to bf16. Rounding makes the same
//! checkpoint loaded in f32 or bf16 agree; two different checkpoints differ in almost every weight,
//! so a few thousand per layer tell them apart. The name is for messages only: a renamed file with
//! the same weights is the same base.

use crate::error::{Error, Result};
use crate::learner::Learner;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{Kind, Tensor};

/// Metadata key of the base model's identity (JSON) in adapter files.
pub const BASE_KEY: &str = "base_model";

/// Weights sampled per adapted layer for the checksum.
const SAMPLES_PER_LAYER: i64 = 4096;

/// The base model an adapter was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseModel {
    /// The model family (`config.json`'s `model_type`, e.g. `llama`, `gemma3_text`; `clip`), when
    /// the learner says.
    pub architecture: Option<String>,
    /// The model file or folder name.
    pub name: String,
    /// The dtype the base weights were loaded in.
    pub dtype: String,
    /// Checksum of the adapted layers' base weights (hex SHA-256, see the module doc).
    pub checksum: String,
}

impl std::fmt::Display for BaseModel {
    /// `` `name` (architecture, dtype, base checksum 0123456789ab) ``; without a name, the part in
    /// parentheses.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let arch = self.architecture.as_deref().unwrap_or("unknown architecture");
        let short = self.checksum.get(..12).unwrap_or(&self.checksum);
        if !self.name.is_empty() {
            write!(f, "`{}` ", self.name)?;
        }
        write!(f, "({arch}, {}, base checksum {short})", self.dtype)
    }
}

/// How loading treats an adapter whose recorded base differs from the model's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseCheck {
    /// Refuse it ([`Error::WrongBase`]).
    #[default]
    Require,
    /// Load it anyway, with a warning (`--force-base`).
    Force,
}

impl BaseModel {
    /// The identity of the model `learner` holds, loaded from `model_path` (empty: unnamed).
    pub fn of(learner: &(impl Learner + ?Sized), model_path: &Path) -> Result<Self> {
        let layers = learner.moram_layers();
        let dtype =
            layers.first().map_or("none".to_string(), |(_, m)| format!("{:?}", m.weight().kind()).to_lowercase());
        let mut names: Vec<&(String, &moram_core::MoramLinear)> = layers.iter().collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        for (name, layer) in names {
            let w = layer.weight();
            hasher.update(name.as_bytes());
            hasher.update(format!("{:?}", w.size()).as_bytes());
            let bytes = sampled_bf16_bytes(w)?;
            hasher.update(&bytes);
        }
        let checksum = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let name = model_path
            .file_name()
            .map_or_else(|| model_path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(BaseModel { architecture: learner.architecture(), name, dtype, checksum })
    }

    /// The JSON stored under [`BASE_KEY`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Compares the base recorded in an adapter's metadata (`recorded`: the value under
    /// [`BASE_KEY`], `None` in files written before it was recorded) with `self`, the model at
    /// hand. Files without a record load with a warning; a differing architecture or checksum
    /// is [`Error::WrongBase`] unless `check` is [`BaseCheck::Force`].
    pub fn check(&self, path: &Path, recorded: Option<&str>, check: BaseCheck) -> Result<()> {
        let Some(recorded) = recorded else {
            tracing::warn!(
                "{} records no base model (written before moram recorded it): its base is not checked",
                path.display()
            );
            return Ok(());
        };
        let trained: BaseModel = serde_json::from_str(recorded).map_err(|e| Error::Checkpoint {
            path: path.into(),
            message: format!("metadata `{BASE_KEY}` is not a base-model record: {e}"),
        })?;
        let same_arch =
            trained.architecture.is_none() || self.architecture.is_none() || trained.architecture == self.architecture;
        if same_arch && trained.checksum == self.checksum {
            return Ok(());
        }
        match check {
            BaseCheck::Require => {
                Err(Error::WrongBase { path: path.into(), trained_on: trained.to_string(), loaded: self.to_string() })
            }
            BaseCheck::Force => {
                tracing::warn!(
                    "{}: trained on {trained}, loaded onto {self} because --force-base was given",
                    path.display()
                );
                Ok(())
            }
        }
    }
}

/// Up to [`SAMPLES_PER_LAYER`] evenly spaced elements of `w`, rounded to bf16, as bytes.
fn sampled_bf16_bytes(w: &Tensor) -> Result<Vec<u8>> {
    let flat = w.detach().reshape([-1]);
    let n = flat.size()[0];
    let step = (n / SAMPLES_PER_LAYER).max(1);
    let picked = flat.slice(0, 0, n, step).to_device(tch::Device::Cpu).to_kind(Kind::BFloat16).view_dtype(Kind::Int16);
    let values = Vec::<i16>::try_from(&picked)?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}
