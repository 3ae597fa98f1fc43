//! `moram plan`: the memory a run needs, part by part, before anything is loaded
//! (`docs/performance.md`, "Memory plan"). A plan adds up what the run keeps (runtime, base
//! weights, atoms, the trainable atoms' gradients and optimiser moments, a method's own state)
//! and what each phase adds on top (loading, a training step, an evaluation batch); its peak is
//! the largest phase. The activation terms are counted from the model's shapes and scaled by
//! factors measured once on SmolLM2-135M (`benchmarks/results/plan.md`); Gemma 3 270M, measured
//! the same way, checks them (`tests` of this module, within 15%).

mod clip;
mod llm;

pub use clip::ClipPlanInput;
pub use llm::LlmPlanInput;

use crate::config::{ModelKind, RunConfig};
use crate::error::{Error, Result};
use moram_models::clip::ClipConfig;
use moram_models::llm::{GgufFile, LlmConfig};
use std::path::Path;

/// Bytes in one MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

/// Where the plan's run executes: the factors and the runtime's own memory differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanDevice {
    /// libtorch on the CPU: resident memory (RSS) of the process.
    Cpu,
    /// One CUDA device per process: device memory (not validated on a GPU yet; see the docs).
    Cuda,
}

/// When a part of the plan is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// For the whole run.
    Always,
    /// While the base model is read.
    Load,
    /// During an optimiser step.
    Train,
    /// During an evaluation batch (generation).
    Eval,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Always => "always",
            Phase::Load => "loading",
            Phase::Train => "training step",
            Phase::Eval => "evaluation",
        }
    }
}

/// One line of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// What it is.
    pub name: String,
    /// When it is held.
    pub phase: Phase,
    /// Its size in bytes (per process).
    pub bytes: f64,
    /// How it was counted.
    pub note: String,
}

/// A run's memory, part by part, per process.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPlan {
    /// The model and setting, for headings.
    pub title: String,
    /// Where it runs.
    pub device: PlanDevice,
    /// Processes of a data-parallel run (each holds the whole plan).
    pub world: usize,
    /// Every part.
    pub parts: Vec<Part>,
}

impl MemoryPlan {
    /// Bytes held during `phase`: the parts held always plus that phase's own.
    pub fn phase_bytes(&self, phase: Phase) -> f64 {
        self.parts.iter().filter(|p| p.phase == Phase::Always || p.phase == phase).map(|p| p.bytes).sum()
    }

    /// The largest phase (the process's peak).
    pub fn peak_bytes(&self) -> f64 {
        [Phase::Load, Phase::Train, Phase::Eval].into_iter().map(|p| self.phase_bytes(p)).fold(0.0, f64::max)
    }

    /// The plan as a Markdown table (MiB), with each phase's total and the peak.
    pub fn markdown(&self) -> String {
        let device = match self.device {
            PlanDevice::Cpu => "CPU (resident memory)",
            PlanDevice::Cuda => "CUDA (device memory; the factors are CPU-measured, not validated on a GPU)",
        };
        let mut out = format!("{}: {device}, per process", self.title);
        if self.world > 1 {
            out += &format!(" ({} processes, each holding all of it)", self.world);
        }
        out += "\n\n| part | held | MiB | how |\n|---|---|---:|---|\n";
        for p in &self.parts {
            out += &format!("| {} | {} | {:.0} | {} |\n", p.name, p.phase.label(), p.bytes / MIB, p.note);
        }
        for phase in [Phase::Load, Phase::Train, Phase::Eval] {
            out += &format!("| **total while {}** | | **{:.0}** | |\n", phase.label(), self.phase_bytes(phase) / MIB);
        }
        out += &format!("| **peak** | | **{:.0}** | the largest phase |\n", self.peak_bytes() / MIB);
        out
    }

    /// The plan as JSON: every part plus the phase totals and the peak, in MiB.
    pub fn to_json(&self) -> serde_json::Value {
        let parts: Vec<_> = self
            .parts
            .iter()
            .map(|p| serde_json::json!({"part": p.name, "held": p.phase.label(), "mib": p.bytes / MIB, "how": p.note}))
            .collect();
        serde_json::json!({
            "title": self.title,
            "device": if self.device == PlanDevice::Cpu { "cpu" } else { "cuda" },
            "world": self.world,
            "parts": parts,
            "load_mib": self.phase_bytes(Phase::Load) / MIB,
            "train_mib": self.phase_bytes(Phase::Train) / MIB,
            "eval_mib": self.phase_bytes(Phase::Eval) / MIB,
            "peak_mib": self.peak_bytes() / MIB,
        })
    }
}

/// The base model a plan is for, read without loading weights.
#[derive(Debug, Clone)]
pub enum PlanModel {
    /// A decoder LLM, with the size of its GGUF file when it is one (read while loading).
    Llm(Box<LlmConfig>, Option<u64>),
    /// CLIP.
    Clip(Box<ClipConfig>),
}

