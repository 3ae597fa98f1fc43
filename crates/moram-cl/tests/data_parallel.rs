//! Failures in a data-parallel run (two Gloo workers over 127.0.0.1 on a tiny random LLaMA): a
//! non-finite loss on one rank, or a rank killed mid-task, stops every rank within the timeout
//! with an error that names the rank; rank 0 alone has written the folder (each step logged once,
//! each checkpoint once), and the run resumed on two workers ends with the atoms of an
//! uninterrupted two-worker run.
//!
//! The workers are this test binary again, running the `#[ignore]`d `worker` test, which wraps the
//! learner so that a chosen rank fails at a chosen training step.

use moram_cl::learner::Learner;
use moram_cl::learners::AnyLearner;
use moram_cl::synthetic::{write_tiny_llama, write_trace_tasks, TinyLlama};
use moram_cl::{RunConfig, RunOptions};
use moram_core::MoramLinear;
use moram_dist::launch::{run_local, LocalLaunch, Outcome};
use moram_dist::{Backend, Group};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::Tensor;

const ITERATIONS: usize = 5;

/// The learner with a fault: on `rank`, the `call`-th loss of task `task` is NaN (`nan`) or the
/// process exits at once as a killed one would (`exit`).
struct Faulty {
    inner: AnyLearner,
    fault: Option<(String, usize, usize)>,
    calls: Vec<usize>,
}

impl Learner for Faulty {
    fn task_names(&self) -> Vec<String> {
        self.inner.task_names()
    }
    fn train_len(&self, task: usize) -> usize {
        self.inner.train_len(task)
    }
    fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
        self.inner.moram_layers()
    }
    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
        self.inner.moram_layers_mut()
    }
    fn total_parameters(&self) -> usize {
        self.inner.total_parameters()
    }
    fn loss(&mut self, task: usize, indices: &[usize]) -> moram_cl::Result<Tensor> {
        self.calls.resize(self.calls.len().max(task + 1), 0);
        self.calls[task] += 1;
        let loss = self.inner.loss(task, indices)?;
        match &self.fault {
            Some((kind, t, call)) if *t == task && *call == self.calls[task] => match kind.as_str() {
                "nan" => Ok(loss * f64::NAN),
                _ => std::process::exit(9),
            },
            _ => Ok(loss),
        }
    }
    fn evaluate(&mut self, task: usize) -> moram_cl::Result<f64> {
        self.inner.evaluate(task)
    }
    fn eval_len(&self, task: usize) -> Option<usize> {
        self.inner.eval_len(task)
    }
    fn evaluate_examples(
        &mut self,
        task: usize,
        range: std::ops::Range<usize>,
    ) -> moram_cl::Result<Vec<(f64, serde_json::Value)>> {
        self.inner.evaluate_examples(task, range)
    }
}

#[test]
#[ignore = "worker process of the data-parallel failure tests"]
fn worker() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let group = Group::from_env(Backend::Gloo).expect("group");
    let rank = group.rank();
    let dir = PathBuf::from(var("MORAM_TEST_RUN"));
    let config = RunConfig::from_file(var("MORAM_TEST_CONFIG")).expect("config");
    let fault = var("MORAM_TEST_FAULT");
    let fault = match fault.split(':').collect::<Vec<_>>().as_slice() {
        [kind, r, t, call] if r.parse::<usize>().ok() == Some(rank) => {
            Some((kind.to_string(), t.parse().unwrap(), call.parse().unwrap()))
        }
        _ => None,
    };
    let mut learner = Faulty { inner: moram_cl::learners::build(&config).expect("learner"), fault, calls: Vec::new() };
    let options = RunOptions { stop: None, progress: false, group: Some(Arc::new(group)) };
    let result = if var("MORAM_TEST_MODE") == "resume" {
        moram_cl::resume(&mut learner, &config, &dir, &options)
    } else {
        moram_cl::run(&mut learner, &config, &dir, &options)
    };
    let message = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    std::fs::write(PathBuf::from(var("MORAM_TEST_OUT")).join(format!("rank{rank}.txt")), &message).unwrap();
    result.expect("run");
}

