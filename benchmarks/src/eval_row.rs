//! `moram-bench eval-row`: one row of a continual-learning run's evaluations (every task of a run
//! config, scored by the LLM learner after its first task started, so every adapted layer holds
//! atoms), either task by task or in one call that fills each task's partial batch with other
//! tasks' prompts (`docs/performance.md`, "Partial batches filled across tasks"). The prefix memo
//! is warm, as at every evaluation after a run's first.

use crate::train::Timing;
use anyhow::{bail, Context, Result};
use moram_cl::{Learner, RunConfig};
use std::path::Path;

/// Runs the row from `config` (with `--set` assignments) `timing`'s way and prints its row: the
/// batches and examples of one evaluation, and the sum of its per-example scores.
pub fn run(timing: Timing, config: &Path, set: &[String], by_task: bool) -> Result<()> {
    let mut cfg = RunConfig::from_file(config).with_context(|| format!("reading {}", config.display()))?;
    cfg.set_all(set)?;
    let mut learner = moram_cl::learners::build(&cfg)?;
    for (_, m) in learner.moram_layers_mut() {
        m.bank_mut().begin_task(0)?;
        m.set_training(false);
    }
    let mut parts = Vec::new();
    for j in 0..learner.task_names().len() {
        let Some(n) = learner.eval_len(j) else { bail!("task {j} cannot score a range of its examples") };
        parts.push((j, 0..n));
    }
    let (mut batches, mut score_sum) = (0usize, 0.0f64);
    let mut call = || -> Result<()> {
        let _guard = tch::no_grad_guard();
        batches = 0;
        let mut count = |_| batches += 1;
        let scored = if by_task {
            let mut all = Vec::new();
            for part in &parts {
                all.extend(learner.evaluate_parts(std::slice::from_ref(part), &mut count)?);
            }
            all
        } else {
            learner.evaluate_parts(&parts, &mut count)?
        };
        score_sum = scored.iter().flatten().map(|(s, _)| s).sum();
        Ok(())
    };
    let t = timing.measure(&mut call)?;
    let examples: usize = parts.iter().map(|(_, r)| r.len()).sum();
    let case = if by_task { "eval_row_by_task" } else { "eval_row_across" };
    crate::emit_with(
        case.into(),
        t,
        serde_json::json!({"examples": examples, "score_sum": score_sum, "batches": batches}),
    )
}
