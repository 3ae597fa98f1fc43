//! [`MoramConfig`]: the hyper-parameters of one MoRAM adapter, shared by every adapted layer.
//!
//! Field names are the TOML/JSON keys; unknown keys are rejected by name. Every field has a default
//! (the paper's X-TAIL settings), so a config file only lists what it changes. Named profiles
//! reproduce the settings of the paper and of the official code (protocol section 7).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::str::FromStr;

/// How a new task's keys are initialised (values always start at zero, so a fresh task leaves the
/// model's function unchanged until it trains).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyInit {
    /// U(-1/sqrt(d_in), +1/sqrt(d_in)): `kaiming_uniform_(a = sqrt(5))`, as both official code bases.
    KaimingUniform,
    /// N(0, 1/d_in): same second moment scale as a unit-variance projection.
    Normal,
}

/// How the per-token weights of the atoms are produced. One type, so the same model code runs the
/// method, its paper Table 4 ablations and the usual baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Routing {
    /// MoRAM: rank-1 atoms scored by their own keys (Eq. 5). Each stage can be switched off for the
    /// ablations of paper Table 4 ("self-activated", "+ top-k", "+ tau", "+ delta").
    SelfActivated {
        /// Eq. 6: keep only the top-k scores. Off: every atom takes part in the softmax.
        #[serde(default = "yes", alias = "top_k")]
        use_top_k: bool,
        /// Eq. 7: divide by the temperature. Off: tau = 1.
        #[serde(default = "yes", alias = "temperature")]
        use_temperature: bool,
        /// Eq. 8: eval-only gate `s_i >= delta`. Off: no gate.
        #[serde(default = "yes", alias = "threshold")]
        use_threshold: bool,
    },
    /// Rank-1 atoms weighted by an external learned router (one router key per atom, zero-initialised,
    /// frozen with its atom): weights = softmax(top-k(W_r x) / tau). Table 4 "External router, rank-1".
    ExternalRouter {
        /// Keep only the top-k router logits.
        #[serde(default = "yes", alias = "top_k")]
        use_top_k: bool,
        /// Divide the router logits by the temperature.
        #[serde(default = "yes", alias = "temperature")]
        use_temperature: bool,
    },
    /// MoE-LoRA: one rank-r expert per task and a learned softmax router over experts (one
    /// zero-initialised router key per expert, frozen with it); top-k over experts. Table 4 "MoE-LoRA"
    /// (temperature off) and "+ tau" (on).
    MoeLora {
        /// Keep only the top-k experts.
        #[serde(default = "yes", alias = "top_k")]
        use_top_k: bool,
        /// Divide the router logits by the temperature.
        #[serde(default, alias = "temperature")]
        use_temperature: bool,
    },
    /// Plain LoRA: one rank-r adapter, dense, shared by all tasks and never frozen (the SeqLoRA
    /// baseline when trained task after task). A struct variant so unknown keys are rejected.
    Lora {},
    /// Every atom with weight 1, atoms of earlier tasks frozen: the sum of one LoRA per task
    /// (O-LoRA's forward pass; its orthogonality and L2 terms are [`Penalty`]).
    Sum {},
}

fn yes() -> bool {
    true
}

impl Routing {
    /// The full MoRAM routing (all stages on).
    pub const MORAM: Routing = Routing::SelfActivated { use_top_k: true, use_temperature: true, use_threshold: true };

    /// Whether the routing keeps a learned router (external router, MoE-LoRA).
    pub fn has_router(&self) -> bool {
        matches!(self, Routing::ExternalRouter { .. } | Routing::MoeLora { .. })
    }

    /// Whether new tasks append atoms and freeze older ones (every kind but plain LoRA).
    pub fn grows(&self) -> bool {
        !matches!(self, Routing::Lora {})
    }
}

impl Default for Routing {
    fn default() -> Self {
        Routing::MORAM
    }
}

/// When the eval-only sparse value path is used (see [`crate::routing::compact_used_atoms`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValuePath {
    /// The path the benchmarks found faster on the device: currently dense everywhere on CPU
    /// (`benchmarks/results/core.json`).
    #[default]
    Auto,
    /// Always the dense `(z * w) B^T` product.
    Dense,
    /// In eval, only the atoms some token selected (compacted columns of B).
    Sparse,
}

/// Switches that reproduce documented behaviours of the official TRACE code (protocol section 6).
/// All off by default: the defaults follow the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompatFlags {
    /// B1: frozen atoms' values lose `value_scale` (the official TRACE code trains `B * alpha/r`
    /// but freezes the raw `B`, halving every learned atom from its first evaluation on).
    pub unscaled_frozen_values: bool,
    /// B3: at the end of a task the next task's fresh atoms (random keys, zero values) are appended
    /// at once and take part in top-k and softmax during evaluation, diluting the trained atoms.
    pub untrained_atoms_in_eval: bool,
}

