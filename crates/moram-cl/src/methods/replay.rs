//! Experience replay: a buffer of a few training examples of every finished task, mixed into each
//! later step's batch. The `replay` method is SeqLoRA with a buffer; any other method gets one
//! when `method.replay_examples` is set. The buffer names examples by task and index in the run's
//! data and lives in the run folder (`replay-task{t}.json`), never in an adapter file.

use super::{optional_variants, MethodDef, RunHooks, TaskRun};
use crate::config::{MethodConfig, RunConfig};
use crate::error::{Error, Result};
use crate::learner::Learner;
use moram_core::{MoramConfig, Routing};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::Tensor;

/// Examples of each finished task the `replay` method keeps, by default.
pub const DEFAULT_EXAMPLES: usize = 16;
/// Buffer examples added to each step, by default.
pub const DEFAULT_PER_STEP: usize = 2;

/// Replay on a SeqLoRA adapter.
#[derive(Debug, Clone, Copy)]
pub struct Replay;

impl MethodDef for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }
    fn summary(&self) -> &'static str {
        "experience replay: SeqLoRA with a small buffer of earlier tasks' examples in every batch"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Lora {};
        optional_variants(method, layer)
    }
    fn runs_on_clip(&self) -> bool {
        false
    }
}

/// How much a run replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Examples kept per finished task.
    pub per_task: usize,
    /// Buffer examples added to each step.
    pub per_step: usize,
}

/// The run's replay settings: the `replay` method's defaults, or what `method.replay_*` set for
/// another method (`None`: no replay).
pub fn settings(config: &RunConfig) -> Result<Option<Settings>> {
    let m = &config.method;
    let is_replay = config.method()?.name() == Replay.name();
    if !is_replay && m.replay_examples.is_none() {
        if m.replay_per_step.is_some() {
            return Err(Error::config("method.replay_per_step", "needs method.replay_examples (or method `replay`)"));
        }
        return Ok(None);
    }
    let s = Settings {
        per_task: m.replay_examples.unwrap_or(DEFAULT_EXAMPLES),
        per_step: m.replay_per_step.unwrap_or(DEFAULT_PER_STEP),
    };
    if s.per_task == 0 || s.per_step == 0 {
        return Err(Error::config("method.replay_examples", "replay_examples and replay_per_step must be at least 1"));
    }
    Ok(Some(s))
}

/// A method's hooks with a replay buffer around them.
pub struct ReplayHooks {
    inner: Box<dyn RunHooks>,
    settings: Settings,
    seed: u64,
    /// `(task, example)` pairs of every finished task, task by task.
    buffer: Vec<(usize, usize)>,
}

impl ReplayHooks {
    /// `inner` with an empty buffer.
    pub fn new(inner: Box<dyn RunHooks>, settings: Settings, seed: u64) -> Self {
        ReplayHooks { inner, settings, seed, buffer: Vec::new() }
    }

    /// The buffer: `(task, example)` pairs.
    pub fn buffer(&self) -> &[(usize, usize)] {
        &self.buffer
    }

    fn rng(&self, task: usize, salt: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(self.seed ^ 0x5245_504C_4159_0000 ^ ((task as u64) << 32) ^ salt)
    }

    fn file(dir: &Path, task: usize) -> std::path::PathBuf {
        dir.join(format!("replay-task{task}.json"))
    }
}

impl RunHooks for ReplayHooks {
    fn before_task(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        self.inner.before_task(run)
    }

    /// The method's own steps, each with `per_step` buffer examples drawn at random (seeded by
    /// run, task and step) once the buffer holds any.
    fn schedule(&self, run: &TaskRun<'_>) -> Vec<Vec<(usize, usize)>> {
        let mut steps = self.inner.schedule(run);
        if self.buffer.is_empty() {
            return steps;
        }
        let mut rng = self.rng(run.task, 1);
        for step in &mut steps {
            for _ in 0..self.settings.per_step {
                if let Some(&pair) = self.buffer.choose(&mut rng) {
                    step.push(pair);
                }
            }
        }
        steps
    }

    fn task_started(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        self.inner.task_started(run)
    }

    fn penalty(&mut self, learner: &dyn Learner, loss: f64) -> Result<Option<Tensor>> {
        self.inner.penalty(learner, loss)
    }

    fn after_step(&mut self, learner: &mut dyn Learner) {
        self.inner.after_step(learner);
    }

    fn teacher_logits(&mut self, learner: &mut dyn Learner, task: usize, examples: &[usize]) -> Result<Option<Tensor>> {
        self.inner.teacher_logits(learner, task, examples)
    }

    fn distillation(&self, student: &Tensor, teacher: &Tensor, sequences: usize) -> Result<Tensor> {
        self.inner.distillation(student, teacher, sequences)
    }

    /// Keeps `per_task` of the examples the task trained on, drawn at random (seeded).
    fn after_task(&mut self, run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
        let out = self.inner.after_task(run)?;
        let mut trained = run.trained.to_vec();
        trained.shuffle(&mut self.rng(run.task, 2));
        trained.truncate(self.settings.per_task);
        trained.sort_unstable();
        self.buffer.extend(trained.into_iter().map(|i| (run.task, i)));
        Ok(out)
    }

    fn save(&self, dir: &Path, task: usize) -> Result<()> {
        self.inner.save(dir, task)?;
        let text = serde_json::json!({ "buffer": self.buffer }).to_string();
        crate::checkpoint::write_atomic(&Self::file(dir, task), text.as_bytes())
    }

    fn resume(&mut self, dir: &Path, done: usize) -> Result<()> {
        self.inner.resume(dir, done)?;
        let path = Self::file(dir, done - 1);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |m: String| Error::Checkpoint { path: path.clone(), message: m };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let buffer: Vec<(usize, usize)> = serde_json::from_value(value["buffer"].clone())
            .map_err(|e| bad(format!("`buffer` is not a list of [task, example] pairs: {e}")))?;
        if let Some(&(t, _)) = buffer.iter().find(|(t, _)| *t >= done) {
            return Err(bad(format!("the buffer holds task {t}, but only {done} task(s) are finished")));
        }
        self.buffer = buffer;
        Ok(())
    }
}
