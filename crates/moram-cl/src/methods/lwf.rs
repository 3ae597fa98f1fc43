//! LwF (Li and Hoiem, 2017) on a SeqLoRA adapter, as the official TRACE code computes it
//! (`model/Regular/LwF.py`): from the second task on, each step's loss adds the KL divergence
//! between the model being trained and the model as it was before the task, on the same batch,
//! at temperature T = 2: `KL(softmax(new / T) || softmax(old / T))`, summed over positions and
//! vocabulary and divided by the batch's sequence count (`F.kl_div(log_softmax(old / T),
//! softmax(new / T), reduction="batchmean")`: the official code passes the arguments in this order,
//! so the divergence is the new model's from the old, the reverse of the textbook LwF).
//!
//! Where moram departs (`docs/method.md`, "Baselines"): the old model's logits are computed on the
//! fly on the step's own batch, with the adapter as it was before the task swapped in and dropout
//! off, instead of being precomputed once per task in train mode and looked up by step index; and
//! the divergence covers the answer positions only (the positions the loss and the evaluation
//! read), not every prompt and pad position, which keeps memory at `N x vocab` per micro-batch.

use super::{optional_variants, LayerHooks, MethodDef, RunHooks, TaskRun};
use crate::config::{MethodConfig, RunConfig};
use crate::error::{Error, Result};
use crate::learner::{set_training, trainable_tensors, Learner};
use moram_core::{MoramConfig, Routing};
use tch::{Kind, Tensor};

/// The official TRACE code's temperature.
pub const DEFAULT_TEMPERATURE: f64 = 2.0;
/// The official code adds the divergence unweighted.
pub const DEFAULT_LAMBDA: f64 = 1.0;

/// LwF.
#[derive(Debug, Clone, Copy)]
pub struct Lwf;

impl MethodDef for Lwf {
    fn name(&self) -> &'static str {
        "lwf"
    }
    fn summary(&self) -> &'static str {
        "LwF: SeqLoRA distilled towards the model as it was before each task, on the new task's inputs"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Lora {};
        let plain = MethodConfig { lwf_temperature: None, lwf_lambda: None, ..method.clone() };
        optional_variants(&plain, layer)
    }
    fn runs_on_clip(&self) -> bool {
        false
    }
    /// The teacher's values and its answer logits each step.
    fn memory(&self) -> super::MethodMemory {
        use super::MethodMemory;
        MethodMemory { trainable_copies: 1, teacher_logits: true, ..MethodMemory::default() }
    }
    fn start(&self, config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        let t = config.method.lwf_temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::config("method.lwf_temperature", format!("must be finite and > 0, found {t}")));
        }
        let lambda = config.method.lwf_lambda.unwrap_or(DEFAULT_LAMBDA);
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(Error::config("method.lwf_lambda", format!("must be finite and >= 0, found {lambda}")));
        }
        Ok(Box::new(LwfHooks::new(t, lambda)))
    }
}

/// The divergence LwF adds, `KL(softmax(new / T) || softmax(old / T))` summed over rows and
/// vocabulary and divided by `sequences` (the official code's `batchmean` over a `(B, L, V)`
/// input). `new`, `old`: `(N, vocab)` logits of the same positions; a scalar with `new`'s graph.
pub fn divergence(new: &Tensor, old: &Tensor, temperature: f64, sequences: usize) -> Tensor {
    let p_new = (new / temperature).log_softmax(-1, Kind::Float);
    let p_old = (old.to_kind(Kind::Float) / temperature).log_softmax(-1, Kind::Float);
    (p_new.exp() * (&p_new - p_old)).sum(Kind::Float) / sequences.max(1) as f64
}

/// LwF's state: the adapter as it was before the task being trained (empty during the first).
/// Nothing needs saving: a resumed run starts its next task from the adapter it loaded.
pub struct LwfHooks {
    temperature: f64,
    lambda: f64,
    teacher: Vec<Tensor>,
}

fn assign(params: &[Tensor], values: &[Tensor]) {
    let _guard = tch::no_grad_guard();
    for (p, v) in params.iter().zip(values) {
        p.detach().copy_(v);
    }
}

impl LwfHooks {
    /// No teacher yet.
    pub fn new(temperature: f64, lambda: f64) -> Self {
        LwfHooks { temperature, lambda, teacher: Vec::new() }
    }

    /// The old model's answer logits on `examples` of `task`: the teacher's adapter swapped in,
    /// dropout off, no graph; the current adapter restored whatever happens.
    fn old_model_logits(&self, learner: &mut dyn Learner, task: usize, examples: &[usize]) -> Result<Tensor> {
        let params = trainable_tensors(learner);
        if params.len() != self.teacher.len() || params.iter().zip(&self.teacher).any(|(p, t)| p.size() != t.size()) {
            return Err(Error::task("lwf", "the adapter's tensors changed since the task began"));
        }
        let current: Vec<Tensor> = params.iter().map(|p| p.detach().copy()).collect();
        assign(&params, &self.teacher);
        set_training(learner, false);
        let out = tch::no_grad(|| learner.answer_logits(task, examples));
        set_training(learner, true);
        assign(&params, &current);
        Ok(out?.logits)
    }
}

impl RunHooks for LwfHooks {
    fn before_task(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        self.teacher = match run.task {
            0 => Vec::new(),
            _ => trainable_tensors(run.learner).iter().map(|p| p.detach().copy()).collect(),
        };
        LayerHooks.before_task(run)
    }

    fn teacher_logits(&mut self, learner: &mut dyn Learner, task: usize, examples: &[usize]) -> Result<Option<Tensor>> {
        if self.teacher.is_empty() || self.lambda == 0.0 {
            return Ok(None);
        }
        self.old_model_logits(learner, task, examples).map(Some)
    }

    fn distillation(&self, student: &Tensor, teacher: &Tensor, sequences: usize) -> Result<Tensor> {
        if teacher.size() != student.size() {
            return Err(Error::task(
                "lwf",
                format!("teacher logits {:?}, student {:?}", teacher.size(), student.size()),
            ));
        }
        Ok(divergence(student, teacher, self.temperature, sequences) * self.lambda)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The divergence is what `F.kl_div(log_softmax(old / T), softmax(new / T), "batchmean")`
    /// gives: written out by hand here, zero for equal logits, and not symmetric.
    #[test]
    fn divergence_is_the_official_kl_div_argument_order() {
        let new = Tensor::from_slice(&[1.0f32, 2.0, 0.5, -1.0, 0.0, 3.0]).reshape([2, 3]);
        let old = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 2.0, -1.0, 0.5]).reshape([2, 3]);
        let t = 2.0;
        let mut want = 0.0;
        for r in 0..2 {
            let row = |x: &Tensor| -> Vec<f64> {
                let v: Vec<f64> = (0..3).map(|c| x.double_value(&[r, c]) / t).collect();
                let z: f64 = v.iter().map(|a| a.exp()).sum();
                v.iter().map(|a| a.exp() / z).collect()
            };
            let (p, q) = (row(&new), row(&old));
            want += p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>();
        }
        want /= 4.0;
        let got = divergence(&new, &old, t, 4).double_value(&[]);
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert!(divergence(&new, &new, t, 4).double_value(&[]).abs() < 1e-7);
        let reverse = divergence(&old, &new, t, 4).double_value(&[]);
        assert!((reverse - got).abs() > 1e-3, "KL is not symmetric: {reverse} vs {got}");
    }
}
