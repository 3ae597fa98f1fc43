//! The task-sequence runner: per task, start fresh atoms, train them with a fresh optimiser, prune
//! (optional), evaluate every task of the sequence, and checkpoint atomically.
//!
//! Reproducibility: the data order of task `t` comes from its own ChaCha8 stream seeded with
//! `(seed, t)`, and libtorch's generator (new keys, dropout) is re-seeded at the start of every
//! task, so a run resumed after task `t` continues exactly as the uninterrupted run would.
//!
//! Data parallelism (docs/data-parallel.md): with a [`Group`] of W workers every rank builds the
//! same global batches; each step's batch is cut into micro-batches of
//! `min(micro_batch_size, ceil(batch / W))` examples, rank r computes micro-batches r, r + W, ...
//! each weighted by its share of the global batch, and the current task's atom gradients are
//! summed across ranks before clipping. The result is the gradient one process computes with the
//! same micro-batches, whatever the shard sizes. Loss, stop and non-finite flags are summed too,
//! so every rank stops at the same step; new atoms are broadcast from rank 0 at each task start;
//! evaluation examples are shared out and gathered; rank 0 alone writes the run folder.

use crate::checkpoint::{self, PruneReport, RunState, TaskRecord};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::learner::{set_training, Learner};
use crate::optim::Adam;
use crate::report;
use crate::schedule::learning_rate;
use indicatif::ProgressBar;
use moram_core::PruneScope;
use moram_dist::Group;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Set to stop at the next step boundary (e.g. from a Ctrl-C handler).
    pub stop: Option<Arc<AtomicBool>>,
    /// Show progress bars (on a terminal; rank 0 only).
    pub progress: bool,
    /// The data-parallel workers this process belongs to; `None`: this process alone.
    pub group: Option<Arc<Group>>,
}

