//! Every method moram runs, one file each, behind one seam (`docs/architecture.md`, "Adding a
//! method"): a [`MethodDef`] says what the method's adapted layers are (its moram-core layer
//! config) and starts the [`RunHooks`] the runner calls around each task and step.
//!
//! The paper's MoRAM and its Table 4 ablations ([`moram`]), the routers of Table 4 ([`routers`]),
//! the baselines ([`seq_lora`], [`o_lora`], [`inc_lora`], [`inflora`], [`replay`], [`ewc`], [`lwf`], [`tree_lora`], [`mtl`]) and the variants this project adds
//! ([`subspace`], [`scores`], [`task_gated`]). Adding a method: a file with a type implementing
//! [`MethodDef`], and one line in [`REGISTRY`].

/// Defines a method that only sets the adapted layers: a unit struct with its doc, config name,
/// summary, whether it is a variant of this project, and its [`MethodDef::layer`] as a closure
/// `|method, layer| -> Result<MoramConfig>`.
macro_rules! layer_method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $summary:literal, variant: $variant:literal, $layer:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl $crate::methods::MethodDef for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn summary(&self) -> &'static str {
                $summary
            }
            fn is_variant(&self) -> bool {
                $variant
            }
            fn layer(
                &self,
                method: &$crate::config::MethodConfig,
                layer: moram_core::MoramConfig,
            ) -> $crate::error::Result<moram_core::MoramConfig> {
                let layer_of: fn(
                    &$crate::config::MethodConfig,
                    moram_core::MoramConfig,
                ) -> $crate::error::Result<moram_core::MoramConfig> = $layer;
                layer_of(method, layer)
            }
        }
    };
}

pub mod ewc;
pub mod hooks;
pub mod inc_lora;
pub mod inflora;
pub mod lwf;
pub mod moram;
pub mod mtl;
pub mod o_lora;
pub mod replay;
pub mod routers;
pub mod scores;
pub mod seq_lora;
pub mod subspace;
pub mod task_gated;
pub mod tree_lora;

use crate::config::{MethodConfig, MethodName, RunConfig};
use crate::error::{Error, Result};
use crate::learner::Learner;
use moram_core::MoramConfig;
use tch::Tensor;

pub use hooks::{LayerHooks, TaskRun};

/// Every method, in the order listings show them. One line per method.
pub static REGISTRY: &[&dyn MethodDef] = &[
    &moram::Moram,
    &moram::SelfActivated,
    &moram::NoTopK,
    &moram::NoTemperature,
    &moram::NoThreshold,
    &routers::RouterRank1,
    &routers::MoeLora,
    &seq_lora::SeqLora,
    &o_lora::OLora,
    &inc_lora::IncLora,
    &inflora::InfLora,
    &replay::Replay,
    &ewc::Ewc,
    &lwf::Lwf,
    &tree_lora::TreeLora,
    &mtl::Mtl,
    &task_gated::TaskGated,
    &subspace::Orthogonal,
    &subspace::NovelRouting,
    &subspace::NoveltyGated,
    &scores::Centred,
    &scores::Standardised,
];

/// What a method is: its name, its adapted layers, and the hooks it runs.
pub trait MethodDef: Sync {
    /// The config name (`method.name`).
    fn name(&self) -> &'static str;

    /// One line for listings and `--help`.
    fn summary(&self) -> &'static str;

    /// Whether the method is a variant of this project, not in the paper (listings say so).
    fn is_variant(&self) -> bool {
        false
    }

    /// The adapted layers' config: `layer` is the profile's with the `[method]` overrides applied
    /// (r, top-k, temperature, ...); the method sets its routing and whatever else it adds, from
    /// the method-specific keys of `method`.
    fn layer(&self, method: &MethodConfig, layer: MoramConfig) -> Result<MoramConfig>;

    /// Whether the method can run on CLIP (it needs nothing but image batches); `false` refuses
    /// a CLIP run before anything is loaded.
    fn runs_on_clip(&self) -> bool {
        true
    }