fn setup(root: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    write_tiny_llama(&root.join("model"), &repo.join("tests/fixtures/llm/tokenizer"), TinyLlama::default(), 3).unwrap();
    write_trace_tasks(&root.join("data"), &[("A", "last-word"), ("B", "count")], 16, 4, 2).unwrap();
    let config = format!(
        r#"
name = "dp-faults"
seed = 4
[method]
name = "moram"
profile = "trace_paper"
r = 2
top_k = 2
[optimizer]
kind = "adam"
lr = 0.01
schedule = "constant"
[training]
iterations = {ITERATIONS}
batch_size = 4
micro_batch_size = 2
[generation]
max_new_tokens = 2
max_prompt_tokens = 64
max_answer_tokens = 16
[model]
kind = "llm"
path = "{model}"
device = "cpu"
targets = {{ modules = ["q_proj"] }}
[data]
format = "trace"
dir = "{data}"
tasks = ["A", "B"]
eval_split = "eval"
"#,
        model = root.join("model").display(),
        data = root.join("data").display(),
    );
    let path = root.join("run.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Two workers on `run` (train or resume), with an optional fault; returns how they ended and
/// what each reported.
fn launch(config: &Path, run: &Path, mode: &str, fault: &str) -> (Outcome, Vec<String>) {
    let out = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let args = ["--ignored", "--exact", "worker", "--nocapture", "--test-threads=1"].map(String::from).to_vec();
    let mut launch = LocalLaunch::new(2);
    launch.envs = [
        ("MORAM_TEST_CONFIG", config.display().to_string()),
        ("MORAM_TEST_RUN", run.display().to_string()),
        ("MORAM_TEST_MODE", mode.to_string()),
        ("MORAM_TEST_FAULT", fault.to_string()),
        ("MORAM_TEST_OUT", out.path().display().to_string()),
        ("MORAM_DIST_TIMEOUT", "30".to_string()),
        ("OMP_NUM_THREADS", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    launch.log_dir = Some(out.path().to_path_buf());
    launch.grace = Duration::from_secs(45);
    launch.limit = Some(Duration::from_secs(180));
    let outcome = run_local(&exe, &args, &launch).unwrap();
    let messages =
        (0..2).map(|r| std::fs::read_to_string(out.path().join(format!("rank{r}.txt"))).unwrap_or_default()).collect();
    (outcome, messages)
}

fn tasks_done(run: &Path) -> usize {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    state["matrix"].as_array().unwrap().len()
}

/// Every step of the finished tasks logged exactly once.
fn assert_steps_logged_once(run: &Path, tasks: usize) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut seen: Vec<(u64, u64)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| (v["task"].as_u64().unwrap(), v["step"].as_u64().unwrap()))
        .filter(|(t, _)| (*t as usize) < tasks)
        .collect();
    let n = seen.len();
    seen.dedup();
    assert_eq!(n, seen.len(), "a step was logged twice");
    assert_eq!(n, tasks * ITERATIONS);
}

fn assert_same_atoms(a: &Path, b: &Path) {
    for t in 0..2 {
        let file = |d: &Path| std::fs::read(d.join(format!("adapter-task{t}.safetensors"))).unwrap();
        assert!(file(a) == file(b), "adapter-task{t}.safetensors differs");
    }
}

fn check_failure_and_resume(fault: &str, expected: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let clean = tmp.path().join("clean");
    let (outcome, messages) = launch(&config, &clean, "train", "");
    assert_eq!(outcome.first_failure, None, "{messages:?}");
    assert_eq!(messages, ["ok", "ok"]);
    assert_steps_logged_once(&clean, 2);

    let cut = tmp.path().join("cut");
    let start = Instant::now();
    let (outcome, messages) = launch(&config, &cut, "train", fault);
    assert!(outcome.statuses.iter().all(|s| !s.success()), "every rank fails: {outcome:?} {messages:?}");
    assert!(start.elapsed() < Duration::from_secs(90), "took {:?}", start.elapsed());
    assert!(messages[0].contains(expected), "rank 0 said: {}", messages[0]);
    assert_eq!(tasks_done(&cut), 1, "task 0 is kept");
    assert!(cut.join("adapter-task0.safetensors").exists());
    assert!(!cut.join("adapter-task1.safetensors").exists());
    assert_steps_logged_once(&cut, 1);

    let (outcome, messages) = launch(&config, &cut, "resume", "");
    assert_eq!(outcome.first_failure, None, "{messages:?}");
    assert_eq!(tasks_done(&cut), 2);
    assert_steps_logged_once(&cut, 2);
    assert_same_atoms(&clean, &cut);
}

#[test]
fn a_non_finite_loss_on_one_rank_stops_every_rank_then_the_run_resumes() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    // Rank 1's third loss of task B (its second step) is NaN.
    check_failure_and_resume("nan:1:1:3", "on rank(s) [1] of 2");
}

#[test]
fn a_killed_rank_is_named_by_the_others_then_the_run_resumes() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    check_failure_and_resume("exit:1:1:3", "rank 1 stopped");
}