impl RunOptions {
    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// Runs `f` with the options' group, or a group of this process alone.
fn with_group<T>(options: &RunOptions, f: impl FnOnce(&Group) -> T) -> T {
    match options.group.as_deref() {
        Some(g) => f(g),
        None => f(&Group::single()),
    }
}

/// Makes a step that can fail on some ranks fail on all of them: every rank's error message is
/// gathered; a rank that failed returns its own error, the others an error naming it.
fn agree<T>(group: &Group, result: Result<T>) -> Result<T> {
    if group.world() == 1 {
        return result;
    }
    let mine = match &result {
        Ok(_) => String::new(),
        Err(e) => error_chain(e),
    };
    let all = group.all_gather_bytes(mine.as_bytes())?;
    let value = result?;
    match all.iter().enumerate().find(|(_, m)| !m.is_empty()) {
        Some((rank, message)) => {
            Err(moram_dist::Error::Peer { rank, message: String::from_utf8_lossy(message).into_owned() }.into())
        }
        None => Ok(value),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

pub use crate::batches::batch_schedule;
use crate::methods::hooks::bar;
use crate::methods::{RunHooks, TaskRun};

/// Seeds libtorch's generator for task `task` on data-parallel rank `rank` (0 with one process:
/// the stream every earlier run used).
fn seed_torch(config: &RunConfig, task: usize, rank: usize) {
    tch::manual_seed(
        (config.seed as i64).wrapping_add(1_000_003 * (task as i64 + 1)).wrapping_add(7_919 * rank as i64),
    );
}

fn atom_count(learner: &impl Learner) -> usize {
    learner.moram_layers().iter().map(|(_, m)| m.bank().len()).sum()
}

fn adapter_parameters(learner: &impl Learner) -> usize {
    learner.moram_layers().iter().map(|(_, m)| m.bank().parameter_count()).sum()
}

/// Peak resident memory of this process so far, in MiB (Linux; `None` elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Starts a new run in `dir` (which must not hold a run yet) and runs every task. In a
/// data-parallel run rank 0 creates and writes the folder.
pub fn run(learner: &mut impl Learner, config: &RunConfig, dir: &Path, options: &RunOptions) -> Result<RunState> {
    let names = learner.task_names();
    if names.is_empty() {
        return Err(Error::config("data.tasks", "the task sequence is empty"));
    }
    let state = RunState::new(config, names);
    with_group(options, |group| {
        let created = if group.is_main() {
            (|| {
                if dir.join(checkpoint::STATE_FILE).exists() {
                    return Err(Error::RunExists { dir: dir.into() });
                }
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                checkpoint::write_config(dir, config)?;
                state.save(dir)
            })()
        } else {
            Ok(())
        };
        agree(group, created)?;
        continue_run(learner, config, dir, state, options, group)
    })
}

/// Continues the run in `dir` from its last finished task. The config must equal the run's.
///
/// In a data-parallel run every rank reads the folder (it must be visible to all of them, e.g. on
/// a shared file system); a rank that cannot stops all of them.
pub fn resume(learner: &mut impl Learner, config: &RunConfig, dir: &Path, options: &RunOptions) -> Result<RunState> {
    with_group(options, |group| {
        let state = agree(group, load_for_resume(learner, config, dir, group))?;
        tracing::info!(done = state.tasks_done(), total = state.task_names.len(), "resuming {}", dir.display());
        continue_run(learner, config, dir, state, options, group)
    })
}

fn load_for_resume(learner: &mut impl Learner, config: &RunConfig, dir: &Path, group: &Group) -> Result<RunState> {
    let state = RunState::load(dir)?;
    checkpoint::check_config(dir, config)?;
    if state.task_names != learner.task_names() {
        return Err(Error::ConfigMismatch {
            dir: dir.into(),
            fields: format!("tasks ({:?} vs {:?})", state.task_names, learner.task_names()),
        });
    }
    if let Some(adapter) = state.adapter_file() {
        checkpoint::load_adapter(learner, &dir.join(adapter))?;
    }
    if group.is_main() {
        report::truncate_step_log(dir, state.tasks_done())?;
    }
    Ok(state)
}

fn continue_run(
    learner: &mut impl Learner,
    config: &RunConfig,
    dir: &Path,
    mut state: RunState,
    options: &RunOptions,
    group: &Group,
) -> Result<RunState> {
    let n = state.task_names.len();
    let mut log = if group.is_main() { Some(report::StepLog::open(dir)?) } else { None };
    let mut hooks = crate::methods::start_hooks(config)?;
    if state.tasks_done() > 0 {
        hooks.resume(dir, state.tasks_done())?;
    }
    for task in state.tasks_done()..n {
        let mut record = train_task(learner, config, &state, task, log.as_mut(), options, group, hooks.as_mut())?;
        // A task that took no step (multi-task training after its one joint task) left the model
        // as the last evaluation saw it: the same scores, without generating them again.
        let row = match state.matrix.last() {
            Some(last) if record.steps == 0 => last.clone(),
            _ => evaluate_all(learner, n, options, Some((dir, task)), group)?,
        };
        if group.is_main() {
            let written = (|| {
                record.routing = crate::analysis::routing_diagnostics(learner, task + 1, config.diagnostics.examples)?;
                record.recognition = recognition(learner, task)?;
                for warning in crate::plasticity::warnings(&record, task) {
                    tracing::warn!("{warning}");
                }
                let adapter = checkpoint::save_adapter(learner, dir, task, config)?;
                hooks.save(dir, task)?;
                state.finish_task(row, record, adapter);
                state.save(dir)?;
                report::write_all(dir, &state, config)
            })();
            agree(group, written)?;
            tracing::info!(task, name = %state.task_names[task], "finished; checkpoint in {}", dir.display());
        } else {
            agree(group, Ok(()))?;
            state.finish_task(row, record, checkpoint::adapter_name(task));
        }
    }
    Ok(state)
}

#[allow(clippy::too_many_arguments)]
fn train_task(
    learner: &mut impl Learner,
    config: &RunConfig,
    state: &RunState,
    task: usize,
    mut log: Option<&mut report::StepLog>,
    options: &RunOptions,
    group: &Group,
    hooks: &mut dyn RunHooks,
) -> Result<TaskRecord> {
    let name = state.task_names[task].clone();
    let start = Instant::now();
    seed_torch(config, task, 0);
    let lens: Vec<usize> = (0..state.task_names.len()).map(|t| learner.train_len(t)).collect();
    let progress = options.progress;
    hooks.before_task(&mut TaskRun { learner, config, task, lens: &lens, progress, trained: &[] })?;
    for (_, m) in learner.moram_layers_mut() {
        m.bank_mut().begin_task(task as u32)?;
    }
    hooks.task_started(&mut TaskRun { learner, config, task, lens: &lens, progress, trained: &[] })?;
    set_training(learner, false);
    learner.prepare_task(task)?;
    let n_train = learner.train_len(task);
    if n_train == 0 {
        return Err(Error::task(&name, "has no training example"));
    }
    let steps = hooks.schedule(&TaskRun { learner, config, task, lens: &lens, progress, trained: &[] });
    // The task's examples the steps use, in order of first use (what the task gate is fitted on).
    let mut seen = std::collections::HashSet::new();
    let trained: Vec<usize> =
        steps.iter().flatten().filter(|(t, i)| *t == task && seen.insert(*i)).map(|(_, i)| *i).collect();
    let mut params: Vec<tch::Tensor> = crate::learner::trainable_tensors(learner);
    // Every rank drew the same keys from the same seed; rank 0's are copied anyway so that the
    // ranks cannot drift apart (a different libtorch build, device or thread count).
    let mut comm = std::time::Duration::ZERO;
    let t0 = Instant::now();
    group.broadcast_many(&mut params, 0)?;
    comm += t0.elapsed();
    if group.rank() > 0 {
        // Dropout masks: rank 0 keeps the stream one process would use, the others get their own
        // rather than repeating rank 0's masks on other examples.
        seed_torch(config, task, group.rank());
    }
    let mut opt = Adam::new(params, &config.optimizer);
    let trainable = opt.numel();
    let (micro, _) = config.training.accumulation();
    let (world, rank) = (group.world(), group.rank());
    let o = &config.optimizer;
    let show = options.progress && group.is_main();
    let pb = bar(steps.len() as u64, format!("task {}/{} {name}", task + 1, state.task_names.len()), show);
    set_training(learner, true);
    let every = config.training.log_every.unwrap_or(crate::config::DEFAULT_LOG_EVERY);
    let tokens_before = learner.tokens_seen().unwrap_or(0);
    let mut last_loss = f64::NAN;
    let mut first_loss = None;
    for (step, batch) in steps.iter().enumerate() {
        if world == 1 && options.stop_requested() {
            pb.abandon();
            return Err(Error::Interrupted { task, name, step, done: state.tasks_done() });
        }
        let lr = learning_rate(o.schedule, o.lr, step, steps.len(), o.warmup_steps);
        opt.zero_grad();
        let mut batch_loss = 0.0;
        let mut bad: Option<f64> = None;
        let micro_here = if world > 1 { micro.min(batch.len().div_ceil(world)).max(1) } else { micro };
        'micro: for (i, chunk) in batch.chunks(micro_here).enumerate() {
            if i % world != rank {
                continue;
            }
            // A step may mix tasks (multi-task training): each task's examples form one pass.
            for (t, examples) in crate::batches::by_task(chunk) {
                // A distilling method (LwF) adds its term to the loss; the step's logged loss is
                // the task loss alone.
                let (loss, extra) = match hooks.teacher_logits(learner, t, &examples)? {
                    Some(teacher) => {
                        let out = learner.answer_logits(t, &examples)?;
                        let extra = hooks.distillation(&out.logits, &teacher, examples.len())?;
                        (out.loss(), Some(extra))
                    }
                    None => (learner.loss(t, &examples)?, None),
                };
                let value = loss.double_value(&[]);
                let weight = examples.len() as f64 / batch.len() as f64;
                batch_loss += value * weight;
                let total = match extra {
                    Some(extra) => loss + extra,
                    None => loss,
                };
                let total_value = total.double_value(&[]);
                if !value.is_finite() || !total_value.is_finite() {
                    bad = Some(if value.is_finite() { total_value } else { value });
                    break 'micro;
                }
                (total * weight).backward();
            }
        }
        if let (None, true, Some(penalty)) = (bad, group.is_main(), hooks.penalty(learner, batch_loss)?) {
            let value = penalty.double_value(&[]);
            if value.is_finite() {
                penalty.f_backward()?;
            } else {
                bad = Some(value);
            }
        }
        if world > 1 {
            // Loss, stop request and each rank's non-finite flag in one all-reduce, so that every
            // rank takes the same decision.
            let mut flags = vec![0.0f64; 2 + world];
            flags[0] = batch_loss;
            flags[1] = f64::from(u8::from(options.stop_requested()));
            flags[2 + rank] = f64::from(u8::from(bad.is_some()));
            let t0 = Instant::now();
            // On the group's device (this rank's GPU under NCCL, which reduces CUDA tensors only).
            group.all_reduce_host_sum(&mut flags)?;
            let bad_ranks: Vec<usize> = (0..world).filter(|&k| flags[2 + k] > 0.0).collect();
            if !bad_ranks.is_empty() {
                pb.abandon();
                let ranks = format!(" on rank(s) {bad_ranks:?} of {world}");
                return Err(Error::NonFinite { task, name, step, loss: bad.unwrap_or(flags[0]), ranks });
            }
            if flags[1] > 0.0 {
                pb.abandon();
                return Err(Error::Interrupted { task, name, step: step + 1, done: state.tasks_done() });
            }
            batch_loss = flags[0];
            sum_gradients(group, &opt)?;
            comm += t0.elapsed();
        } else if let Some(value) = bad {
            pb.abandon();
            return Err(Error::NonFinite { task, name, step, loss: value, ranks: String::new() });
        }
        let grad_norm = opt.clip_grad_norm(config.training.clip_grad_norm)?;
        if !grad_norm.is_finite() {
            pb.abandon();
            return Err(Error::NonFinite { task, name, step, loss: grad_norm, ranks: String::new() });
        }
        opt.step(lr);
        hooks.after_step(learner);
        last_loss = batch_loss;
        first_loss = first_loss.or(Some(batch_loss));
        if let Some(log) = log.as_deref_mut() {
            log.write(task, step, batch_loss, lr, grad_norm, start.elapsed().as_secs_f64())?;
        }
        pb.set_prefix(format!("loss {batch_loss:.4}"));
        pb.inc(1);
        if group.is_main() && every > 0 && ((step + 1) % every == 0 || step + 1 == steps.len()) {
            let line =
                ProgressLine { task: &name, step: step + 1, steps: steps.len(), loss: batch_loss, lr, grad_norm };
            line.log(start.elapsed().as_secs_f64(), learner.tokens_seen().map(|t| t - tokens_before), pb.is_hidden());
        }
    }
    pb.finish_and_clear();
    set_training(learner, false);
    let prune = if config.pruning.enabled { Some(prune_task(learner, config, task, n_train, options)?) } else { None };
    let subspace =
        hooks.after_task(&mut TaskRun { learner, config, task, lens: &lens, progress, trained: &trained })?;
    let (subspace_dims, subspace_share) = match subspace {
        Some(layers) => (Some(layers.iter().map(|l| l.0).collect()), Some(layers.iter().map(|l| l.1).collect())),
        None => (None, None),
    };
    Ok(TaskRecord {
        name,
        steps: steps.len(),
        final_loss: last_loss,
        first_loss,
        trainable_parameters: trainable,
        adapter_parameters: adapter_parameters(learner),
        total_parameters: learner.total_parameters(),
        atoms: atom_count(learner),
        seconds: start.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        prune,
        subspace_dims,
        subspace_share,
        routing: None,
        recognition: None,
        workers: world,
        communication_seconds: comm.as_secs_f64(),
    })
}

/// One progress line of the log (`training.log_every`).
struct ProgressLine<'a> {
    task: &'a str,
    step: usize,
    steps: usize,
    loss: f64,
    lr: f64,
    grad_norm: f64,
}

impl ProgressLine<'_> {
    /// Logs the line after `seconds` of the task, with the tokens its forward passes read so far:
    /// at info level when no bar shows progress (`bar_hidden`: a log file, `-q`), else at debug.
    fn log(&self, seconds: f64, tokens: Option<u64>, bar_hidden: bool) {
        let rate = self.step as f64 / seconds.max(1e-9);
        let eta = (self.steps - self.step) as f64 / rate.max(1e-9);
        let tokens = tokens.map_or(String::new(), |t| format!(", {:.0} tokens/s", t as f64 / seconds.max(1e-9)));
        let line = format!(
            "{} step {}/{}: loss {:.4}, lr {:.2e}, grad norm {:.3}{tokens}, {:.1} s elapsed, eta {:.0} s",
            self.task, self.step, self.steps, self.loss, self.lr, self.grad_norm, seconds, eta
        );
        if bar_hidden {
            tracing::info!("{line}");
        } else {
            tracing::debug!("{line}");
        }
    }
}

