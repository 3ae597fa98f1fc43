//! The `[method]` section: which method (by its config name) and its layer and training
//! hyper-parameters, each a key of its own that the method's file reads.

use moram_core::{CompatFlags, Profile, ScoreInput};
use serde::{Deserialize, Serialize};

/// Training examples whose layer inputs define a task's subspace (orthogonal keys), by default.
pub const DEFAULT_SUBSPACE_EXAMPLES: usize = 64;
/// First-task training examples whose layer inputs give the score statistics, by default.
pub const DEFAULT_SCORE_EXAMPLES: usize = 64;
/// Training prompts of each task the task gate is fitted on, by default.
pub const DEFAULT_GATE_EXAMPLES: usize = 256;

/// A method's config name as the `[method]` section holds it ([`crate::methods::Method`] is the
/// method it names).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MethodName(pub String);

impl MethodName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Method and layer hyper-parameters: a moram-core profile plus overrides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// The method's config name (`moram`, `seq-lora`, ...): one of [`crate::methods::REGISTRY`],
    /// checked by [`RunConfig::validate`].
    pub name: MethodName,
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
    /// Replay: training examples of each finished task kept in the buffer (default 16 for
    /// `replay`; any other method replays too when this is set).
    pub replay_examples: Option<usize>,
    /// Replay: buffer examples added to each optimiser step's batch (default 2).
    pub replay_per_step: Option<usize>,
    /// EWC: weight lambda of the quadratic penalty (default 400, the official TRACE code's).
    pub ewc_lambda: Option<f64>,
    /// LwF: distillation temperature T (default 2, the official TRACE code's).
    pub lwf_temperature: Option<f64>,
    /// LwF: weight of the distillation term (default 1: the official code adds it unweighted).
    pub lwf_lambda: Option<f64>,
    /// TreeLoRA's regularisation weight (`tree-lora` only; 0.5, the official scripts' `--reg`).
    pub tree_reg: Option<f64>,
}

fn default_profile() -> Profile {
    Profile::Paper
}
