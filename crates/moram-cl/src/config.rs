//! [`RunConfig`]: everything that defines a continual-learning run, as one TOML file.
//!
//! Every section rejects unknown keys by name. Relative paths (model, data) are resolved against
//! the config file's folder, so a run directory can be moved with its config. The method is one
//! line (`method.name`), so comparing MoRAM with SeqLoRA or MoE-LoRA is a one-line change.

use crate::error::{Error, Result};
use crate::metrics::TaskMetric;
use moram_core::{CompatFlags, MoramConfig, Profile, Routing, ScoreInput};
use moram_models::TargetSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A whole run: method, optimiser, schedule, data order and evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name shown in reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Seed of everything random (data order, new atoms, dropout).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// What is learned: MoRAM, an ablation, or a baseline.
    pub method: MethodConfig,
    /// The optimiser, re-created for every task over that task's atoms.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// Steps, batches, accumulation and clipping.
    pub training: TrainingConfig,
    /// Optional post-pruning after each task.
    #[serde(default)]
    pub pruning: PruningConfig,
    /// Generation settings for LLM evaluation (protocol 4.6 by default).
    #[serde(default)]
    pub generation: GenerationSettings,
    /// Routing diagnostics recorded after every task.
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// How evaluation runs.
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    /// The model to adapt (read by front-ends such as `moram train`).
    #[serde(default)]
    pub model: Option<ModelConfig>,
    /// The task sequence's data (read by front-ends).
    #[serde(default)]
    pub data: Option<DataConfig>,
}

fn default_name() -> String {
    "run".into()
}

fn default_seed() -> u64 {
    42
}

/// The methods one engine runs (paper Tables 1, 2 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// MoRAM: self-activated rank-1 atoms with top-k, temperature and the eval threshold.
    Moram,
    /// Table 4 "self-activated" only: no top-k, no temperature, no threshold.
    MoramSelfActivated,
    /// MoRAM without top-k.
    MoramNoTopK,
    /// MoRAM without the temperature (tau = 1).
    MoramNoTemperature,
    /// MoRAM without the eval-time threshold gate.
    MoramNoThreshold,
    /// Table 4 "external router, rank-1": per-atom router keys instead of self-activation.
    RouterRank1,
    /// MoE-LoRA: one rank-r expert per task behind a learned router.
    MoeLora,
    /// SeqLoRA: one LoRA trained on every task in turn, never frozen.
    SeqLora,
    /// MoRAM with orthogonal keys (a variant, not in the paper; `docs/method.md`): each task's new
    /// keys live in the complement of the input subspace earlier tasks occupy at the layer.
    MoramOrthogonal,
    /// MoRAM with protected routing (a variant, not in the paper; `docs/method.md`): an atom's
    /// relevance score ignores the input subspace of the tasks before it, its value reads everything.
    MoramNovelRouting,
    /// MoRAM with novelty-gated routing (a variant, not in the paper; `docs/method.md`): a later
    /// task's atoms act only on tokens the earlier tasks' input subspace does not explain, and there
    /// at full scale.
    MoramNoveltyGated,
    /// Task-gated MoRAM (a variant, not in the paper; `docs/method.md`, "Task-gated atoms"): the
    /// paper's layer in training; in evaluation each prompt is recognised as one of the tasks so far
    /// (from its pass through the frozen blocks) and uses only the atoms of tasks up to that one.
    MoramTaskGated,
    /// MoRAM with centred scores (a variant, not in the paper; `docs/method.md`): Eq. 5 reads
    /// `x - mean`, the mean of the layer's inputs on the first task.
    MoramCentred,
    /// MoRAM with standardised scores (a variant, not in the paper; `docs/method.md`): Eq. 5 reads
    /// `(x - mean) / std` per feature, both from the layer's inputs on the first task.
    MoramStandardised,
    /// O-LoRA (Wang et al. 2023, the paper's TRACE baseline): a rank-r LoRA per task, earlier ones
    /// frozen, outputs summed; loss + `orthogonal_penalty * sum |A_t A_s^T|` + `l2_penalty * ||new||^2`.
    OLora,
    /// Multi-task training, the upper bound (paper Table 10's MTL row): one rank-r LoRA trained on
    /// every task's data at once, for the whole sequence's steps; not a continual learner.
    Mtl,
}

impl Method {
    /// The method's config name (its serde spelling).
    pub fn name(self) -> String {
        moram_core::config::serde_name(&self)
    }