/// Sums the optimiser's gradients across ranks (one flattened all-reduce). A rank that computed no
/// micro-batch this step contributes zeros.
fn sum_gradients(group: &Group, opt: &Adam) -> Result<()> {
    if opt.params().iter().any(|p| !p.grad().defined()) {
        let zero = opt.params().iter().map(|p| p.sum(tch::Kind::Float) * 0.0).reduce(|a, b| a + b);
        if let Some(zero) = zero {
            zero.f_backward()?;
        }
    }
    let mut grads: Vec<tch::Tensor> = opt.params().iter().map(tch::Tensor::grad).collect();
    group.all_reduce_sum_many(&mut grads)?;
    Ok(())
}

/// Task-gated atoms: after task `task`, the share of every task's evaluation prompts the gate
/// recognises as each task so far (`None` without a gate).
fn recognition(learner: &mut impl Learner, task: usize) -> Result<Option<Vec<Vec<f64>>>> {
    if learner.task_gate().is_none() {
        return Ok(None);
    }
    let _guard = tch::no_grad_guard();
    let mut rows = Vec::new();
    for i in 0..learner.task_names().len() {
        let Some(ids) = learner.recognised_tasks(i)? else { return Ok(None) };
        let mut row = vec![0.0; task + 1];
        for id in &ids {
            if let Some(x) = row.get_mut(*id as usize) {
                *x += 1.0 / ids.len() as f64;
            }
        }
        rows.push(row);
    }
    Ok(Some(rows))
}

