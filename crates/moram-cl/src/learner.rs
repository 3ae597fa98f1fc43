//! [`Learner`]: what the runner needs from a model + task sequence (a CLIP classifier, a causal LM,
//! or anything a user writes). The runner owns the loop, the optimiser and the checkpoints; the
//! learner owns the model, the data and the loss.

use crate::error::{Error, Result};
use moram_core::{MoramLinear, TaskGate};
use std::ops::Range;
use tch::Tensor;

/// The current task's trainable tensors of every MoRAM layer of `learner`, layer by layer (what
/// the optimiser updates, and what EWC and LwF keep copies of).
pub fn trainable_tensors(learner: &(impl Learner + ?Sized)) -> Vec<Tensor> {
    learner.moram_layers().iter().flat_map(|(_, m)| m.bank().trainable_tensors()).collect()
}

/// Training mode (dropout on, no inference gate) or eval mode for every MoRAM layer of `learner`.
pub fn set_training(learner: &mut (impl Learner + ?Sized), on: bool) {
    for (_, m) in learner.moram_layers_mut() {
        m.set_training(on);
    }
}

/// A model with MoRAM layers and a task sequence to learn.
pub trait Learner {
    /// Task names, in training order.
    fn task_names(&self) -> Vec<String>;

    /// The base model's family as adapter files record it (`config.json`'s `model_type`, or
    /// `clip`); `None` for learners that do not say (the base check then compares weights only).
    fn architecture(&self) -> Option<String> {
        None
    }

    /// Training examples of task `task`.
    fn train_len(&self, task: usize) -> usize;

    /// Every MoRAM layer by module path.
    fn moram_layers(&self) -> Vec<(String, &MoramLinear)>;