    /// What the method holds besides its atoms, for `moram plan` ([`crate::plan`]). Default:
    /// nothing.
    fn memory(&self) -> MethodMemory {
        MethodMemory::default()
    }

    /// The hooks of one run ([`LayerHooks`] by default: the layer config's own fitting steps).
    fn start(&self, _config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        Ok(Box::new(LayerHooks))
    }
}

/// What a method keeps besides its atoms, in units of the trainable atoms (f32).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MethodMemory {
    /// Copies held for the whole run (EWC: the Fisher and the previous task's values).
    pub trainable_copies: usize,
    /// Copies held per finished task (TreeLoRA: each task's mean key gradient).
    pub per_task_copies: usize,
    /// Whether a training step also computes the previous model's answer logits (LwF's teacher).
    pub teacher_logits: bool,
}

/// What the runner calls around each task and step. A method with state across tasks (a replay
/// buffer, a Fisher matrix) keeps it here. Every hook has a default; [`LayerHooks`] runs the
/// fitting steps the layer config asks for (score statistics, protected subspaces, task gate).
pub trait RunHooks {
    /// Before the task's atoms are created (score statistics are fitted here, on the first task).
    fn before_task(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        hooks::fit_score_statistics(run)
    }

    /// After every layer started the task (its new atoms exist, values zero), before its first
    /// step: e.g. InfLoRA designs the new keys from the task's inputs here. Default: nothing.
    fn task_started(&mut self, _run: &mut TaskRun<'_>) -> Result<()> {
        Ok(())
    }

    /// The optimiser steps of the task, each step's examples as `(task, index)` pairs.
    fn schedule(&self, run: &TaskRun<'_>) -> Vec<Vec<(usize, usize)>> {
        crate::batches::own_schedule(run.config, run.task, run.lens[run.task])
    }

    /// A term added to the loss once per optimiser step (with graph), if any; `loss` is the
    /// step's task loss (TreeLoRA scales its term by it).
    fn penalty(&mut self, learner: &dyn Learner, _loss: f64) -> Result<Option<Tensor>> {
        Ok(hooks::bank_penalties(learner))
    }