/// Gathers this task's activation statistics on its training data (eval mode, gated weights: the
/// atoms inference actually uses) and removes the task's atoms outside the mass share.
fn prune_task(
    learner: &mut impl Learner,
    config: &RunConfig,
    task: usize,
    n_train: usize,
    options: &RunOptions,
) -> Result<PruneReport> {
    let metric_before = learner.evaluate(task)?;
    let n = config.pruning.stats_examples.unwrap_or(n_train).min(n_train);
    let (micro, _) = config.training.accumulation();
    let pb = bar(n.div_ceil(micro) as u64, "pruning statistics".into(), options.progress);
    let stats = crate::analysis::task_stats(learner, task, n, micro, || pb.inc(1))?;
    pb.finish_and_clear();
    let counts = crate::analysis::prune(learner, &[stats], config.pruning.share, PruneScope::Task(task as u32))?;
    let metric_after = learner.evaluate(task)?;
    Ok(PruneReport {
        atoms_before: counts.atoms_before,
        atoms_after: counts.atoms_after,
        parameters_before: counts.parameters_before,
        parameters_after: counts.parameters_after,
        metric_before,
        metric_after,
    })
}

/// Scores every task of the sequence with the model as it is now (eval mode, no gradients).
pub fn evaluate_every_task(learner: &mut impl Learner, options: &RunOptions) -> Result<Vec<f64>> {
    let n = learner.task_names().len();
    with_group(options, |group| evaluate_all(learner, n, options, None, group))
}

