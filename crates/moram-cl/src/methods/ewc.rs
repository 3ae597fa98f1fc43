//! EWC (Kirkpatrick et al., 2017) on a SeqLoRA adapter, as the official TRACE code computes it
//! (`model/Regular/EWC.py`): the diagonal Fisher is the squared gradient of every step, divided by
//! the task's step count and summed over all tasks so far (never reset); from the second task on,
//! the loss adds `lambda / 2 * sum F (p - p_prev)^2`, `p_prev` being the adapter after the
//! previous task. As there, the gradient the Fisher reads is the step's whole gradient, penalty
//! included. The Fisher and `p_prev` live in the run folder (`ewc-task{t}.safetensors`).

use super::{optional_variants, LayerHooks, MethodDef, RunHooks, TaskRun};
use crate::config::{MethodConfig, RunConfig};
use crate::error::{Error, Result};
use crate::learner::{trainable_tensors, Learner};
use moram_core::{MoramConfig, Routing};
use std::path::Path;
use tch::{Kind, Tensor};

/// The official TRACE code's `lambda_ewc`.
pub const DEFAULT_LAMBDA: f64 = 400.0;

/// EWC.
#[derive(Debug, Clone, Copy)]
pub struct Ewc;

impl MethodDef for Ewc {
    fn name(&self) -> &'static str {
        "ewc"
    }
    fn summary(&self) -> &'static str {
        "EWC: SeqLoRA with a diagonal-Fisher quadratic penalty towards the previous task's adapter"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Lora {};
        let plain = MethodConfig { ewc_lambda: None, ..method.clone() };
        optional_variants(&plain, layer)
    }
    /// The Fisher and the previous task's values.
    fn memory(&self) -> super::MethodMemory {
        use super::MethodMemory;
        MethodMemory { trainable_copies: 2, ..MethodMemory::default() }
    }
    fn start(&self, config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        let lambda = config.method.ewc_lambda.unwrap_or(DEFAULT_LAMBDA);
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::config("method.ewc_lambda", format!("must be finite and >= 0, found {lambda}")));
        }
        Ok(Box::new(EwcHooks::new(lambda)))
    }
}

/// The official `_update_fisher` for one tensor: `F += nan_to_num(g)^2 / steps` (`steps`: the
/// steps of one epoch, the official `train_length`).
pub fn fisher_update(fisher: &mut Tensor, grad: &Tensor, steps: usize) {
    *fisher += grad.nan_to_num(0.0, 0.0, 0.0).square() / steps.max(1) as f64;
}

/// The term EWC adds to the loss: `lambda / 2 * sum F (p - p_prev)^2` (the official
/// `0.5 * lambda_ewc * penalty()`); `None` without tensors.
pub fn penalty(params: &[Tensor], previous: &[Tensor], fisher: &[Tensor], lambda: f64) -> Option<Tensor> {
    let terms =
        params.iter().zip(previous).zip(fisher).map(|((p, prev), f)| (f * (p - prev).square()).sum(Kind::Float));
    terms.reduce(|a, b| a + b).map(|sum| sum * (0.5 * lambda))
}

/// EWC's state across tasks.
pub struct EwcHooks {
    lambda: f64,
    /// Steps of the task being trained (the Fisher's divisor).
    steps: usize,
    /// The diagonal Fisher of each trainable tensor (in the learner's order), once a step ran.
    fisher: Vec<Tensor>,
    /// The trainable tensors after the previous task (empty during the first).
    previous: Vec<Tensor>,
}

impl EwcHooks {
    /// No Fisher yet.
    pub fn new(lambda: f64) -> Self {
        EwcHooks { lambda, steps: 1, fisher: Vec::new(), previous: Vec::new() }
    }

    /// The Fisher of each trainable tensor.
    pub fn fisher(&self) -> &[Tensor] {
        &self.fisher
    }

    fn file(dir: &Path, task: usize) -> std::path::PathBuf {
        dir.join(format!("ewc-task{task}.safetensors"))
    }
}

impl RunHooks for EwcHooks {
    fn before_task(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        // The official divisor is the dataloader's length: the steps of one epoch (the Fisher
        // then sums `epochs` such means).
        let epochs = run.config.training.epochs_for(run.task).unwrap_or(1).max(1);
        self.steps = (self.schedule(run).len() / epochs).max(1);
        LayerHooks.before_task(run)
    }

    fn penalty(&mut self, learner: &dyn Learner, _loss: f64) -> Result<Option<Tensor>> {
        if self.previous.is_empty() || self.fisher.is_empty() {
            return Ok(None);
        }
        let params = trainable_tensors(learner);
        if params.len() != self.previous.len() || params.len() != self.fisher.len() {
            return Err(Error::task("ewc", "the adapter's tensors changed between tasks"));
        }
        // State read back from a file sits on the CPU: move it next to the adapter once.
        for ((prev, f), p) in self.previous.iter_mut().zip(self.fisher.iter_mut()).zip(&params) {
            if prev.device() != p.device() {
                *prev = prev.to_device(p.device());
                *f = f.to_device(p.device());
            }
        }
        Ok(penalty(&params, &self.previous, &self.fisher, self.lambda))
    }

    fn after_step(&mut self, learner: &mut dyn Learner) {
        let _guard = tch::no_grad_guard();
        let params = trainable_tensors(learner);
        if self.fisher.len() != params.len() {
            self.fisher = params.iter().map(Tensor::zeros_like).collect();
        }
        for (f, p) in self.fisher.iter_mut().zip(&params) {
            if f.device() != p.device() {
                *f = f.to_device(p.device());
            }
            let g = p.grad();
            if g.defined() {
                fisher_update(f, &g, self.steps);
            }
        }
    }

    fn after_task(&mut self, run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
        self.previous = trainable_tensors(run.learner).iter().map(|p| p.detach().copy()).collect();
        LayerHooks.after_task(run)
    }

    fn save(&self, dir: &Path, task: usize) -> Result<()> {
        let named: Vec<(String, Tensor)> = self
            .fisher
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("fisher.{i}"), f.shallow_clone()))
            .chain(self.previous.iter().enumerate().map(|(i, p)| (format!("previous.{i}"), p.shallow_clone())))
            .collect();
        super::hooks::save_state(&Self::file(dir, task), &named)
    }

    fn resume(&mut self, dir: &Path, done: usize) -> Result<()> {
        let path = Self::file(dir, done - 1);
        let tensors = super::hooks::load_state(&path, "EWC")?;
        let take = |prefix: &str| -> Vec<Tensor> {
            let mut v: Vec<(usize, Tensor)> = tensors
                .iter()
                .filter_map(|(n, t)| n.strip_prefix(prefix)?.parse().ok().map(|i: usize| (i, t.shallow_clone())))
                .collect();
            v.sort_by_key(|(i, _)| *i);
            v.into_iter().map(|(_, t)| t).collect()
        };
        self.fisher = take("fisher.");
        self.previous = take("previous.");
        Ok(())
    }
}
