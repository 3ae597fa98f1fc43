//! InfLoRA (Liang and Li, CVPR 2024) on decoder LLMs and CLIP, as its reference code
//! (`methods/inflora.py` of liangyanshuo/InfLoRA) computes it: a LoRA per task, earlier ones
//! frozen, outputs summed (as IncLoRA); each new task's down-projection `A_t` is not trained but
//! designed before the task from its inputs, as the first `r` left singular vectors of
//! `(I - U U^T) C_t` scaled by `1 / sqrt(3)` (`C_t`: the task's input moments at the layer; `U`:
//! the earlier tasks' input subspace), so only `B_t` (zero at the start) trains and the task's
//! update stays out of the subspace earlier tasks' inputs use. After each task the subspace grows
//! by GPM's rule on the task's inputs, to the energy threshold
//! `lamb + (1 - lamb) * t / T` of task `t` (0-based) of `T` (the reference code's
//! `(lame - lamb) * t / T + lamb` with `lame` = 1, its value in every published config).
//!
//! Where moram departs (`docs/method.md`, "Baselines"): the reference code adapts only k and v of
//! a ViT's attention; here every targeted linear layer is adapted, each with its own subspace. Its
//! DualGPM stores the complement of a subspace that covers more than half the dimensions, an
//! economy that changes nothing in the projection; here the subspace is always stored.

use super::hooks::{bar, TaskRun};
use super::{optional_variants, MethodDef, RunHooks};
use crate::config::{MethodConfig, RunConfig};
use crate::error::{Error, Result};
use crate::learner::{set_training, Learner};
use moram_core::{KeySubspace, MoramConfig, Routing, SubspaceMode};

/// The reference code's `lamb` for its CIFAR-100 and ImageNet-R configs' lower end (0.95).
pub const DEFAULT_ENERGY: f64 = 0.95;

/// InfLoRA.
#[derive(Debug, Clone, Copy)]
pub struct InfLora;

impl MethodDef for InfLora {
    fn name(&self) -> &'static str {
        "inf-lora"
    }
    fn summary(&self) -> &'static str {
        "InfLoRA: a LoRA per task whose fixed down-projection lies outside earlier tasks' input subspace"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Sum {};
        let plain = MethodConfig { subspace_energy: None, ..method.clone() };
        let mut layer = optional_variants(&plain, layer)?;
        // The subspace is kept by the bank (it travels in adapter files); its energy here is the
        // first task's threshold, the hooks raise it task by task.
        layer.key_subspace = Some(KeySubspace::new(energy(method)?, SubspaceMode::Keys));
        Ok(layer)
    }
    fn start(&self, config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        Ok(Box::new(InfLoraHooks { lamb: energy(&config.method)? }))
    }
}

fn energy(method: &MethodConfig) -> Result<f64> {
    let e = method.subspace_energy.unwrap_or(DEFAULT_ENERGY);
    if !(e > 0.0 && e < 1.0) {
        return Err(Error::config("method.subspace_energy", format!("must lie in (0, 1), found {e}")));
    }
    Ok(e)
}

/// The energy threshold of GPM's rule after task `task` (0-based) of `tasks`.
pub fn threshold(lamb: f64, task: usize, tasks: usize) -> f64 {
    lamb + (1.0 - lamb) * task as f64 / tasks.max(1) as f64
}

/// InfLoRA's hooks: keys designed when a task starts, fixed during it, subspace grown after it.
pub struct InfLoraHooks {
    lamb: f64,
}

/// Records every layer's input moments on up to `method.subspace_examples` of the task's training
/// examples (one per forward pass, so padding never enters), the model in eval mode.
fn task_moments(run: &mut TaskRun<'_>, what: &str) -> Result<Vec<(String, tch::Tensor)>> {
    let n = run.config.method.subspace_examples.unwrap_or(crate::config::DEFAULT_SUBSPACE_EXAMPLES);
    let n = n.min(run.lens[run.task]);
    let learner = &mut *run.learner;
    for (_, m) in learner.moram_layers() {
        m.start_input_moments();
    }
    set_training(learner, false);
    let pb = bar(n as u64, what.into(), run.progress);
    crate::analysis::forward_examples(learner, run.task, n, 1, || pb.inc(1))?;
    pb.finish_and_clear();
    let mut out = Vec::new();
    for (path, m) in learner.moram_layers() {
        let (moments, _) = m.take_input_moments().ok_or_else(|| Error::task(&path, "saw no input token"))?;
        out.push((path, moments));
    }
    Ok(out)
}

impl RunHooks for InfLoraHooks {
    /// `A_t` from the task's inputs (the new atoms' values are zero, so the pass that records
    /// them sees the model as the earlier tasks left it).
    fn task_started(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        let moments = task_moments(run, "InfLoRA keys")?;
        for ((path, m), (_, c)) in run.learner.moram_layers_mut().into_iter().zip(moments) {
            let r = m.bank().config().r;
            let keys = m.bank().designed_keys(&c, r).map_err(|e| Error::layer(&path, e))?;
            m.bank_mut().set_current_keys(&keys, false).map_err(|e| Error::layer(&path, e))?;
        }
        Ok(())
    }

    /// The keys are fixed: nothing to project.
    fn after_step(&mut self, _learner: &mut dyn Learner) {}

    fn after_task(&mut self, run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
        let energy = threshold(self.lamb, run.task, run.lens.len());
        let moments = task_moments(run, "input subspace")?;
        let mut dims = Vec::new();
        for ((path, m), (_, c)) in run.learner.moram_layers_mut().into_iter().zip(moments) {
            m.bank_mut().extend_key_basis(&c, energy).map_err(|e| Error::layer(&path, e))?;
            let width = m.bank().key_basis().size()[1] as usize;
            dims.push((width, width as f64 / m.bank().d_in().max(1) as f64));
        }
        Ok(Some(dims))
    }
}
