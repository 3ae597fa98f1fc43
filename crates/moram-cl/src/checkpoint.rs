//! Run state on disk: written after every finished task with a temporary file and a rename, so a
//! crash or Ctrl-C never leaves a half-written checkpoint and never loses a finished task.
//!
//! A run folder holds `config.toml` (the run's config), `state.json` ([`RunState`]: tasks done,
//! accuracy matrix so far, per-task records, seeds, config hash, versions) and one
//! `adapter-task{t}.safetensors` per finished task (moram-core's adapter format).

use crate::base_model::{BaseCheck, BaseModel, BASE_KEY};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::learner::Learner;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// File name of the run state.
pub const STATE_FILE: &str = "state.json";
/// File name of the run's config.
pub const CONFIG_FILE: &str = "config.toml";
/// `format` value of state files.
pub const FORMAT: &str = "moram-run";
/// Current state format version.
pub const FORMAT_VERSION: u32 = 1;

/// What pruning did after a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Atoms in the model before / after.
    pub atoms_before: usize,
    /// Atoms after pruning.
    pub atoms_after: usize,
    /// Adapter parameters before pruning.
    pub parameters_before: usize,
    /// Adapter parameters after pruning.
    pub parameters_after: usize,
    /// The task's own score before pruning.
    pub metric_before: f64,
    /// The task's own score after pruning.
    pub metric_after: f64,
}

/// One finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Task name.
    pub name: String,
    /// Optimiser steps.
    pub steps: usize,
    /// Loss of the last step.
    #[serde(deserialize_with = "crate::metrics::matrix::nan_if_null")]
    pub final_loss: f64,
    /// Loss of the first step (`None` in files written before it was recorded).
    #[serde(default)]
    pub first_loss: Option<f64>,
    /// Parameters trained in this task.
    pub trainable_parameters: usize,
    /// Every atom parameter in the model after the task.
    pub adapter_parameters: usize,
    /// Every parameter of the model (base + atoms).
    pub total_parameters: usize,
    /// Atoms in the model after the task.
    pub atoms: usize,
    /// Wall-clock seconds of training (and pruning).
    pub seconds: f64,
    /// Peak resident memory of the process so far (MiB).
    pub peak_rss_mib: Option<f64>,
    /// Pruning outcome, when enabled.
    pub prune: Option<PruneReport>,
    /// Orthogonal keys: dimension of every layer's protected input subspace after the task.
    #[serde(default)]
    pub subspace_dims: Option<Vec<usize>>,
    /// The same over each layer's input width `m / d_in` (`None` in files written before it).
    #[serde(default)]
    pub subspace_share: Option<Vec<f64>>,
    /// Routing diagnostics after the task (leakage, own-task top-1 share, key norms).
    #[serde(default)]
    pub routing: Option<crate::analysis::RoutingDiagnostics>,
    /// Task-gated atoms: `recognition[i][j]`, the share of task `i`'s evaluation prompts (every
    /// task of the sequence) the gate recognised as task `j` (the tasks so far) after this task.
    #[serde(default)]
    pub recognition: Option<Vec<Vec<f64>>>,
    /// Data-parallel workers that trained the task (1: one process).
    #[serde(default = "one")]
    pub workers: usize,
    /// Seconds rank 0 spent in training collectives (atom broadcast, per-step flags, gradient
    /// all-reduce), waiting for slower ranks included; 0 with one process.
    #[serde(default)]
    pub communication_seconds: f64,
}

fn one() -> usize {
    1
}

/// The persistent state of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// Tasks in training order.
    pub task_names: Vec<String>,
    /// `matrix[i][j]`: score on task `j` after task `i`, one row per finished task.
    pub matrix: Vec<Vec<f64>>,
    /// One record per finished task.
    pub tasks: Vec<TaskRecord>,
    /// Adapter file of each finished task (relative to the run folder).
    pub adapters: Vec<String>,
    /// The run's seed.
    pub seed: u64,
    /// SHA-256 of the config.
    pub config_hash: String,
    /// moram and libtorch versions that wrote the state.
    pub versions: BTreeMap<String, String>,
}

