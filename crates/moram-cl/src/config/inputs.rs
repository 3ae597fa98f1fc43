//! `[model]` and `[data]`: what a run adapts and what it learns from (read by the front-ends that
//! build a learner, `crate::learners::build`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::DeviceChoice;
use crate::metrics::TaskMetric;
use moram_models::TargetSpec;

/// Which model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A decoder LLM (Hugging Face folder or GGUF file).
    Llm,
    /// A CLIP model (safetensors file or folder).
    Clip,
}

/// Storage type of the frozen base weights (atoms are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BaseDtype {
    /// float32.
    #[default]
    F32,
    /// bfloat16.
    Bf16,
}

impl BaseDtype {
    /// The libtorch kind.
    pub fn kind(self) -> tch::Kind {
        match self {
            BaseDtype::F32 => tch::Kind::Float,
            BaseDtype::Bf16 => tch::Kind::BFloat16,
        }
    }
}

/// The model to adapt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Family.
    pub kind: ModelKind,
    /// Checkpoint: a GGUF file, a Hugging Face folder or safetensors file.
    pub path: PathBuf,
    /// Base weight dtype.
    #[serde(default)]
    pub dtype: BaseDtype,
    /// Where the model runs (`auto`).
    #[serde(default)]
    pub device: DeviceChoice,
    /// Layers to adapt.
    pub targets: TargetSpec,
}

/// Data formats the front-ends read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// TRACE: `<dir>/<Task>/{train,eval,test}.json`, each a list of `{prompt, answer}`.
    Trace,
    /// Image domains (CLIP): `<dir>/<Task>/<class>/*.png|jpg` or `<dir>/<Task>/{train,test}/<class>/*`.
    Folders,
    /// An IDX image set (MNIST layout, plain or .gz) in `dir`, cut into class-incremental tasks
    /// (`classes`, `classes_per_task`).
    Idx,
    /// The X-TAIL datasets in the official code's layouts under `dir` (`tasks`: dataset keys).
    Xtail,
}

/// The task sequence's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Format.
    pub format: DataFormat,
    /// Root folder.
    pub dir: PathBuf,
    /// Tasks in training order (folder names).
    pub tasks: Vec<String>,
    /// Split evaluated after every task (`test` as the paper; `eval` for quick runs).
    #[serde(default = "default_split")]
    pub eval_split: Split,
    /// Metric per task name, overriding the defaults by task name ([`TaskMetric`]).
    #[serde(default)]
    pub metrics: BTreeMap<String, TaskMetric>,
    /// Use at most this many training examples per task.
    pub max_train_examples: Option<usize>,
    /// Image domains: prompt template with `{}` (default `a photo of a {}.`).
    pub template: Option<String>,
    /// Image domains: training images per class (default 16, as X-TAIL).
    pub shots: Option<usize>,
    /// Image domains: test images kept per class (all when absent).
    pub test_per_class: Option<usize>,
    /// X-TAIL: folder caching the drawn shots of each dataset (reused when present).
    pub shot_cache: Option<PathBuf>,
    /// IDX sets: the class names in label order.
    pub classes: Option<Vec<String>>,
    /// IDX sets: classes per task.
    pub classes_per_task: Option<usize>,
}

fn default_split() -> Split {
    Split::Test
}

/// A TRACE data split (`<task>/<split>.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// `train.json`.
    Train,
    /// `eval.json`.
    Eval,
    /// `test.json`.
    Test,
}

impl Split {
    /// The file stem (`train`, `eval`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
            Split::Test => "test",
        }
    }
}