/// Protecting earlier tasks' inputs from later atoms (the Gradient Projection Memory idea of Saha
/// et al. 2021 and InfLoRA, applied to MoRAM; `docs/method.md`, "Orthogonal keys"). Not in the
/// paper: off unless configured.
///
/// After each task the layer's inputs on that task's training data give an uncentred second-moment
/// matrix `C = sum x x^T`; the basis `U` grows by the leading eigenvectors of `C` outside `U` until
/// `U` captures `energy` of `trace(C)`. What is restricted to the complement of the basis that
/// existed when an atom's task began is chosen by [`SubspaceMode`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySubspace {
    /// Share of each task's input energy the protected subspace must capture, in (0, 1).
    pub energy: f64,
    /// What the protection applies to.
    #[serde(default)]
    pub mode: SubspaceMode,
    /// Novelty-gated routing: the quantile of the earlier tasks' tokens' `rho` that a token must
    /// reach for later atoms to act on it, in (0, 1].
    #[serde(default = "default_novelty_quantile")]
    pub quantile: f64,
}

impl KeySubspace {
    /// A subspace setting with the default quantile.
    pub fn new(energy: f64, mode: SubspaceMode) -> Self {
        KeySubspace { energy, mode, quantile: DEFAULT_NOVELTY_QUANTILE }
    }
}

/// The default [`KeySubspace::quantile`]: 99% of the earlier tasks' tokens stay closed to later atoms.
pub const DEFAULT_NOVELTY_QUANTILE: f64 = 0.99;

fn default_novelty_quantile() -> f64 {
    DEFAULT_NOVELTY_QUANTILE
}

/// What [`KeySubspace`] restricts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubspaceMode {
    /// The keys themselves: `a <- a - (a U) U^T` at creation and after every optimiser step, so a
    /// new atom neither scores nor reads anything in earlier tasks' subspace (GPM / InfLoRA).
    #[default]
    Keys,
    /// Only the routing: an atom's relevance score (Eq. 5) uses its key projected out of the
    /// subspace that existed when its task began, while its value coefficient `z = a . x` reads the
    /// whole input. Earlier tasks' tokens give later atoms a score near 0 (below the gate), yet a
    /// later task can still read features earlier tasks use.
    Routing,
    /// Novelty-gated routing: as [`SubspaceMode::Routing`], but an atom only takes part on tokens
    /// its predecessors' subspace does not explain: where the share of the token outside that
    /// subspace, `rho = ||P x|| / ||x||`, reaches a threshold fitted on the earlier tasks' own tokens
    /// (their `quantile`). There its score reads the outside part rescaled to the token's norm
    /// (`(P a) . x / rho`), so it competes with earlier atoms at full scale; elsewhere it is out.
    NoveltyGated,
}

/// What the relevance score (Eq. 5) is computed from (a variant, not in the paper; `docs/method.md`,
/// "Standardised scores"). The value coefficient `z = a . x` always reads the raw input.
///
/// Hidden states of LLMs share a large common component (and a few massive features) across
/// tokens, so raw scores `a . x` are dominated by it and every token of every task routes alike.
/// The per-feature mean and standard deviation come from the layer's inputs on the first task's
/// training data, before any atom is trained, and stay fixed (so earlier atoms' routing never
/// drifts); they are saved in the adapter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreInput {
    /// The layer input as it is (the paper and the official code).
    #[default]
    Raw,
    /// `x - mean`: the shared component removed.
    Centred,
    /// `(x - mean) / std` per feature: also no feature dominates by its scale.
    Standardised,
}

/// Regularisers added to the training loss of the current task's atoms (O-LoRA, Wang et al. 2023):
/// `orthogonality * sum |A_new A_old^T| + l2 * (||A_new|| + ||B_new||)` (Frobenius norms, not
/// squared, as the official O-LoRA code sums `torch.norm(param, p=2)`). Both 0 by default.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Penalty {
    /// Weight of the L1 norm of the products between new and frozen keys (O-LoRA's lambda_1).
    pub orthogonality: f64,
    /// Weight of the L2 norms of the new keys and values (O-LoRA's lambda_2).
    pub l2: f64,
}

impl Penalty {
    /// Whether any term is switched on.
    pub fn is_active(&self) -> bool {
        self.orthogonality != 0.0 || self.l2 != 0.0
    }
}