impl PlanModel {
    /// The architecture of `config`'s `[model]`: `preset` (an LLM or CLIP preset name) when given,
    /// else read from `model.path` (GGUF metadata or `config.json`).
    pub fn of(config: &RunConfig, preset: Option<&str>) -> Result<Self> {
        let model = config.model.as_ref().ok_or_else(|| Error::config("model", "the run config has no [model]"))?;
        let model_error = |e: moram_models::Error| Error::config("model.path", e.to_string());
        match (model.kind, preset) {
            (ModelKind::Llm, Some(name)) => {
                Ok(PlanModel::Llm(Box::new(LlmConfig::preset(name).map_err(model_error)?), None))
            }
            (ModelKind::Clip, Some(name)) => {
                Ok(PlanModel::Clip(Box::new(ClipConfig::preset(name).map_err(model_error)?)))
            }
            (ModelKind::Llm, None) => Self::read_llm(&model.path),
            (ModelKind::Clip, None) => Ok(PlanModel::Clip(Box::new(
                ClipConfig::from_hf_json(model.path.join("config.json")).map_err(model_error)?,
            ))),
        }
    }

    fn read_llm(path: &Path) -> Result<Self> {
        let model_error = |e: moram_models::Error| {
            Error::config("model.path", format!("{e} (or take the architecture from a preset: `--preset NAME`)"))
        };
        if path.extension().is_some_and(|e| e == "gguf") {
            let size = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
            let gguf = GgufFile::open(path).map_err(model_error)?;
            Ok(PlanModel::Llm(Box::new(LlmConfig::from_gguf(&gguf).map_err(model_error)?), Some(size)))
        } else {
            Ok(PlanModel::Llm(Box::new(LlmConfig::from_hf_json(path.join("config.json")).map_err(model_error)?), None))
        }
    }
}

/// What a plan needs beyond the run config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Where it runs.
    pub device: PlanDevice,
    /// Data-parallel processes.
    pub world: usize,
    /// Training examples per task, when known (the frozen-prefix cache holds their prefixes).
    pub train_examples: Option<usize>,
}

/// The plan of `config` (its method, targets, batch, lengths and task count) on `model`.
pub fn plan(config: &RunConfig, model: &PlanModel, options: &PlanOptions) -> Result<MemoryPlan> {
    if options.world == 0 {
        return Err(Error::config("world", "a run has at least one process"));
    }
    match model {
        PlanModel::Llm(llm, gguf_bytes) => LlmPlanInput::from_run(config, llm, *gguf_bytes, options)?.plan(),
        PlanModel::Clip(clip) => ClipPlanInput::from_run(config, clip, options)?.plan(),
    }
}

/// Bytes of one element of `kind`.
fn elt(kind: tch::Kind) -> f64 {
    kind.elt_size_in_bytes() as f64
}

/// Atoms one adapted layer holds after `tasks` tasks (all scored by every token): `r` per task
/// for methods that grow, `r` in all for one shared LoRA.
fn atoms_per_layer(layer: &moram_core::MoramConfig, tasks: usize) -> usize {
    if layer.routing.grows() {
        layer.r * tasks
    } else {
        layer.r
    }
}

/// The parts every plan starts with: the process's runtime and `params` base weights in `base`.
fn model_parts(parts: &mut Vec<Part>, device: PlanDevice, params: f64, base: tch::Kind) {
    parts.push(llm::runtime(device));
    parts.push(Part {
        name: "base weights".into(),
        phase: Phase::Always,
        bytes: params * elt(base),
        note: format!("{:.1} M parameters, {base:?}", params / 1e6),
    });
}

/// What every method keeps of its trainable atoms: f32 values, gradients and Adam's two moments,
/// plus the method's own copies (EWC's Fisher and anchor). `trainable` and `frozen` in elements.
fn atom_parts(parts: &mut Vec<Part>, trainable: f64, frozen: f64, copies: usize, method: &str) {
    parts.push(Part {
        name: "atoms".into(),
        phase: Phase::Always,
        bytes: 4.0 * (trainable + frozen),
        note: format!("{:.2} M trainable + {:.2} M frozen, f32", trainable / 1e6, frozen / 1e6),
    });
    parts.push(Part {
        name: "gradients + Adam moments".into(),
        phase: Phase::Always,
        bytes: 3.0 * 4.0 * trainable,
        note: "3 f32 copies of the trainable atoms".into(),
    });
    if copies > 0 {
        parts.push(Part {
            name: format!("{method} state"),
            phase: Phase::Always,
            bytes: copies as f64 * 4.0 * trainable,
            note: format!("{copies} f32 copies of the trainable atoms"),
        });
    }
}

#[cfg(test)]
mod tests;