/// Evaluates every task; with `outputs = (run folder, task just trained)` the learner's outputs go
/// to `outputs/after-task{t}/{task name}.json`.
///
/// A learner that batches across tasks ([`Learner::evaluates_across_tasks`]) gets the whole row in
/// one call, each rank its share of every task; otherwise tasks are scored one at a time, shared
/// out between the ranks when the learner can score ranges of examples.
fn evaluate_all(
    learner: &mut impl Learner,
    n: usize,
    options: &RunOptions,
    outputs: Option<(&Path, usize)>,
    group: &Group,
) -> Result<Vec<f64>> {
    set_training(learner, false);
    let _guard = tch::no_grad_guard();
    learner.begin_evaluation()?;
    let show = options.progress && group.is_main();
    let lens: Option<Vec<usize>> = (0..n).map(|j| learner.eval_len(j)).collect();
    let scored = match lens {
        Some(lens) if learner.evaluates_across_tasks() => {
            // Progress in examples: one call scores every task.
            let pb = bar(lens.iter().sum::<usize>() as u64, "evaluating every task".into(), show);
            let tasks: Vec<usize> = (0..n).collect();
            let scored = evaluate_shared(learner, &tasks, &lens, group, &pb)?;
            pb.finish_and_clear();
            scored
        }
        _ => {
            let pb = bar(n as u64, "evaluating every task".into(), show);
            let mut scored = Vec::with_capacity(n);
            for j in 0..n {
                scored.push(match learner.eval_len(j) {
                    Some(len) if group.world() > 1 => {
                        let quiet = ProgressBar::hidden();
                        evaluate_shared(learner, &[j], &[len], group, &quiet)?.remove(0)
                    }
                    _ => (learner.evaluate(j)?, learner.last_outputs()),
                });
                pb.inc(1);
            }
            pb.finish_and_clear();
            scored
        }
    };
    let mut row = Vec::with_capacity(n);
    for (j, (score, out)) in scored.into_iter().enumerate() {
        row.push(score);
        if let (true, Some((dir, t)), Some(out)) = (group.is_main(), outputs, out) {
            let folder = dir.join("outputs").join(format!("after-task{t}"));
            std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
            let name = learner.task_names()[j].replace(['/', '\\'], "_");
            let text = serde_json::to_string_pretty(&out)
                .map_err(|e| Error::io(&folder, std::io::Error::other(e.to_string())))?;
            crate::checkpoint::write_atomic(&folder.join(format!("{name}.json")), text.as_bytes())?;
        }
    }
    Ok(row)
}