/// Hyper-parameters of a MoRAM adapter (paper section 3.3; protocol sections 1 and 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoramConfig {
    /// Atoms appended per task (`r`; for plain LoRA and MoE-LoRA, the adapter/expert rank).
    pub r: usize,
    /// Top-k budget (`k`). The effective value is `min(max(k, 2), R)` as in the official code:
    /// it forces at least 2 and never more than the atoms present.
    pub top_k: usize,
    /// Softmax temperature `tau` (Eq. 7), > 0.
    pub temperature: f64,
    /// Inference threshold `delta` on the normalised score (Eq. 8), in [0, 1). 0 disables the gate.
    pub threshold: f64,
    /// Clamp of the L2 norm in Eq. 5 (torch `normalize` semantics): 1e-12 (X-TAIL), 1e-8 (TRACE).
    pub eps: f64,
    /// Initialisation of new keys.
    pub key_init: KeyInit,
    /// Multiplier on the value path (`lora_alpha / r` in LoRA terms; 1 in X-TAIL, 2 in TRACE).
    pub value_scale: f64,
    /// Dropout on the adapter's input in training, applied before routing and values (TRACE: 0.1).
    pub dropout: f64,
    /// Which routing computes the atom weights.
    pub routing: Routing,
    /// Eval-time value path.
    pub value_path: ValuePath,
    /// Reproductions of official-code behaviours; all off by default.
    pub compat: CompatFlags,
    /// Orthogonal keys (a variant, not in the paper); off when absent.
    pub key_subspace: Option<KeySubspace>,
    /// Loss regularisers of the new atoms (O-LoRA); off by default.
    pub penalty: Penalty,
    /// What the relevance score reads (a variant; `raw` is the paper).
    pub score_input: ScoreInput,
    /// Task-gated atoms (a variant, not in the paper): each sequence may use only the atoms of the
    /// tasks up to the one its prompt is recognised as; off when absent.
    pub task_gate: Option<TaskGateConfig>,
}

/// Task-gated atoms ([`crate::variants::task_gate`], `docs/method.md`, "Task-gated atoms"): the
/// model keeps a [`crate::TaskGate`] that recognises each sequence's task from its prompt, and in
/// evaluation a sequence recognised as task `j` may use only atoms created by tasks `<= j`. In
/// training every atom is open (the current task is the newest), as in the paper.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskGateConfig {
    /// Shrinkage of the recogniser's shared covariance towards its diagonal, in [0, 1].
    #[serde(default = "default_gate_shrinkage")]
    pub shrinkage: f64,
}

fn default_gate_shrinkage() -> f64 {
    crate::variants::task_gate::DEFAULT_SHRINKAGE
}

impl Default for TaskGateConfig {
    fn default() -> Self {
        TaskGateConfig { shrinkage: default_gate_shrinkage() }
    }
}

impl Default for MoramConfig {
    fn default() -> Self {
        Profile::Paper.config()
    }
}

/// The serde spelling of a unit enum variant (the one source of a config name: listings and
/// messages derive it instead of keeping a second table).
pub fn serde_name<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        // Not a unit variant: its debug form says what it is.
        _ => format!("{value:?}"),
    }
}

/// Named settings (protocol section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Paper A.1 (X-TAIL): r = 16, k = 16, tau = 0.01, delta = 0.2, no scaling, no dropout.
    Paper,
    /// The official X-TAIL code (`XTAIL/loralib/moram.py`, `runner_moram.sh`): the same layer
    /// settings as the paper with torch's default eps 1e-12. (Its unclamped top-k, bug B4, only
    /// ever shows as a crash when k > R, so it is not reproduced.)
    Xtail,
    /// The official TRACE code: r = 8, k = 8, tau = 0.03, delta = 0.2, eps 1e-8, alpha = 2r
    /// (scale 2), dropout 0.1, with its unscaled freeze (B1) and untrained atoms at eval (B3).
    TraceCode,
    /// Paper A.1 (TRACE): r = 16, k = 16, tau = 0.03, delta = 0.2; what the paper leaves out
    /// (eps, scale, dropout) as the TRACE code, without its bugs.
    TracePaper,
}

impl Profile {
    /// Every profile, for listings and tests.
    pub const ALL: [Profile; 4] = [Profile::Paper, Profile::Xtail, Profile::TraceCode, Profile::TracePaper];

    /// The profile's name as used in configs and on the command line (its serde spelling).
    pub fn name(self) -> String {
        serde_name(&self)
    }

    /// The full configuration of the profile.
    pub fn config(self) -> MoramConfig {
        let xtail = MoramConfig {
            r: 16,
            top_k: 16,
            temperature: 0.01,
            threshold: 0.2,
            eps: 1e-12,
            key_init: KeyInit::KaimingUniform,
            value_scale: 1.0,
            dropout: 0.0,
            routing: Routing::MORAM,
            value_path: ValuePath::Auto,
            compat: CompatFlags::default(),
            key_subspace: None,
            penalty: Penalty::default(),
            score_input: ScoreInput::Raw,
            task_gate: None,
        };
        match self {
            Profile::Paper | Profile::Xtail => xtail,
            Profile::TraceCode => MoramConfig {
                r: 8,
                top_k: 8,
                temperature: 0.03,
                eps: 1e-8,
                value_scale: 2.0,
                dropout: 0.1,
                compat: CompatFlags { unscaled_frozen_values: true, untrained_atoms_in_eval: true },
                ..xtail
            },
            Profile::TracePaper => {
                MoramConfig { temperature: 0.03, eps: 1e-8, value_scale: 2.0, dropout: 0.1, ..xtail }
            }
        }
    }
}

