//! The hooks every method shares ([`LayerHooks`]): the fitting steps a layer config asks for,
//! run by the runner around each task. Score statistics before the first task (normalised
//! scores), protected input subspaces and novelty thresholds after each task (the subspace
//! variants), the task gate after each task (task-gated atoms), the banks' own regularisers each
//! step (O-LoRA), and keys projected back out of a protected subspace after each step (orthogonal
//! keys). Each is a no-op for a layer config without its variant.

use super::RunHooks;
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::learner::Learner;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tch::Tensor;

/// One task of a run, as the hooks see it.
pub struct TaskRun<'a> {
    /// The model and its data.
    pub learner: &'a mut dyn Learner,
    /// The run's config.
    pub config: &'a RunConfig,
    /// The task (0-based).
    pub task: usize,
    /// Training examples of every task of the sequence.
    pub lens: &'a [usize],
    /// Whether to show progress bars.
    pub progress: bool,
    /// The task's training examples its steps used, in order of first use (after training).
    pub trained: &'a [usize],
}

/// The hooks of a method whose layer config says everything: [`RunHooks`]'s defaults.
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerHooks;

impl RunHooks for LayerHooks {}

/// The summed regularisers of every layer's current atoms (O-LoRA's penalties), `None` when there
/// are none.
pub fn bank_penalties(learner: &dyn Learner) -> Option<Tensor> {
    learner.moram_layers().iter().filter_map(|(_, m)| m.bank().penalty()).reduce(|a, b| a + b)
}

/// Orthogonal keys: moves every layer's trainable keys back out of its protected subspace (a
/// no-op for other layer configs).
pub fn project_keys(learner: &mut dyn Learner) {
    for (_, m) in learner.moram_layers_mut() {
        m.bank_mut().project_trainable_keys();
    }
}

/// What every layer config asks for after a task: its protected subspaces (and novelty
/// thresholds), then the task gate. Returns the subspaces' widths.
pub fn after_task(run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
    let widths = extend_key_subspaces(run)?;
    fit_task_gate(run)?;
    Ok(widths)
}