    /// A distilling method's (LwF's) target logits for one micro-batch, `examples` of `task`:
    /// `(N, vocab)` at the answer positions, no graph. Called before the micro-batch's forward
    /// pass (a teacher may swap parameters in and out, which must not touch a recorded graph);
    /// the runner then adds [`RunHooks::distillation`] to the loss. Default: `None`, no term.
    fn teacher_logits(
        &mut self,
        _learner: &mut dyn Learner,
        _task: usize,
        _examples: &[usize],
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// The term added to a micro-batch's loss (with graph) from its answer logits `student` and
    /// what [`RunHooks::teacher_logits`] returned for it, both `(N, vocab)`; `sequences` is the
    /// micro-batch's example count.
    fn distillation(&self, _student: &Tensor, _teacher: &Tensor, _sequences: usize) -> Result<Tensor> {
        Err(Error::task("distillation", "this method has no distillation term"))
    }

    /// After each optimiser step (e.g. keys projected back out of a protected subspace).
    fn after_step(&mut self, learner: &mut dyn Learner) {
        hooks::project_keys(learner);
    }

    /// After the task trained, before it is evaluated: what the method learns from the finished
    /// task (protected subspaces, the task gate). Returns each layer's protected subspace width
    /// and its share of the input width, when the method keeps one.
    fn after_task(&mut self, run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
        hooks::after_task(run)
    }

    /// Writes what the hooks keep across tasks after task `task` into the run folder `dir`, before
    /// the run's state records the task (a file per task, so a crash in between loses nothing).
    fn save(&self, _dir: &std::path::Path, _task: usize) -> Result<()> {
        Ok(())
    }

    /// Restores what [`RunHooks::save`] wrote after the last of the `done` finished tasks, when a
    /// run resumes (`done` > 0).
    fn resume(&mut self, _dir: &std::path::Path, _done: usize) -> Result<()> {
        Ok(())
    }
}

/// The hooks of a run: the method's ([`MethodDef::start`]), with a replay buffer around them when
/// the config asks for one (`method.replay_examples`; the `replay` method has one by default).
pub fn start_hooks(config: &RunConfig) -> Result<Box<dyn RunHooks>> {
    let inner = config.method()?.def().start(config)?;
    Ok(match replay::settings(config)? {
        Some(settings) => Box::new(replay::ReplayHooks::new(inner, settings, config.seed)),
        None => inner,
    })
}

/// A method, by name: a handle on its [`MethodDef`] in the [`REGISTRY`]. Compared, hashed and
/// (de)serialised by its config name.
#[derive(Clone, Copy)]
pub struct Method(&'static dyn MethodDef);

impl Method {
    /// The paper's MoRAM.
    pub const MORAM: Method = Method(&moram::Moram);
    /// SeqLoRA, the baseline of paired differences.
    pub const SEQ_LORA: Method = Method(&seq_lora::SeqLora);
    /// The multi-task upper bound.
    pub const MTL: Method = Method(&mtl::Mtl);
    /// Novelty-gated MoRAM.
    pub const NOVELTY_GATED: Method = Method(&subspace::NoveltyGated);
    /// Task-gated MoRAM.
    pub const TASK_GATED: Method = Method(&task_gated::TaskGated);

    /// The method's config name (`seq-lora`, `moram-task-gated`).
    pub fn name(self) -> String {
        self.0.name().to_string()
    }

    /// The method's definition.
    pub fn def(self) -> &'static dyn MethodDef {
        self.0
    }

    /// Every method, in listing order.
    pub fn all() -> impl Iterator<Item = Method> {
        REGISTRY.iter().map(|d| Method(*d))
    }

    /// Parses a config name; the error names it and lists the valid ones.
    pub fn from_name(name: &str) -> std::result::Result<Self, String> {
        Method::all().find(|m| m.0.name() == name).ok_or_else(|| {
            let names: Vec<&str> = REGISTRY.iter().map(|d| d.name()).collect();
            format!("`{name}`: unknown method, expected one of {}", names.join(", "))
        })
    }

    fn index(self) -> usize {
        REGISTRY.iter().position(|d| d.name() == self.0.name()).unwrap_or(usize::MAX)
    }
}

impl PartialEq for Method {
    fn eq(&self, other: &Self) -> bool {
        self.0.name() == other.0.name()
    }
}

impl Eq for Method {}

impl std::hash::Hash for Method {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name().hash(state);
    }
}

impl PartialOrd for Method {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Method {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index().cmp(&other.index())
    }
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

impl serde::Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> serde::Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Method::from_name(&name).map_err(serde::de::Error::custom)
    }
}

impl RunConfig {
    /// Checks what the `[method]` section asks for: the method, its layer config, its replay
    /// settings ([`RunConfig::validate`] calls it).
    pub fn check_method(&self) -> Result<()> {
        self.layer_config()?;
        replay::settings(self)?;
        Ok(())
    }

    /// The method `method.name` names; an error lists the registered ones.
    pub fn method(&self) -> Result<Method> {
        Method::from_name(self.method.name.as_str()).map_err(|e| Error::config("method.name", e))
    }

    /// The layer config every adapted layer gets: the profile, the `[method]` overrides and what
    /// the method adds ([`crate::methods::layer_config`]), computed once per method section.
    pub fn layer_config(&self) -> Result<MoramConfig> {
        let mut cache = self.layer.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((method, layer)) = cache.as_ref() {
            if method == &self.method {
                return Ok(layer.clone());
            }
        }
        let layer = layer_config(&self.method)?;
        *cache = Some((self.method.clone(), layer.clone()));
        Ok(layer)
    }
}

impl From<Method> for MethodName {
    fn from(m: Method) -> Self {
        MethodName(m.name())
    }
}