/// Scores of `tasks` (with `lens[i]` evaluation examples each) in one
/// [`Learner::evaluate_parts`] call, shared out: rank r scores examples
/// `[r n / W, (r + 1) n / W)` of each task, and every rank gathers all per-example scores (in
/// example order) and what the run folder keeps. Returns each task's mean score and outputs.
fn evaluate_shared(
    learner: &mut impl Learner,
    tasks: &[usize],
    lens: &[usize],
    group: &Group,
    pb: &ProgressBar,
) -> Result<Vec<(f64, Option<serde_json::Value>)>> {
    type Scored = Vec<(f64, serde_json::Value)>;
    let (w, r) = (group.world(), group.rank());
    let parts: Vec<_> = tasks.iter().zip(lens).map(|(&j, &n)| (j, r * n / w..(r + 1) * n / w)).collect();
    // Each rank's examples count once in the bar; the others' arrive with the gather.
    let local = learner.evaluate_parts(&parts, &mut |k| pb.inc((k * w) as u64))?;
    let ranks: Vec<Vec<Scored>> = if w == 1 {
        vec![local]
    } else {
        let bytes =
            serde_json::to_vec(&local).map_err(|e| Error::task("evaluation", format!("encoding scores: {e}")))?;
        group
            .all_gather_bytes(&bytes)?
            .iter()
            .enumerate()
            .map(|(rank, part)| {
                serde_json::from_slice(part)
                    .map_err(|e| Error::task("evaluation", format!("scores from rank {rank}: {e}")))
            })
            .collect::<Result<_>>()?
    };
    let mut out = Vec::with_capacity(tasks.len());
    for (i, (&task, &n)) in tasks.iter().zip(lens).enumerate() {
        let scored: Scored = ranks.iter().flat_map(|parts| parts.get(i).into_iter().flatten().cloned()).collect();
        if n == 0 {
            return Err(Error::task(&learner.task_names()[task], "has no evaluation example"));
        }
        if scored.len() != n {
            let name = learner.task_names()[task].clone();
            return Err(Error::task(&name, format!("scored {} of its {n} evaluation examples", scored.len())));
        }
        let score = scored.iter().map(|(s, _)| s).sum::<f64>() / n as f64;
        let outputs = if scored.iter().all(|(_, v)| v.is_null()) {
            None
        } else {
            Some(serde_json::Value::Array(scored.into_iter().map(|(_, v)| v).collect()))
        };
        out.push((score, outputs));
    }
    Ok(out)
}
