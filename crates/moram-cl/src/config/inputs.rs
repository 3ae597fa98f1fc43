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
    /// TRACE: a task's prompt budget when it differs from its default
    /// ([`PromptBudget::default_for_task`]), by task name.
    #[serde(default)]
    pub prompts: BTreeMap<String, PromptBudget>,
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

/// Which end of an over-long prompt a task keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptKeep {
    /// The first tokens (the official code's MeetingBank: the meeting transcript's start).
    Head,
    /// The last tokens, so the question and `Answer:` survive (every other TRACE task).
    Tail,
}

/// How many prompt tokens a task keeps, and which end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBudget {
    /// Prompt tokens kept.
    pub max_tokens: usize,
    /// Which end.
    pub keep: PromptKeep,
}

impl PromptBudget {
    /// The official TRACE code's budget for task `name` (protocol 4.4): MeetingBank keeps the head
    /// of up to 4,096 tokens (`meetingbank_max_prompt_len`), every other task the tail of
    /// `generation.max_prompt_tokens`.
    pub fn default_for_task(name: &str, max_prompt_tokens: usize) -> Self {
        match name {
            "MeetingBank" => PromptBudget { max_tokens: 4096, keep: PromptKeep::Head },
            _ => PromptBudget { max_tokens: max_prompt_tokens, keep: PromptKeep::Tail },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_budgets_default_by_task_name_and_can_be_given_per_task() {
        assert_eq!(
            PromptBudget::default_for_task("MeetingBank", 1024),
            PromptBudget { max_tokens: 4096, keep: PromptKeep::Head }
        );
        assert_eq!(
            PromptBudget::default_for_task("FOMC", 1024),
            PromptBudget { max_tokens: 1024, keep: PromptKeep::Tail }
        );
        let data: DataConfig = toml::from_str(
            "format = \"trace\"\ndir = \"d\"\ntasks = [\"a\"]\nprompts = { a = { max_tokens = 64, keep = \"head\" } }\n",
        )
        .unwrap();
        assert_eq!(data.prompts["a"], PromptBudget { max_tokens: 64, keep: PromptKeep::Head });
        let bad = toml::from_str::<DataConfig>(
            "format = \"trace\"\ndir = \"d\"\ntasks = [\"a\"]\nprompts = { a = { max_tokens = 64, keep = \"middle\" } }\n",
        );
        assert!(bad.unwrap_err().to_string().contains("middle"));
    }
}