/// Versions recorded in states and results.
pub fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    v.insert("moram".into(), env!("CARGO_PKG_VERSION").into());
    v.insert("tch".into(), "0.24.0".into());
    v.insert("cuda_available".into(), tch::Cuda::is_available().to_string());
    v
}

impl RunState {
    /// The state of a run that has not finished any task.
    pub fn new(config: &RunConfig, task_names: Vec<String>) -> Self {
        RunState {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            task_names,
            matrix: Vec::new(),
            tasks: Vec::new(),
            adapters: Vec::new(),
            seed: config.seed,
            config_hash: config.hash(),
            versions: versions(),
        }
    }

    /// Finished tasks.
    pub fn tasks_done(&self) -> usize {
        self.matrix.len()
    }

    /// Whether every task is finished.
    pub fn is_complete(&self) -> bool {
        self.tasks_done() == self.task_names.len()
    }

    /// The adapter of the last finished task.
    pub fn adapter_file(&self) -> Option<&str> {
        self.adapters.last().map(String::as_str)
    }

    pub(crate) fn finish_task(&mut self, row: Vec<f64>, record: TaskRecord, adapter: String) {
        self.matrix.push(row);
        self.tasks.push(record);
        self.adapters.push(adapter);
    }

    /// Writes `state.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Checkpoint {
            path: dir.join(STATE_FILE),
            message: format!("cannot serialise the run state: {e}"),
        })?;
        write_atomic(&dir.join(STATE_FILE), text.as_bytes())
    }

    /// Reads and checks `state.json` of a run folder.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            message: format!("cannot read the run state ({e}); is this a moram run folder?"),
        })?;
        Self::from_json_str(&text, &path)
    }

    /// Parses and checks a run state; `path` names it in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let state: RunState = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint { path: path.into(), message: format!("corrupt run state: {e}") })?;
        state.check(path)?;
        Ok(state)
    }

    /// Checks the invariants every reader relies on (format, one matrix row, record and adapter
    /// per finished task, rows as long as the task list).
    pub fn check(&self, path: &Path) -> Result<()> {
        let state = self;
        let path = path.to_path_buf();
        if state.format != FORMAT || state.format_version != FORMAT_VERSION {
            return Err(Error::Checkpoint {
                path,
                message: format!("format {} v{} is not {FORMAT} v{FORMAT_VERSION}", state.format, state.format_version),
            });
        }
        let n = state.task_names.len();
        if state.matrix.len() > n
            || state.tasks.len() != state.matrix.len()
            || state.adapters.len() != state.matrix.len()
            || state.matrix.iter().any(|r| r.len() != n)
        {
            return Err(Error::Checkpoint {
                path,
                message: "inconsistent run state (matrix, records, adapters)".into(),
            });
        }
        for (i, record) in state.tasks.iter().enumerate() {
            if let Some(routing) = &record.routing {
                routing
                    .check_shapes(n)
                    .map_err(|m| Error::Checkpoint { path: path.clone(), message: format!("task {i}: {m}") })?;
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to `path` through a temporary file in the same folder and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Writes the run's config as `config.toml`.
pub fn write_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let stored = config.clone().with_paths_for_run(dir);
    let text = toml::to_string_pretty(&stored).map_err(|e| Error::config("(config)", e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), text.as_bytes())
}

/// Reads the run's `config.toml`, its relative paths taken against the run folder (see
/// [`RunConfig::with_paths_for_run`]): the result works from any working directory.
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    RunConfig::from_file(dir.join(CONFIG_FILE))
}

/// Fails with [`Error::ConfigMismatch`], naming the differing fields, unless the run in `dir`
/// was started with `config` (the check before resuming it).
pub fn check_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let saved = read_config(dir)?;
    let diff = saved.differing_fields(&config.clone().with_paths_against(Path::new(".")));
    if diff.is_empty() {
        Ok(())
    } else {
        Err(Error::ConfigMismatch { dir: dir.into(), fields: diff.join(", ") })
    }
}

