//! [`RunConfig`]: everything that defines a continual-learning run, as one TOML file.
//!
//! Every section rejects unknown keys by name. Relative paths (model, data) are resolved against
//! the config file's folder, so a run directory can be moved with its config. The method is one
//! line (`method.name`), so comparing MoRAM with SeqLoRA or MoE-LoRA is a one-line change.

use crate::error::{Error, Result};
use moram_core::MoramConfig;

use serde::{Deserialize, Serialize};
use std::path::Path;

pub use device::DeviceChoice;
pub use inputs::{BaseDtype, DataConfig, DataFormat, ModelConfig, ModelKind, PromptBudget, PromptKeep, Split};
pub use method::{MethodConfig, MethodName, DEFAULT_GATE_EXAMPLES, DEFAULT_SCORE_EXAMPLES, DEFAULT_SUBSPACE_EXAMPLES};

mod compare;
mod device;
mod inputs;
mod method;
mod overrides;
mod paths;

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
    /// The layer config `method` resolves to, computed once ([`RunConfig::layer_config`]).
    #[serde(skip)]
    pub(crate) layer: LayerCache,
}

/// The method's layer config and the `[method]` section it came from (recomputed only when the
/// section changed; [`RunConfig::layer_config`]). Not part of the config's value: two configs
/// compare equal whatever it holds.
#[derive(Debug, Default)]
pub(crate) struct LayerCache(pub(crate) std::sync::Mutex<Option<(MethodConfig, MoramConfig)>>);

impl Clone for LayerCache {
    fn clone(&self) -> Self {
        LayerCache(std::sync::Mutex::new(self.0.lock().ok().and_then(|c| c.clone())))
    }
}

impl PartialEq for LayerCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

fn default_name() -> String {
    "run".into()
}

fn default_seed() -> u64 {
    42
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
    /// Steps between progress lines in the log (loss, learning rate, gradient norm, tokens/s,
    /// ETA): at info level when no progress bar is drawn (a log file, `-q`), at debug level under
    /// a bar. Absent: every [`DEFAULT_LOG_EVERY`] steps; 0: none. It changes no result, so a run
    /// resumes with another value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
}

/// Steps between progress lines when `training.log_every` is absent.
pub const DEFAULT_LOG_EVERY: usize = 10;

/// Keys that change how a run reports, not what it computes: a run resumes with other values.
pub const REPORTING_KEYS: [&str; 1] = ["training.log_every"];

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

impl GenerationSettings {
    /// The model crate's generation config for these settings (greedy), stopping at `stop_ids`
    /// and padding with `pad_id`: the one conversion from the run's settings.
    pub fn generation_config(&self, stop_ids: Vec<i64>, pad_id: i64) -> moram_models::llm::GenerationConfig {
        moram_models::llm::GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            repetition_penalty: self.repetition_penalty,
            no_repeat_ngram_size: self.no_repeat_ngram_size,
            stop_ids,
            pad_id,
            ..moram_models::llm::GenerationConfig::default()
        }
    }
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

    /// The `[model]` and `[data]` sections a learner needs; an error names the missing one.
    pub fn model_and_data(&self) -> Result<(&ModelConfig, &DataConfig)> {
        let model = self.model.as_ref().ok_or_else(|| Error::config("model", "the config has no [model] section"))?;
        let data = self.data.as_ref().ok_or_else(|| Error::config("data", "the config has no [data] section"))?;
        Ok((model, data))
    }

    /// Checks ranges and consistency; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.check_method()?;
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