    /// Every MoRAM layer by module path, mutably.
    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)>;

    /// Parameters of the whole model (base + every atom), for reports.
    fn total_parameters(&self) -> usize;

    /// Called after the runner started task `task` on every layer and before its first step
    /// (e.g. X-TAIL's seen-class text embeddings). Default: nothing.
    fn prepare_task(&mut self, _task: usize) -> Result<()> {
        Ok(())
    }

    /// Tokens the training forward passes have read so far (for the log's tokens/s), when the
    /// learner counts them. Default: `None`.
    fn tokens_seen(&self) -> Option<u64> {
        None
    }

    /// Mean loss (scalar, with graph) over the training examples `indices` of `task`.
    fn loss(&mut self, task: usize, indices: &[usize]) -> Result<Tensor>;

    /// The logits [`Learner::loss`] reads on the training examples `indices` of `task` (with
    /// graph; `(N, vocab)` at the N answer positions) and their labels: what distillation (LwF)
    /// compares. Default: an error naming the learner, for learners that have no such logits.
    fn answer_logits(&mut self, task: usize, _indices: &[usize]) -> Result<moram_models::llm::AnswerLogits> {
        Err(Error::task(
            format!("task {task}"),
            "this learner gives no answer logits (distillation runs on decoder LLMs only)",
        ))
    }

    /// Called once before a row of evaluations (e.g. to encode every class prompt once).
    fn begin_evaluation(&mut self) -> Result<()> {
        Ok(())
    }

    /// The task's score (0-100) on its evaluation split, the model in eval mode.
    fn evaluate(&mut self, task: usize) -> Result<f64>;

    /// Evaluation examples of `task`, when [`Learner::evaluate_examples`] can score any range of
    /// them (the task's score being the mean of the per-example scores): a data-parallel run then
    /// gives each rank a share. `None` (the default): every rank evaluates the whole task.
    fn eval_len(&self, _task: usize) -> Option<usize> {
        None
    }

    /// Per-example scores (0-100) of evaluation examples `range` of `task`, each with what the run
    /// folder keeps of it (`Value::Null` when nothing), the model in eval mode.
    fn evaluate_examples(&mut self, task: usize, _range: Range<usize>) -> Result<Vec<(f64, serde_json::Value)>> {
        Err(Error::task(
            self.task_names().get(task).cloned().unwrap_or_default(),
            "cannot score a range of its examples",
        ))
    }

    /// Whether [`Learner::evaluate_parts`] batches examples of different tasks together. The
    /// runner then scores a whole row of evaluations (every task, or this rank's share of each) in
    /// one call instead of task by task. Default: `false`.
    fn evaluates_across_tasks(&self) -> bool {
        false
    }

    /// Per-example scores of several `(task, range)` parts, part by part in the order given, each
    /// as [`Learner::evaluate_examples`] returns them; `done(k)` is called as `k` more examples
    /// are scored (for progress bars). A learner that can batch across tasks overrides this
    /// (the LLM learner fills one task's last, partial batch with other tasks' prompts).
    /// Default: one [`Learner::evaluate_examples`] per non-empty part (an empty part scores
    /// nothing: a data-parallel rank may get no example of a small task).
    fn evaluate_parts(
        &mut self,
        parts: &[(usize, Range<usize>)],
        done: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<(f64, serde_json::Value)>>> {
        parts
            .iter()
            .map(|(task, range)| {
                if range.is_empty() {
                    return Ok(Vec::new());
                }
                let scored = self.evaluate_examples(*task, range.clone())?;
                done(scored.len());
                Ok(scored)
            })
            .collect()
    }

    /// What the last [`Learner::evaluate`] produced, for the run folder (e.g. generations with
    /// their prompts and answers). Default: nothing.
    fn last_outputs(&self) -> Option<serde_json::Value> {
        None
    }

    /// Task-gated atoms (`docs/method.md`): the model's task gate, when its adapter has one.
    /// Default: none.
    fn task_gate(&self) -> Option<&TaskGate> {
        None
    }

    /// Replaces the model's task gate (restoring it from an adapter file). Default: only `None`
    /// is accepted.
    fn set_task_gate(&mut self, gate: Option<TaskGate>) -> Result<()> {
        match gate {
            None => Ok(()),
            Some(_) => Err(Error::task("model", "this learner has no task gate (task-gated atoms)")),
        }
    }

    /// Task-gated atoms: adds `task` to the model's task gate from the prompts of its training
    /// examples `examples` (those the task trained on). Default: an error (the learner cannot
    /// recognise tasks).
    fn fit_task_gate(&mut self, task: usize, _examples: &[usize]) -> Result<()> {
        Err(Error::task(
            self.task_names().get(task).cloned().unwrap_or_default(),
            "this learner cannot fit a task gate (task-gated atoms need a prompt to recognise)",
        ))
    }

    /// Task-gated atoms: the task the gate recognised for each evaluation example of `task` (the
    /// examples [`Learner::evaluate`] scores) at the last evaluation, or `None` without a gate.
    fn recognised_tasks(&mut self, _task: usize) -> Result<Option<Vec<u32>>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores example `i` of task `t` as `10 t + i`; an empty range is refused, as a learner that
    /// cannot score nothing would.
    struct Ranges;

    impl Learner for Ranges {
        fn task_names(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn train_len(&self, _task: usize) -> usize {
            0
        }
        fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
            Vec::new()
        }
        fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
            Vec::new()
        }
        fn total_parameters(&self) -> usize {
            0
        }
        fn loss(&mut self, task: usize, _indices: &[usize]) -> Result<Tensor> {
            Err(Error::task(self.task_names()[task].clone(), "does not train"))
        }
        fn evaluate(&mut self, task: usize) -> Result<f64> {
            Ok(task as f64)
        }
        fn evaluate_examples(&mut self, task: usize, range: Range<usize>) -> Result<Vec<(f64, serde_json::Value)>> {
            assert!(!range.is_empty(), "asked to score no example");
            Ok(range.map(|i| ((10 * task + i) as f64, serde_json::Value::Null)).collect())
        }
    }

    #[test]
    fn parts_are_scored_one_by_one_by_default_and_empty_ones_score_nothing() {
        let mut learner = Ranges;
        assert!(!learner.evaluates_across_tasks());
        let mut done = Vec::new();
        let scored = learner.evaluate_parts(&[(1, 2..4), (0, 0..0), (0, 1..2)], &mut |k| done.push(k)).unwrap();
        let scores: Vec<Vec<f64>> = scored.iter().map(|p| p.iter().map(|(s, _)| *s).collect()).collect();
        assert_eq!(scores, vec![vec![12.0, 13.0], vec![], vec![1.0]]);
        assert_eq!(done, vec![2, 1]);
    }
}
