//! Multi-task training, the upper bound (paper Table 10's MTL row): one rank-r LoRA trained once
//! on every task's data, shuffled together, for as many steps as the whole sequence takes; later
//! tasks take no step, so every row of its matrix is that one model. Not a continual learner.

use super::{optional_variants, MethodDef, RunHooks, TaskRun};
use crate::config::{MethodConfig, RunConfig};
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// MTL.
#[derive(Debug, Clone, Copy)]
pub struct Mtl;

impl MethodDef for Mtl {
    fn name(&self) -> &'static str {
        "mtl"
    }
    fn summary(&self) -> &'static str {
        "multi-task upper bound: one LoRA trained on every task's data at once"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Lora {};
        optional_variants(method, layer)
    }
    fn start(&self, _config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        Ok(Box::new(JointSchedule))
    }
}

/// The layer hooks with the joint schedule ([`crate::batches::joint_schedule`]) at the first task
/// and none after.
struct JointSchedule;

impl RunHooks for JointSchedule {
    fn schedule(&self, run: &TaskRun<'_>) -> Vec<Vec<(usize, usize)>> {
        if run.task == 0 {
            crate::batches::joint_schedule(run.config, run.lens)
        } else {
            Vec::new()
        }
    }
}