impl PartialEq<Method> for MethodName {
    fn eq(&self, other: &Method) -> bool {
        self.as_str() == other.0.name()
    }
}

/// The profile's layer config with the `[method]` overrides every method shares (r, top-k,
/// temperature, threshold, dropout, value scale, compat), then the method's own ([`MethodDef::layer`]),
/// validated. What [`RunConfig::layer_config`] holds.
pub fn layer_config(method: &MethodConfig) -> Result<MoramConfig> {
    let mut c = method.profile.config();
    c.r = method.r.unwrap_or(c.r);
    c.top_k = method.top_k.unwrap_or(c.top_k);
    c.temperature = method.temperature.unwrap_or(c.temperature);
    c.threshold = method.threshold.unwrap_or(c.threshold);
    c.dropout = method.dropout.unwrap_or(c.dropout);
    c.value_scale = method.value_scale.unwrap_or(c.value_scale);
    if let Some(compat) = method.compat {
        c.compat = compat;
    }
    for (key, v) in [
        ("method.score_examples", method.score_examples),
        ("method.subspace_examples", method.subspace_examples),
        ("method.gate_examples", method.gate_examples),
    ] {
        if v == Some(0) {
            return Err(Error::config(key, "must be at least 1"));
        }
    }
    let def = Method::from_name(method.name.as_str()).map_err(|e| Error::config("method.name", e))?.def();
    let c = def.layer(method, c)?;
    c.validate().map_err(|source| Error::Method { source })?;
    Ok(c)
}

/// The keys every method but the subspace variants leaves to the user: a protected input subspace
/// (`method.subspace_energy`, orthogonal keys), normalised scores (`method.score_input`) and O-LoRA's
/// penalties, all off unless given. Methods that set them themselves override.
pub(crate) fn optional_variants(method: &MethodConfig, mut c: MoramConfig) -> Result<MoramConfig> {
    c.key_subspace = method.subspace_energy.map(|energy| moram_core::KeySubspace {
        quantile: method.novelty_quantile.unwrap_or(moram_core::config::DEFAULT_NOVELTY_QUANTILE),
        ..moram_core::KeySubspace::new(energy, moram_core::SubspaceMode::Keys)
    });
    c.score_input = method.score_input.unwrap_or(moram_core::ScoreInput::Raw);
    c.penalty = moram_core::Penalty {
        orthogonality: method.orthogonal_penalty.unwrap_or(0.0),
        l2: method.l2_penalty.unwrap_or(0.0),
    };
    if method.gate_shrinkage.is_some() {
        return Err(Error::config("method.gate_shrinkage", "applies to `moram-task-gated` only"));
    }
    if method.ewc_lambda.is_some() {
        return Err(Error::config("method.ewc_lambda", "applies to `ewc` only"));
    }
    if method.tree_reg.is_some() {
        return Err(Error::config("method.tree_reg", "applies to `tree-lora` only"));
    }
    if method.lwf_temperature.is_some() || method.lwf_lambda.is_some() {
        let key = if method.lwf_temperature.is_some() { "method.lwf_temperature" } else { "method.lwf_lambda" };
        return Err(Error::config(key, "applies to `lwf` only"));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_found_by_its_name_once() {
        let names: Vec<&str> = REGISTRY.iter().map(|d| d.name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "a name is registered twice: {names:?}");
        for m in Method::all() {
            assert_eq!(Method::from_name(&m.name()), Ok(m));
        }
        let err = Method::from_name("moram-plus").unwrap_err();
        assert!(
            err.contains("`moram-plus`")
                && err.contains("seq-lora, o-lora, inc-lora, inf-lora, replay, ewc, lwf, tree-lora, mtl"),
            "{err}"
        );
        assert!(Method::MORAM < Method::SEQ_LORA, "listing order");
        assert_eq!(serde_json::to_string(&Method::TASK_GATED).unwrap(), "\"moram-task-gated\"");
    }
}