pub(crate) fn bar(len: u64, msg: String, show: bool) -> ProgressBar {
    let pb = ProgressBar::with_draw_target(
        Some(len),
        if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    let style = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {prefix}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(msg);
    pb
}

/// Normalised scores ([`moram_core::ScoreInput`]): before the first atoms exist, records every
/// layer's inputs on up to `method.score_examples` of this task's training examples (one per
/// forward pass, so padding never enters) and fixes each layer's per-feature mean and standard
/// deviation. A no-op when no layer needs them; they are never refitted.
pub fn fit_score_statistics(run: &mut TaskRun<'_>) -> Result<()> {
    let (config, task, progress) = (run.config, run.task, run.progress);
    let learner = &mut *run.learner;
    let layers = learner.moram_layers();
    if !layers.iter().any(|(_, m)| m.bank().needs_score_statistics()) {
        return Ok(());
    }
    if let Some((path, _)) = layers.iter().find(|(_, m)| !m.bank().is_empty()) {
        return Err(Error::task(
            path,
            "has atoms but no score statistics (they are fitted before the first task; was the adapter \
             written without them?)",
        ));
    }
    for (_, m) in &layers {
        m.start_input_statistics();
    }
    drop(layers);
    crate::learner::set_training(learner, false);
    let n_train = learner.train_len(task);
    let n = config.method.score_examples.unwrap_or(crate::config::DEFAULT_SCORE_EXAMPLES).min(n_train);
    let pb = bar(n as u64, "score statistics".into(), progress);
    crate::analysis::forward_examples(learner, task, n, 1, || pb.inc(1))?;
    pb.finish_and_clear();
    for (path, m) in learner.moram_layers_mut() {
        let stats = m.take_input_statistics().ok_or_else(|| Error::task(&path, "saw no input token"))?;
        m.bank_mut().set_score_statistics(&stats.mean, &stats.std).map_err(|e| Error::layer(&path, e))?;
    }
    Ok(())
}

/// Tokens per layer kept to fit a novelty threshold: enough for a 99% quantile to rest on about 40
/// tokens above it, few enough (16 MiB for a 1,024-wide layer) to keep in memory.
const THRESHOLD_TOKENS: usize = 4096;

/// Protected input subspaces: records every layer's inputs on (up to `method.subspace_examples`
/// of) this task's training examples, one per forward pass so that padding never enters, and grows
/// each layer's protected subspace. Novelty-gated routing also keeps the first
/// [`THRESHOLD_TOKENS`] of those inputs and fits the threshold for the new basis on them: the
/// `quantile` of their share outside it (earlier tasks' tokens lie inside smaller bases, whose
/// thresholds already cover them, and a width keeps its largest threshold). Returns each layer's
/// subspace dimension `m` and `m / d_in`; `None` when off.
pub fn extend_key_subspaces(run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
    let (config, task, progress, n_train) = (run.config, run.task, run.progress, run.lens[run.task]);
    let learner = &mut *run.learner;
    let layers = learner.moram_layers();
    let Some(subspace) = layers.first().and_then(|(_, m)| m.bank().config().key_subspace) else {
        return Ok(None);
    };
    let gated = subspace.mode == moram_core::SubspaceMode::NoveltyGated;
    for (_, m) in &layers {
        m.start_input_moments();
        if gated {
            m.start_input_sample(THRESHOLD_TOKENS);
        }
    }
    drop(layers);
    let n = config.method.subspace_examples.unwrap_or(crate::config::DEFAULT_SUBSPACE_EXAMPLES).min(n_train);
    let pb = bar(n as u64, "input subspace".into(), progress);
    crate::analysis::forward_examples(learner, task, n, 1, || pb.inc(1))?;
    pb.finish_and_clear();
    let mut dims = Vec::new();
    for (path, m) in learner.moram_layers_mut() {
        let sample = m.take_input_sample();
        let Some((moments, _)) = m.take_input_moments() else { continue };
        m.bank_mut().extend_key_basis(&moments, subspace.energy).map_err(|e| Error::layer(&path, e))?;
        let width = m.bank().key_basis().size()[1] as usize;
        dims.push((width, width as f64 / m.bank().d_in().max(1) as f64));
        if let (Some(tokens), true) = (sample, width > 0) {
            let _guard = tch::no_grad_guard();
            let rho = m.bank().outside_share(&tokens).select(-1, -1).to_device(tch::Device::Cpu);
            let mut shares = Vec::<f32>::try_from(rho)?;
            shares.sort_by(f32::total_cmp);
            let at = ((subspace.quantile * shares.len() as f64).ceil() as usize).clamp(1, shares.len()) - 1;
            m.bank_mut().set_novelty_threshold(width, shares[at] as f64).map_err(|e| Error::layer(&path, e))?;
        }
    }
    Ok(Some(dims))
}

/// Task-gated atoms (`docs/method.md`): adds the task just trained to the model's task gate, from
/// the prompts of up to `method.gate_examples` of the examples it trained on (in order of first
/// use; the frozen blocks' pass over them is already cached). A no-op for other methods.
pub fn fit_task_gate(run: &mut TaskRun<'_>) -> Result<()> {
    let gated = run.learner.moram_layers().first().is_some_and(|(_, m)| m.bank().config().task_gate.is_some());
    if !gated {
        return Ok(());
    }
    let n = run.config.method.gate_examples.unwrap_or(crate::config::DEFAULT_GATE_EXAMPLES);
    let examples = &run.trained[..n.min(run.trained.len())];
    let pb = bar(1, "task gate".into(), run.progress);
    run.learner.fit_task_gate(run.task, examples)?;
    pb.finish_and_clear();
    Ok(())
}

/// Writes a method's per-task state `named` to `path` (safetensors, through a temporary file and
/// a rename, as every run file is written).
pub(crate) fn save_state(path: &std::path::Path, named: &[(String, Tensor)]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    Tensor::write_safetensors(named, &tmp).map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads what [`save_state`] wrote; `what` names the method in the error.
pub(crate) fn load_state(path: &std::path::Path, what: &str) -> Result<Vec<(String, Tensor)>> {
    Tensor::read_safetensors(path)
        .map_err(|e| Error::Checkpoint { path: path.into(), message: format!("cannot read {what} state: {e}") })
}