    /// Parses a config name (`seq-lora`, `moram-novelty-gated`); the error names it and lists the
    /// valid ones.
    pub fn from_name(name: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|e| format!("`{name}`: {e}"))
    }

    fn routing(self) -> Routing {
        let sa = |top_k, temperature, threshold| Routing::SelfActivated {
            use_top_k: top_k,
            use_temperature: temperature,
            use_threshold: threshold,
        };
        match self {
            Method::Moram
            | Method::MoramOrthogonal
            | Method::MoramNovelRouting
            | Method::MoramNoveltyGated
            | Method::MoramTaskGated
            | Method::MoramCentred
            | Method::MoramStandardised => Routing::MORAM,
            Method::MoramSelfActivated => sa(false, false, false),
            Method::MoramNoTopK => sa(false, true, true),
            Method::MoramNoTemperature => sa(true, false, true),
            Method::MoramNoThreshold => sa(true, true, false),
            Method::RouterRank1 => Routing::ExternalRouter { use_top_k: true, use_temperature: true },
            Method::MoeLora => Routing::MoeLora { use_top_k: true, use_temperature: false },
            Method::SeqLora | Method::Mtl => Routing::Lora {},
            Method::OLora => Routing::Sum {},
        }
    }
}

/// `moram-orthogonal`'s default energy: GPM's first-layer threshold (Saha et al. 2021 use 0.97).
pub const DEFAULT_SUBSPACE_ENERGY: f64 = 0.97;
/// O-LoRA's lambda_1 and lambda_2 as the TRACE benchmark code sets them.
pub const DEFAULT_OLORA_PENALTY: (f64, f64) = (0.5, 0.0);
/// Training examples whose layer inputs define a task's subspace (orthogonal keys), by default.
pub const DEFAULT_SUBSPACE_EXAMPLES: usize = 64;
/// First-task training examples whose layer inputs give the score statistics, by default.
pub const DEFAULT_SCORE_EXAMPLES: usize = 64;
/// Training prompts of each task the task gate is fitted on, by default.
pub const DEFAULT_GATE_EXAMPLES: usize = 256;

/// Method and layer hyper-parameters: a moram-core profile plus overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// The method.
    pub name: Method,
    /// moram-core profile the layer settings start from (`paper`, `xtail`, `trace_code`, `trace_paper`).
    #[serde(default = "default_profile")]
    pub profile: Profile,
    /// Atoms per task (LoRA/MoE-LoRA: rank).
    pub r: Option<usize>,
    /// Top-k budget.
    pub top_k: Option<usize>,
    /// Softmax temperature.
    pub temperature: Option<f64>,
    /// Eval threshold delta.
    pub threshold: Option<f64>,
    /// Adapter input dropout in training.
    pub dropout: Option<f64>,
    /// Value-path multiplier.
    pub value_scale: Option<f64>,
    /// Official-code behaviours to reproduce.
    pub compat: Option<CompatFlags>,
    /// Orthogonal keys: share of each task's input energy protected from later keys, in (0, 1)
    /// (default 0.97 for `moram-orthogonal`; any growing method accepts it).
    pub subspace_energy: Option<f64>,
    /// Orthogonal keys: training examples of a task whose layer inputs define its subspace
    /// (default 64).
    pub subspace_examples: Option<usize>,
    /// Novelty-gated routing: the quantile of earlier tasks' tokens kept closed to later atoms, in
    /// (0, 1] (default 0.99).
    pub novelty_quantile: Option<f64>,
    /// O-LoRA's lambda_1 (default 0.5 for `o-lora`, else 0).
    pub orthogonal_penalty: Option<f64>,
    /// O-LoRA's lambda_2 (default 0).
    pub l2_penalty: Option<f64>,
    /// What the relevance score reads: `raw` (the paper), `centred`, `standardised` (default: as the
    /// method name says).
    pub score_input: Option<ScoreInput>,
    /// Normalised scores: training examples of the first task whose layer inputs give the
    /// per-feature statistics (default 64).
    pub score_examples: Option<usize>,
    /// Task-gated atoms: training prompts of each task the task gate is fitted on (default 256).
    pub gate_examples: Option<usize>,
    /// Task-gated atoms: shrinkage of the gate's shared covariance towards its diagonal, in [0, 1]
    /// (default 0.1).
    pub gate_shrinkage: Option<f64>,
}

fn default_profile() -> Profile {
    Profile::Paper
}

