//! Independent runs side by side as worker processes: what `moram demo --jobs N` does with its
//! methods and `moram study --jobs N` with its grid. Each job is a run folder holding its
//! `config.toml`; a worker is this program again, `moram --threads T train --config
//! DIR/config.toml --out DIR` (or `moram --threads T resume DIR` for a run that has finished
//! tasks), appending its messages to `DIR/train.log`.
//!
//! Separate processes, not threads of one: libtorch's generator and thread settings are global to
//! a process, and on a small CPU two one-thread processes do nearly twice the work of one process
//! with two intra-op threads (`benchmarks/results/data-parallel.md`), whose threads wait on each
//! other at every small operation.

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use moram_cl::RunConfig;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The progress bars a [`Pool`] draws on the terminal, while it exists.
static DRAWN: std::sync::Mutex<Option<MultiProgress>> = std::sync::Mutex::new(None);

/// Runs `f` (which writes to stderr) with the workers' progress bars cleared from the terminal
/// and redrawn after, so that log lines never land in the middle of them; just `f` when none are
/// drawn. The CLI's log writer calls it for every message.
pub fn above_bars<R>(f: impl FnOnce() -> R) -> R {
    let bars = DRAWN.lock().ok().and_then(|drawn| drawn.clone());
    match bars {
        Some(bars) => bars.suspend(f),
        None => f(),
    }
}

/// Name of a worker's log in its run folder.
pub const LOG_FILE: &str = "train.log";

/// One run for a worker: a folder whose `config.toml` ([`moram_cl::checkpoint::write_config`])
/// says what to train.
#[derive(Debug, Clone)]
pub struct RunJob {
    /// Its name on the progress bar and in messages.
    pub label: String,
    /// The run folder.
    pub dir: PathBuf,
    /// Optimiser steps of the whole run (the progress bar's length).
    pub steps: u64,
    /// Continue the run from its last finished task (`moram resume`) instead of starting it.
    pub resume: bool,
}

impl RunJob {
    /// The job of training `config` in `dir`: resumed from the run's finished tasks (`resume`;
    /// the saved config must equal `config`), or started from `config` written into the folder.
    pub fn prepare(label: String, dir: &Path, config: &RunConfig, resume: bool) -> Result<RunJob> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if resume {
            moram_cl::checkpoint::check_config(dir, config)?;
        } else {
            moram_cl::checkpoint::write_config(dir, config)?;
        }
        let tasks = config.data.as_ref().map_or(0, |d| d.tasks.len());
        let steps = (config.training.iterations.unwrap_or(0) * tasks) as u64;
        Ok(RunJob { label, dir: dir.to_path_buf(), steps, resume })
    }
}

/// How many runs train at once, and with how many threads each.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    /// Runs trained at once, each by its own worker process.
    pub jobs: usize,
    /// libtorch threads of each worker (and of the launching process while it works meanwhile).
    pub threads: i32,
}

impl Workers {
    /// `jobs` (default: one per core, at most `most`) workers with `threads` threads each
    /// (default: the cores shared among them).
    pub fn for_this_machine(jobs: Option<usize>, threads: Option<i32>, most: usize) -> Result<Workers> {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let jobs = jobs.unwrap_or(cores).min(most);
        anyhow::ensure!(jobs >= 1, "--jobs must be at least 1");
        let threads = threads.unwrap_or_else(|| (cores / jobs).max(1) as i32);
        anyhow::ensure!(threads >= 1, "--threads must be at least 1, found {threads}");
        Ok(Workers { jobs, threads })
    }
}

/// How a worker ended.
#[derive(Debug)]
pub struct Finished {
    /// The job.
    pub job: RunJob,
    /// Wall-clock seconds from start to exit.
    pub seconds: f64,
    /// Exit status.
    pub status: ExitStatus,
}

struct Running {
    job: RunJob,
    child: Child,
    started: Instant,
    bar: ProgressBar,
    /// Steps counted in the run's step log so far, and the bytes read to count them.
    steps: StepCount,
}

/// A queue of run jobs and the workers running them. Dropping it kills workers still running
/// (an error in the launching process leaves nothing behind).
pub struct Pool {
    program: PathBuf,
    threads: i32,
    queue: VecDeque<RunJob>,
    running: Vec<Running>,
    finished: Vec<Finished>,
    bars: MultiProgress,
    stop: Arc<AtomicBool>,
}

impl Pool {
    /// Jobs run in the given order, each worker with `threads` libtorch threads. Once `stop` is
    /// raised (Ctrl-C) no further job starts; running workers got the same Ctrl-C from the
    /// terminal and stop after their current step, keeping their finished tasks.
    pub fn new(jobs: Vec<RunJob>, threads: i32, stop: Arc<AtomicBool>, progress: bool) -> Result<Pool> {
        anyhow::ensure!(threads >= 1, "worker threads must be at least 1, found {threads}");
        let program = std::env::current_exe().context("locating the moram executable")?;
        let target = if progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bars = MultiProgress::with_draw_target(target);
        if !bars.is_hidden() {
            if let Ok(mut drawn) = DRAWN.lock() {
                *drawn = Some(bars.clone());
            }
        }
        Ok(Pool { program, threads, queue: jobs.into(), running: Vec::new(), finished: Vec::new(), bars, stop })
    }

