//! The engine's error type: every variant names what was wrong and where.

use std::path::PathBuf;

/// Errors of the continual-learning engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A run config key is invalid (`key` is its dotted path).
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },
    /// The method's layer settings (profile plus overrides) are invalid; the source says which.
    #[error("config `method`: invalid layer settings")]
    Method {
        /// What moram-core refused.
        #[source]
        source: moram_core::Error,
    },
    /// An operation on one adapted layer failed (statistics, subspace, pruning).
    #[error("layer `{layer}`")]
    Layer {
        /// Module path.
        layer: String,
        /// What moram-core refused.
        #[source]
        source: moram_core::Error,
    },
    /// Overrides of a config's values (`key=value`) do not form a valid config.
    #[error("overriding {keys}: {message}")]
    Override {
        /// The keys overridden together.
        keys: String,
        /// What the parser refused.
        message: String,
    },
    /// A config file could not be parsed.
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    /// A data file is missing, malformed or inconsistent; `entry` locates the record when known.
    #[error("{path}{}: {message}", entry.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Data { path: PathBuf, entry: Option<String>, message: String },
    /// A task definition is unusable (empty split, label out of range, ...).
    #[error("task `{task}`: {message}")]
    Task { task: String, message: String },
    /// The loss became NaN or infinite; the last finished task's checkpoint is intact.
    /// `ranks` names the workers that saw it in a data-parallel run (empty with one process).
    #[error("non-finite loss {loss} in task {task} (`{name}`) at step {step}{ranks}; the checkpoint of the last finished task is kept")]
    NonFinite { task: usize, name: String, step: usize, loss: f64, ranks: String },
    /// Stopped on request (Ctrl-C) at a step boundary; finished tasks are kept.
    #[error("interrupted in task {task} (`{name}`) at step {step}; {done} finished task(s) are saved and the run can be resumed")]
    Interrupted { task: usize, name: String, step: usize, done: usize },
    /// `resume` found a run made with a different config.
    #[error("cannot resume {dir}: the config differs from the run's in {fields}")]
    ConfigMismatch { dir: PathBuf, fields: String },
    /// A new run was asked for in a folder that already holds one.
    #[error("{dir} already holds a run (resume it, or choose another output folder)")]
    RunExists {
        /// The run folder.
        dir: PathBuf,
    },
    /// A run directory or checkpoint is missing, incomplete or corrupt.
    #[error("{path}: {message}")]
    Checkpoint { path: PathBuf, message: String },
    /// An adapter file was trained on another base model than the one loaded
    /// ([`crate::base_model`]).
    #[error(
        "{path}: trained on {trained_on}, but the model loaded now is {loaded}; load it onto the base it \
         was trained on, or pass --force-base to load it anyway"
    )]
    WrongBase { path: PathBuf, trained_on: String, loaded: String },
    /// An adapter no LoRA computes was asked for as a LoRA export ([`crate::export`]).
    #[error("{path}: {reason}; only LoRA-type adapters export")]
    NotExportable { path: PathBuf, reason: String },
    /// A metric was called with inconsistent inputs.
    #[error("metric `{metric}`: {message}")]
    Metric { metric: String, message: String },
    /// File system error on `path`.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// From moram-core (atom banks, adapter files).
    #[error(transparent)]
    Core(#[from] moram_core::Error),
    /// From moram-models (loading, forward passes, tokenisers).
    #[error(transparent)]
    Models(#[from] moram_models::Error),
    /// From libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
    /// From the data-parallel layer (a lost peer, a collective that timed out).
    #[error(transparent)]
    Dist(#[from] moram_dist::Error),
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn layer(layer: impl Into<String>, source: moram_core::Error) -> Self {
        Error::Layer { layer: layer.into(), source }
    }

    pub(crate) fn task(task: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Task { task: task.into(), message: message.into() }
    }

    pub(crate) fn metric(metric: &str, message: impl Into<String>) -> Self {
        Error::Metric { metric: metric.into(), message: message.into() }
    }
}