impl MethodConfig {
    /// The layer config every adapted layer gets.
    pub fn moram_config(&self) -> Result<MoramConfig> {
        let mut c = self.profile.config();
        c.routing = self.name.routing();
        c.r = self.r.unwrap_or(c.r);
        c.top_k = self.top_k.unwrap_or(c.top_k);
        c.temperature = self.temperature.unwrap_or(c.temperature);
        c.threshold = self.threshold.unwrap_or(c.threshold);
        c.dropout = self.dropout.unwrap_or(c.dropout);
        c.value_scale = self.value_scale.unwrap_or(c.value_scale);
        if let Some(compat) = self.compat {
            c.compat = compat;
        }
        let mode = match self.name {
            Method::MoramNovelRouting => moram_core::SubspaceMode::Routing,
            Method::MoramNoveltyGated => moram_core::SubspaceMode::NoveltyGated,
            _ => moram_core::SubspaceMode::Keys,
        };
        let energy = match self.name {
            Method::MoramOrthogonal | Method::MoramNovelRouting | Method::MoramNoveltyGated => {
                Some(self.subspace_energy.unwrap_or(DEFAULT_SUBSPACE_ENERGY))
            }
            _ => self.subspace_energy,
        };
        c.key_subspace = energy.map(|energy| moram_core::KeySubspace {
            quantile: self.novelty_quantile.unwrap_or(moram_core::config::DEFAULT_NOVELTY_QUANTILE),
            ..moram_core::KeySubspace::new(energy, mode)
        });
        c.score_input = self.score_input.unwrap_or(match self.name {
            Method::MoramCentred => ScoreInput::Centred,
            Method::MoramStandardised => ScoreInput::Standardised,
            _ => ScoreInput::Raw,
        });
        if self.score_examples == Some(0) {
            return Err(Error::config("method.score_examples", "must be at least 1"));
        }
        let (l1, l2) = if self.name == Method::OLora { DEFAULT_OLORA_PENALTY } else { (0.0, 0.0) };
        c.penalty = moram_core::Penalty {
            orthogonality: self.orthogonal_penalty.unwrap_or(l1),
            l2: self.l2_penalty.unwrap_or(l2),
        };
        if self.subspace_examples == Some(0) {
            return Err(Error::config("method.subspace_examples", "must be at least 1"));
        }
        c.task_gate = match (self.name, self.gate_shrinkage) {
            (Method::MoramTaskGated, shrinkage) => Some(moram_core::TaskGateConfig {
                shrinkage: shrinkage.unwrap_or(moram_core::variants::task_gate::DEFAULT_SHRINKAGE),
            }),
            (_, Some(_)) => {
                return Err(Error::config("method.gate_shrinkage", "applies to `moram-task-gated` only"));
            }
            (_, None) => None,
        };
        if self.gate_examples == Some(0) {
            return Err(Error::config("method.gate_examples", "must be at least 1"));
        }
        c.validate().map_err(|source| Error::Method { source })?;
        Ok(c)
    }
}

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// AdamW: decoupled weight decay (X-TAIL).
    Adamw,
    /// Adam: weight decay added to the gradient (TRACE's `torch.optim.Adam`).
    Adam,
}

/// Learning-rate schedule, applied per optimiser step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// The base rate throughout (TRACE).
    Constant,
    /// Linear warm-up then half-cosine to 0 (X-TAIL `cosine_lr`).
    Cosine,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Adam betas.
    pub betas: [f64; 2],
    /// Adam eps.
    pub eps: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Schedule.
    pub schedule: ScheduleKind,
    /// Warm-up steps (cosine only).
    pub warmup_steps: usize,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        // X-TAIL's settings (protocol 3.8).
        OptimizerConfig {
            kind: OptimizerKind::Adamw,
            lr: 5e-4,
            betas: [0.9, 0.9999],
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: ScheduleKind::Cosine,
            warmup_steps: 0,
        }
    }
}

/// How long and in what batches each task trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    /// Optimiser steps per task (X-TAIL: 500). Exclusive with `epochs`.
    pub iterations: Option<usize>,
    /// Epochs per task: one value for all tasks (`epochs = 1` or `[1]`) or one per task (TRACE:
    /// 2,1,3,2,1,2,2,3).
    #[serde(default, deserialize_with = "one_or_many")]
    pub epochs: Option<Vec<usize>>,
    /// Examples per optimiser step.
    pub batch_size: usize,
    /// Examples per forward pass; `batch_size / micro_batch_size` micro-batches are accumulated.
    pub micro_batch_size: Option<usize>,
    /// Global gradient-norm clip (TRACE: 1.0); none when absent.
    pub clip_grad_norm: Option<f64>,
    /// Evaluate on at most this many examples per task (all when absent).
    pub max_eval_examples: Option<usize>,
}