/// File name of the adapter saved after task `task` (0-based).
pub fn adapter_name(task: usize) -> String {
    format!("adapter-task{task}.safetensors")
}

/// Saves every bank of `learner` as [`adapter_name`]`(task)`; returns the file name.
pub fn save_adapter(learner: &impl Learner, dir: &Path, task: usize, config: &RunConfig) -> Result<String> {
    let name = adapter_name(task);
    let mut extra = adapter_metadata(learner, config)?;
    extra.insert("task_names".to_string(), learner.task_names()[..=task].join("\n"));
    let layers = learner.moram_layers();
    let banks = layers.iter().map(|(p, m)| (p.as_str(), m.bank()));
    moram_core::save_adapter_with_gate(dir.join(&name), banks, learner.task_gate(), &extra)?;
    Ok(name)
}

/// Metadata key of the adapted modules (the run's `model.targets`, JSON) in adapter files.
pub const TARGETS_KEY: &str = "targets";
/// Metadata key of the run's generation settings (JSON) in adapter files.
pub const GENERATION_KEY: &str = "generation";

fn to_json(value: &impl Serialize) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::config("(adapter metadata)", e.to_string()))
}

/// What every adapter file of a run records besides its banks: the run's name, its method, its
/// base model ([`crate::base_model`]), the adapted modules and the generation settings.
pub fn adapter_metadata(learner: &impl Learner, config: &RunConfig) -> Result<BTreeMap<String, String>> {
    let mut extra = BTreeMap::new();
    extra.insert("run".to_string(), config.name.clone());
    extra.insert("method".to_string(), config.method.name.to_string());
    if let Some(model) = &config.model {
        extra.insert(BASE_KEY.to_string(), BaseModel::of(learner, &model.path)?.to_json());
        // With these two, the file alone (and its base) answers prompts as the run did.
        extra.insert(TARGETS_KEY.to_string(), to_json(&model.targets)?);
        extra.insert(GENERATION_KEY.to_string(), to_json(&config.generation)?);
    }
    Ok(extra)
}

/// Replaces every bank of `learner` with the ones stored in `path` (same layers required), after
/// checking that the file was trained on the model `learner` holds ([`BaseModel::check`]).
pub fn load_adapter(learner: &mut impl Learner, path: &Path) -> Result<()> {
    load_adapter_with(learner, path, BaseCheck::Require)
}

/// [`load_adapter`], with `check` deciding what a different base does (`--force-base`).
pub fn load_adapter_with(learner: &mut impl Learner, path: &Path, check: BaseCheck) -> Result<()> {
    let device = learner.moram_layers().first().map(|(_, m)| m.weight().device()).unwrap_or(tch::Device::Cpu);
    let mut file = moram_core::AdapterFile::load(path, device)?;
    let here = BaseModel::of(learner, Path::new(""))?;
    let mut layers = learner.moram_layers_mut();
    let expected: Vec<String> = layers.iter().map(|(p, _)| p.clone()).collect();
    let mut stored: Vec<String> = file.layer_names().iter().map(|s| s.to_string()).collect();
    stored.sort();
    let mut sorted = expected.clone();
    sorted.sort();
    if stored != sorted {
        return Err(Error::Checkpoint {
            path: path.into(),
            message: format!("adapts layers {stored:?}, but the model adapts {sorted:?}"),
        });
    }
    here.check(path, file.metadata.get(BASE_KEY).map(String::as_str), check)?;
    for (p, m) in layers.iter_mut() {
        let bank = file.take_bank(p, m.bank().d_in(), m.bank().d_out())?;
        m.replace_bank(bank)?;
    }
    drop(layers);
    learner.set_task_gate(file.take_task_gate())
}