impl FromStr for Profile {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            let names: Vec<_> = Profile::ALL.iter().map(|p| p.name()).collect();
            Error::config("profile", format!("`{s}` is not a profile; valid: {}", names.join(", ")))
        })
    }
}

impl MoramConfig {
    /// Checks every range; the error names the field and the value found.
    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::config("r", "must be at least 1 atom per task, found 0"));
        }
        if self.top_k == 0 {
            return Err(Error::config("top_k", "must be at least 1, found 0"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::config("temperature", format!("must be finite and > 0, found {}", self.temperature)));
        }
        if !(0.0..1.0).contains(&self.threshold) {
            return Err(Error::config("threshold", format!("must lie in [0, 1), found {}", self.threshold)));
        }
        if !(self.eps.is_finite() && self.eps > 0.0 && self.eps < 1e-3) {
            return Err(Error::config("eps", format!("must lie in (0, 1e-3), found {}", self.eps)));
        }
        if !self.value_scale.is_finite() || self.value_scale == 0.0 {
            return Err(Error::config(
                "value_scale",
                format!("must be finite and non-zero, found {}", self.value_scale),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("dropout", format!("must lie in [0, 1), found {}", self.dropout)));
        }
        if let Some(ks) = self.key_subspace {
            if !(ks.energy > 0.0 && ks.energy < 1.0) {
                return Err(Error::config("key_subspace.energy", format!("must lie in (0, 1), found {}", ks.energy)));
            }
            if !(ks.quantile > 0.0 && ks.quantile <= 1.0) {
                return Err(Error::config(
                    "key_subspace.quantile",
                    format!("must lie in (0, 1], found {}", ks.quantile),
                ));
            }
            if !self.routing.grows() {
                return Err(Error::config("key_subspace", "needs a routing that grows per task (not lora)"));
            }
        }
        for (name, v) in [("penalty.orthogonality", self.penalty.orthogonality), ("penalty.l2", self.penalty.l2)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::config(name, format!("must be finite and >= 0, found {v}")));
            }
        }
        if self.score_input != ScoreInput::Raw && !matches!(self.routing, Routing::SelfActivated { .. }) {
            return Err(Error::config(
                "score_input",
                format!("`{:?}` needs self-activated routing (the scores of Eq. 5)", self.score_input),
            ));
        }
        if let Some(g) = self.task_gate {
            if !(0.0..=1.0).contains(&g.shrinkage) {
                return Err(Error::config("task_gate.shrinkage", format!("must lie in [0, 1], found {}", g.shrinkage)));
            }
            if !self.routing.grows() {
                return Err(Error::config("task_gate", "needs a routing that grows per task (not lora)"));
            }
        }
        if self.compat.untrained_atoms_in_eval && !self.routing.grows() {
            return Err(Error::config(
                "compat.untrained_atoms_in_eval",
                "needs a routing that grows per task (not lora)",
            ));
        }
        Ok(())
    }

    /// Parses and validates a TOML document (unknown keys are errors that name the key and line).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::parse(text, None, toml_de)
    }

    /// Parses and validates a JSON document.
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, None, json_de)
    }

    /// Reads a `.toml` or `.json` file (by extension) and validates it.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_json {
            Self::parse(&text, Some(path), json_de)
        } else {
            Self::parse(&text, Some(path), toml_de)
        }
    }

    fn parse(
        text: &str,
        origin: Option<&Path>,
        de: impl Fn(&str) -> std::result::Result<Self, String>,
    ) -> Result<Self> {
        let config = de(text).map_err(|reason| Error::ConfigParse { origin: origin.map(Into::into), reason })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as JSON (the form stored in adapter files).
    pub fn to_json(&self) -> String {
        // A struct of numbers, bools and unit enums always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Effective top-k for `n` candidates: `min(max(k, 2), n)` (see [`crate::routing::effective_top_k`]).
    pub fn effective_top_k(&self, n: usize) -> usize {
        crate::routing::effective_top_k(self.top_k, n)
    }
}

fn json_de(text: &str) -> std::result::Result<MoramConfig, String> {
    serde_json::from_str(text).map_err(|e| e.to_string())
}

fn toml_de(text: &str) -> std::result::Result<MoramConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}