/// `epochs`: a number or a list of numbers.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Vec<usize>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a number of epochs or a list of them, one per task")]
    enum OneOrMany {
        One(usize),
        Many(Vec<usize>),
    }
    Ok(Option::<OneOrMany>::deserialize(d)?.map(|v| match v {
        OneOrMany::One(n) => vec![n],
        OneOrMany::Many(v) => v,
    }))
}

impl TrainingConfig {
    /// Micro-batch size and the number of micro-batches per step.
    pub fn accumulation(&self) -> (usize, usize) {
        let micro = self.micro_batch_size.unwrap_or(self.batch_size);
        (micro, self.batch_size / micro.max(1))
    }

    /// Epochs for task `t` when training by epochs.
    pub fn epochs_for(&self, t: usize) -> Option<usize> {
        let e = self.epochs.as_ref()?;
        if e.len() == 1 {
            e.first().copied()
        } else {
            e.get(t).copied()
        }
    }
}

/// Post-pruning after each task (paper C.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PruningConfig {
    /// Prune after each task.
    pub enabled: bool,
    /// Share of the activation mass the kept atoms must carry.
    pub share: f64,
    /// Training examples the statistics are gathered on (all when absent).
    pub stats_examples: Option<usize>,
}

impl Default for PruningConfig {
    fn default() -> Self {
        PruningConfig { enabled: false, share: 0.99, stats_examples: None }
    }
}

/// Routing diagnostics after every task ([`crate::analysis::routing_diagnostics`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Training examples per task the diagnostics are gathered on (0: off).
    pub examples: usize,
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig { examples: 16 }
    }
}

/// Generation settings of LLM evaluation (defaults: protocol 4.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationSettings {
    /// New tokens per answer.
    pub max_new_tokens: usize,
    /// `transformers` repetition penalty.
    pub repetition_penalty: f64,
    /// No-repeat n-gram size (0: off).
    pub no_repeat_ngram_size: usize,
    /// Prompt tokens kept (the tail; protocol 4.4 `max_prompt_len`).
    pub max_prompt_tokens: usize,
    /// Answer tokens kept in training (`max_ans_len`).
    pub max_answer_tokens: usize,
}

impl Default for GenerationSettings {
    fn default() -> Self {
        GenerationSettings {
            max_new_tokens: 512,
            repetition_penalty: 1.2,
            no_repeat_ngram_size: 3,
            max_prompt_tokens: 1024,
            max_answer_tokens: 512,
        }
    }
}

/// How evaluation runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Examples scored together: CLIP test images per forward pass, LLM prompts generated together
    /// (left-padded).
    pub batch_size: usize,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig { batch_size: 8 }
    }
}

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

