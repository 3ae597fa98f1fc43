//! Task-gated MoRAM (a variant, not in the paper; `docs/method.md`, "Task-gated atoms"): the
//! paper's layer in training; after each task the model's task gate learns the task from its
//! training prompts, and at inference each prompt is recognised and uses only the atoms of tasks
//! up to the recognised one ([`crate::methods::hooks::fit_task_gate`]).

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// Task-gated MoRAM.
#[derive(Debug, Clone, Copy)]
pub struct TaskGated;

impl MethodDef for TaskGated {
    fn name(&self) -> &'static str {
        "moram-task-gated"
    }
    fn summary(&self) -> &'static str {
        "MoRAM whose prompts are recognised by task; each uses the atoms of tasks up to its own"
    }
    fn is_variant(&self) -> bool {
        true
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::MORAM;
        let shrinkage = method.gate_shrinkage.unwrap_or(moram_core::variants::task_gate::DEFAULT_SHRINKAGE);
        let plain = MethodConfig { gate_shrinkage: None, ..method.clone() };
        let mut layer = optional_variants(&plain, layer)?;
        layer.task_gate = Some(moram_core::TaskGateConfig { shrinkage });
        Ok(layer)
    }
    fn runs_on_clip(&self) -> bool {
        false
    }
}