    /// Starts queued jobs until `n` workers run (or the queue is empty).
    pub fn fill(&mut self, n: usize) -> Result<()> {
        while self.running.len() < n && !self.stop.load(Ordering::SeqCst) {
            let Some(job) = self.queue.pop_front() else { break };
            let log_path = job.dir.join(LOG_FILE);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .with_context(|| format!("opening {}", log_path.display()))?;
            let log_err = log.try_clone().with_context(|| format!("opening {} twice", log_path.display()))?;
            let mut command = Command::new(&self.program);
            command.arg("--threads").arg(self.threads.to_string());
            if job.resume {
                command.arg("resume").arg(&job.dir);
            } else {
                command
                    .arg("train")
                    .arg("--config")
                    .arg(job.dir.join(moram_cl::checkpoint::CONFIG_FILE))
                    .arg("--out")
                    .arg(&job.dir);
            }
            let child = command
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                // A launcher's data-parallel variables would make the worker wait for peers.
                .env_remove("WORLD_SIZE")
                .env(crate::STDERR_IS_RUN_LOG, "1")
                .env_remove("RANK")
                .spawn()
                .with_context(|| format!("starting {} for {}", self.program.display(), job.label))?;
            let bar = self.bars.add(ProgressBar::new(job.steps.max(1)));
            bar.set_style(
                ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} steps {elapsed_precise}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_message(job.label.clone());
            tracing::info!(job = %job.label, threads = self.threads, log = %log_path.display(), "worker started");
            self.running.push(Running { job, child, started: Instant::now(), bar, steps: StepCount::default() });
        }
        Ok(())
    }

    /// Runs every queued job with at most `slots` workers at a time and waits for all of them,
    /// starting none after `deadline`; `on_finished` is called as each worker ends. Returns how
    /// each ended, in the order they were queued, and how many jobs never started.
    pub fn finish(
        mut self,
        slots: usize,
        deadline: Option<Instant>,
        mut on_finished: impl FnMut(&Finished) -> Result<()>,
    ) -> Result<(Vec<Finished>, usize)> {
        let order: Vec<PathBuf> = self
            .finished
            .iter()
            .map(|f| &f.job)
            .chain(self.running.iter().map(|r| &r.job))
            .chain(self.queue.iter())
            .map(|j| j.dir.clone())
            .collect();
        loop {
            if deadline.is_none_or(|d| Instant::now() < d) {
                self.fill(slots.max(1))?;
            }
            if self.running.is_empty() {
                break;
            }
            let before = self.finished.len();
            self.poll()?;
            for f in &self.finished[before..] {
                on_finished(f)?;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let left = self.queue.len();
        let mut finished = std::mem::take(&mut self.finished);
        finished.sort_by_key(|f| order.iter().position(|d| *d == f.job.dir));
        Ok((finished, left))
    }

    /// Collects ended workers and moves the bars of running ones.
    fn poll(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.running.len() {
            let r = &mut self.running[i];
            r.bar.set_position(r.steps.update(&r.job.dir));
            match r.child.try_wait().with_context(|| format!("waiting for the worker of {}", r.job.label))? {
                Some(status) => {
                    let r = self.running.swap_remove(i);
                    let seconds = r.started.elapsed().as_secs_f64();
                    if status.success() {
                        r.bar.finish_with_message(format!("{} done", r.job.label));
                    } else {
                        r.bar.abandon_with_message(format!("{} failed", r.job.label));
                    }
                    tracing::info!(job = %r.job.label, seconds, %status, "worker ended");
                    self.finished.push(Finished { job: r.job, seconds, status });
                }
                None => i += 1,
            }
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for r in &mut self.running {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        if let Ok(mut drawn) = DRAWN.lock() {
            *drawn = None;
        }
    }
}

/// Optimiser steps a run has logged (lines of its step log), read incrementally: each poll reads
/// only what was appended since the last one.
#[derive(Default)]
struct StepCount {
    lines: u64,
    bytes: u64,
}

impl StepCount {
    fn update(&mut self, dir: &Path) -> u64 {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(dir.join(moram_cl::report::STEP_LOG)) else { return self.lines };
        let mut appended = Vec::new();
        // A resumed run truncates its log to its finished tasks first: count again from the start.
        if file.metadata().is_ok_and(|m| m.len() < self.bytes) {
            *self = StepCount::default();
        }
        if file.seek(SeekFrom::Start(self.bytes)).and_then(|_| file.read_to_end(&mut appended)).is_ok() {
            // Only whole lines: a line being written is counted once it ends.
            let whole = appended.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.lines += appended[..whole].iter().filter(|&&b| b == b'\n').count() as u64;
            self.bytes += whole as u64;
        }
        self.lines
    }
}

/// Fails, naming each failed job with the end of its log, when a worker did not succeed.
pub fn check(finished: &[Finished]) -> Result<()> {
    let failed: Vec<&Finished> = finished.iter().filter(|f| !f.status.success()).collect();
    if failed.is_empty() {
        return Ok(());
    }
    let mut message = String::new();
    for f in &failed {
        let log = f.job.dir.join(LOG_FILE);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
        message.push_str(&format!(
            "\n{} ({}) failed; the end of {}:\n{}",
            f.job.label,
            f.status,
            log.display(),
            tail.join("\n")
        ));
    }
    bail!("{} of {} runs failed:{message}", failed.len(), finished.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_counts_read_only_appended_whole_lines_and_restart_after_a_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(moram_cl::report::STEP_LOG);
        let mut count = StepCount::default();
        assert_eq!(count.update(dir.path()), 0, "no log yet");
        std::fs::write(&log, "{\"step\":0}\n{\"step\":1}\n{\"st").unwrap();
        assert_eq!(count.update(dir.path()), 2, "the unfinished line is not a step yet");
        std::fs::write(&log, "{\"step\":0}\n{\"step\":1}\n{\"step\":2}\n").unwrap();
        assert_eq!(count.update(dir.path()), 3);
        assert_eq!(count.update(dir.path()), 3, "nothing appended");
        std::fs::write(&log, "{\"step\":0}\n").unwrap();
        assert_eq!(count.update(dir.path()), 1, "a resume cut the log back");
    }
}