impl RunConfig {
    /// Parses TOML text; `origin` names the source in errors.
    ///
    /// Run folders written before the evaluation batch moved from `generation.batch_size` to
    /// `evaluation.batch_size` still load: the old key is moved (with a warning), and giving both
    /// is an error.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self> {
        let file_error = |e: &dyn std::fmt::Display| Error::ConfigFile {
            path: origin.into(),
            message: e.to_string().trim_end().to_string(),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| file_error(&e))?;
        let c: RunConfig = match migrate_generation_batch_size(&mut table) {
            Some(moved) => {
                tracing::warn!(
                    "{}: `generation.batch_size = {moved}` is read as `evaluation.batch_size` (its name since \
                     the typed-config change); rename it to silence this",
                    origin.display()
                );
                RunConfig::deserialize(table).map_err(|e| file_error(&e))?
            }
            // Parsed from the text itself, so errors keep their line numbers.
            None => toml::from_str(text).map_err(|e| file_error(&e))?,
        };
        c.validate()?;
        Ok(c)
    }

    /// Reads a TOML file; relative model/data paths are resolved against its folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c = Self::from_toml_str(&text, path)?;
        Ok(c.with_paths_against(path.parent().unwrap_or(Path::new("."))))
    }

    /// The config with `model.path` and `data.dir` absolute: relative ones are taken against `base`
    /// (itself made absolute against the working directory), then `.` and `..` are resolved
    /// lexically. Two configs naming the same files this way compare equal.
    pub fn with_paths_against(mut self, base: &Path) -> Self {
        if let Some(m) = self.model.as_mut() {
            m.path = absolute(&resolve(base, &m.path));
        }
        if let Some(d) = self.data.as_mut() {
            d.dir = absolute(&resolve(base, &d.dir));
        }
        self
    }

    /// The config as a run folder `run` stores it: paths inside the folder's parent (e.g. the
    /// demo's `runs/demo/data` next to `runs/demo/moram`) relative to `run`, so the folders can move
    /// together; others absolute. Either way the stored config works from any directory
    /// ([`crate::checkpoint::read_config`] resolves against `run`).
    pub fn with_paths_for_run(self, run: &Path) -> Self {
        let run = absolute(run);
        let mut c = self.with_paths_against(Path::new("."));
        let near = |p: &Path| -> PathBuf {
            match run.parent() {
                Some(parent) if p.starts_with(parent) => {
                    let up = run.strip_prefix(parent).map(|r| r.components().count()).unwrap_or(0);
                    let mut rel: PathBuf = std::iter::repeat_n("..", up).collect();
                    rel.push(p.strip_prefix(parent).unwrap_or(p));
                    rel
                }
                _ => p.to_path_buf(),
            }
        };
        if let Some(m) = c.model.as_mut() {
            m.path = near(&m.path);
        }
        if let Some(d) = c.data.as_mut() {
            d.dir = near(&d.dir);
        }
        c
    }

    /// Applies a `key=value` override (dotted key, TOML value; bare words are read as strings).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        self.set_all(std::slice::from_ref(&assignment))
    }

    /// Applies several `key=value` overrides in order, then validates once (so overrides that only
    /// make sense together, e.g. `data.tasks` and `training.epochs`, can be given together).
    pub fn set_all<S: AsRef<str>>(&mut self, assignments: &[S]) -> Result<()> {
        let mut doc = toml::Value::try_from(&*self).map_err(|e| Error::config("(config)", e.to_string()))?;
        let mut keys = Vec::new();
        for assignment in assignments {
            let assignment = assignment.as_ref();
            let (key, value) = assignment
                .split_once('=')
                .ok_or_else(|| Error::config(assignment, "an override must look like `section.key=value`"))?;
            let key = key.trim();
            let value = value.trim();
            let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut node = &mut doc;
            let parts: Vec<&str> = key.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let table = node.as_table_mut().ok_or_else(|| Error::config(key, "is not inside a table"))?;
                if i + 1 == parts.len() {
                    table.insert(part.to_string(), parsed.clone());
                    break;
                }
                node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            }
            keys.push(key.to_string());
        }
        // `iterations` and `epochs` exclude each other: choosing one on the command line replaces
        // the other the config file gave (unless both are set here, which validation refuses).
        for (chosen, other) in [("iterations", "epochs"), ("epochs", "iterations")] {
            let set = |k: &str| keys.iter().any(|x| x == &format!("training.{k}"));
            if set(chosen) && !set(other) {
                if let Some(t) = doc.get_mut("training").and_then(toml::Value::as_table_mut) {
                    t.remove(other);
                }
            }
        }
        let text = toml::to_string(&doc).map_err(|e| Error::config("(config)", e.to_string()))?;
        let c: RunConfig = toml::from_str(&text)
            .map_err(|e| Error::Override { keys: keys.join(", "), message: e.message().trim_end().to_string() })?;
        c.validate()?;
        *self = c;
        Ok(())
    }

    /// The `[model]` and `[data]` sections a learner needs; an error names the missing one.
    pub fn model_and_data(&self) -> Result<(&ModelConfig, &DataConfig)> {
        let model = self.model.as_ref().ok_or_else(|| Error::config("model", "the config has no [model] section"))?;
        let data = self.data.as_ref().ok_or_else(|| Error::config("data", "the config has no [data] section"))?;
        Ok((model, data))
    }

    /// Checks ranges and consistency; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.method.moram_config()?;
        let o = &self.optimizer;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return Err(Error::config("optimizer.lr", format!("must be > 0, found {}", o.lr)));
        }
        if o.betas.iter().any(|b| !(0.0..1.0).contains(b)) {
            return Err(Error::config("optimizer.betas", format!("each beta must lie in [0, 1), found {:?}", o.betas)));
        }
        if o.eps.is_nan() || o.eps <= 0.0 || o.weight_decay.is_nan() || o.weight_decay < 0.0 {
            return Err(Error::config("optimizer", "eps must be > 0 and weight_decay >= 0"));
        }
        let t = &self.training;
        match (&t.iterations, &t.epochs) {
            (Some(0), _) => return Err(Error::config("training.iterations", "must be at least 1")),
            (Some(_), Some(_)) | (None, None) => {
                return Err(Error::config("training", "give exactly one of `iterations` and `epochs`"));
            }
            (None, Some(e)) if e.is_empty() || e.contains(&0) => {
                return Err(Error::config("training.epochs", "needs one or more values, each at least 1"));
            }
            _ => {}
        }
        if t.batch_size == 0 {
            return Err(Error::config("training.batch_size", "must be at least 1"));
        }
        let (micro, _) = t.accumulation();
        if micro == 0 || !t.batch_size.is_multiple_of(micro) {
            return Err(Error::config(
                "training.micro_batch_size",
                format!("must divide batch_size {}, found {micro}", t.batch_size),
            ));
        }
        if let Some(c) = t.clip_grad_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::config("training.clip_grad_norm", format!("must be > 0, found {c}")));
            }
        }
        let p = &self.pruning;
        if !(p.share > 0.0 && p.share <= 1.0) {
            return Err(Error::config("pruning.share", format!("must lie in (0, 1], found {}", p.share)));
        }
        let g = &self.generation;
        if g.max_new_tokens == 0 || g.max_prompt_tokens == 0 {
            return Err(Error::config("generation", "max_new_tokens and max_prompt_tokens must be >= 1"));
        }
        if self.evaluation.batch_size == 0 {
            return Err(Error::config("evaluation.batch_size", "must be at least 1"));
        }
        if let (Some(m), Some(d)) = (&self.model, &self.data) {
            let fits = match m.kind {
                ModelKind::Llm => d.format == DataFormat::Trace,
                ModelKind::Clip => matches!(d.format, DataFormat::Folders | DataFormat::Idx | DataFormat::Xtail),
            };
            if !fits {
                return Err(Error::config(
                    "data.format",
                    format!(
                        "{:?} data cannot train a {:?} model (llm takes trace; clip takes folders, idx or xtail)",
                        d.format, m.kind
                    ),
                ));
            }
        }
        if let Some(d) = &self.data {
            if d.tasks.is_empty() {
                return Err(Error::config("data.tasks", "lists no task"));
            }
            if let Some(e) = &t.epochs {
                if e.len() != 1 && e.len() != d.tasks.len() {
                    return Err(Error::config(
                        "training.epochs",
                        format!("has {} values for {} tasks (give one, or one per task)", e.len(), d.tasks.len()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The config as flat `dotted.key -> value` pairs (for diffs and reports).
    pub fn flatten(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(v) = serde_json::to_value(self) {
            flatten_into("", &v, &mut out);
        }
        out
    }

    /// SHA-256 of the canonical JSON form.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for (k, v) in self.flatten() {
            hasher.update(format!("{k}={v}\n").as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The dotted keys whose values differ between `self` (a run's config) and `other` (the one
    /// given now), as `key (run X, given Y)`.
    pub fn differing_fields(&self, other: &RunConfig) -> Vec<String> {
        let (a, b) = (self.flatten(), other.flatten());
        let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(k) != b.get(k))
            .map(|k| {
                let show = |m: &BTreeMap<String, String>| m.get(&k).cloned().unwrap_or_else(|| "(absent)".into());
                format!("{k} (run {}, given {})", show(&a), show(&b))
            })
            .collect()
    }
}

/// `p` made absolute against the working directory, `.` and `..` resolved lexically (the file
/// need not exist).
fn absolute(p: &Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn flatten_into(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_into(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Moves a legacy `generation.batch_size` to `evaluation.batch_size` in a parsed config; returns
/// the moved value. With both present the legacy key stays, so deserialising names it as unknown.
fn migrate_generation_batch_size(table: &mut toml::Table) -> Option<toml::Value> {
    let has_new = table.get("evaluation").and_then(|e| e.get("batch_size")).is_some();
    if has_new {
        return None;
    }
    let old = table.get_mut("generation")?.as_table_mut()?.remove("batch_size")?;
    let evaluation = table.entry("evaluation").or_insert_with(|| toml::Value::Table(toml::Table::new()));
    evaluation.as_table_mut()?.insert("batch_size".into(), old.clone());
    Some(old)
}
