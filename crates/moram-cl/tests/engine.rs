//! The runner on a constructed model: one MoRAM layer over a frozen random base, tasks whose
//! inputs live in orthogonal subspaces with different labelling rules. Checks forgetting (MoRAM
//! vs SeqLoRA), interruption, non-finite losses, resume equality and config mismatch.

use moram_cl::{Error, Learner, RunConfig, RunOptions};
use moram_core::MoramLinear;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tch::{Kind, Tensor};

const D: i64 = 16;
const SUB: i64 = 8;
const CLASSES: i64 = 2;

/// libtorch's generator is process-global: tests that reseed it must not interleave.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

struct Task {
    x: Tensor,
    y: Tensor,
    tx: Tensor,
    ty: Tensor,
}

struct LinearLearner {
    layer: MoramLinear,
    tasks: Vec<Task>,
    /// (task, step) at which the loss becomes NaN.
    nan_at: Option<(usize, usize)>,
    /// (task, call) at which the stop flag is raised.
    stop_at: Option<(usize, usize, Arc<AtomicBool>)>,
    calls: Vec<usize>,
}

/// Task `t`: inputs share the first `SUB` dimensions (N(0, 1)) plus a marker of 3 in dimension
/// `SUB + t`; the label is the sign of `m . c` for a fixed direction `m`, flipped on odd tasks. A
/// single linear map cannot hold both rules, so SeqLoRA must overwrite the old one; MoRAM can
/// route each task's inputs to its own atoms through the marker.
fn task(t: i64, n: i64, m: &Tensor) -> (Tensor, Tensor) {
    let c = Tensor::randn([n, SUB], (Kind::Float, tch::Device::Cpu));
    let x = Tensor::zeros([n, D], (Kind::Float, tch::Device::Cpu));
    x.narrow(1, 0, SUB).copy_(&c);
    let _ = x.narrow(1, SUB + t, 1).fill_(3.0);
    let score = c.matmul(m);
    let y = if t % 2 == 0 { score.gt(0.0) } else { score.le(0.0) };
    (x, y.to_kind(Kind::Int64))
}

impl LinearLearner {
    fn new(config: &RunConfig, n_tasks: i64) -> Self {
        tch::manual_seed(1234);
        let w = Tensor::randn([CLASSES, D], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let layer = MoramLinear::new(&w, None, &config.method.moram_config().unwrap()).unwrap();
        let m = Tensor::randn([SUB], (Kind::Float, tch::Device::Cpu));
        let tasks = (0..n_tasks)
            .map(|t| {
                let (x, y) = task(t, 160, &m);
                Task { x: x.narrow(0, 0, 96), y: y.narrow(0, 0, 96), tx: x.narrow(0, 96, 64), ty: y.narrow(0, 96, 64) }
            })
            .collect();
        LinearLearner { layer, tasks, nan_at: None, stop_at: None, calls: vec![0; n_tasks as usize] }
    }
}

impl Learner for LinearLearner {
    fn task_names(&self) -> Vec<String> {
        (0..self.tasks.len()).map(|t| format!("subspace-{t}")).collect()
    }
    fn train_len(&self, task: usize) -> usize {
        self.tasks[task].y.size()[0] as usize
    }
    fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
        vec![("head".into(), &self.layer)]
    }
    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
        vec![("head".into(), &mut self.layer)]
    }
    fn total_parameters(&self) -> usize {
        (D * CLASSES) as usize + self.layer.bank().parameter_count()
    }
    fn loss(&mut self, task: usize, indices: &[usize]) -> moram_cl::Result<Tensor> {
        let call = self.calls[task];
        self.calls[task] += 1;
        if let Some((t, c, flag)) = &self.stop_at {
            if *t == task && *c == call {
                flag.store(true, Ordering::SeqCst);
            }
        }
        let t = &self.tasks[task];
        let idx = Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let logits = self.layer.forward(&t.x.index_select(0, &idx))?;
        let loss = logits.cross_entropy_for_logits(&t.y.index_select(0, &idx));
        if self.nan_at.is_some_and(|(nt, ns)| nt == task && ns == call) {
            return Ok(loss * f64::NAN);
        }
        Ok(loss)
    }
    fn evaluate(&mut self, task: usize) -> moram_cl::Result<f64> {
        let t = &self.tasks[task];
        let pred = self.layer.forward(&t.tx)?.argmax(1, false);
        Ok(100.0 * pred.eq_tensor(&t.ty).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]))
    }
}

fn config(method: &str, tasks: usize) -> RunConfig {
    let text = format!(
        r#"
name = "linear-{method}"
seed = 5
[method]
name = "{method}"
r = 4
top_k = 4
[optimizer]
lr = 0.05
betas = [0.9, 0.999]
schedule = "cosine"
[training]
iterations = 200
batch_size = 16
micro_batch_size = 8
clip_grad_norm = 5.0
"#
    );
    let mut c = RunConfig::from_toml_str(&text, Path::new("test.toml")).unwrap();
    c.name = format!("{}-{tasks}", c.name);
    c
}

fn run(method: &str, tasks: i64, dir: &Path) -> moram_cl::RunState {
    let cfg = config(method, tasks as usize);
    let mut l = LinearLearner::new(&cfg, tasks);
    moram_cl::run(&mut l, &cfg, dir, &RunOptions::default()).unwrap()
}

#[test]
fn moram_forgets_less_than_seq_lora_on_conflicting_subspaces() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let m = run("moram", 3, &tmp.path().join("moram"));
    let s = run("seq-lora", 3, &tmp.path().join("seq"));
    let forget = |a: &Vec<Vec<f64>>| moram_cl::metrics::forgetting(a).unwrap();
    let (fm, fs) = (forget(&m.matrix), forget(&s.matrix));
    eprintln!("moram {:?}\nseq-lora {:?}\nforgetting {fm:.1} vs {fs:.1}", m.matrix, s.matrix);
    // Both learn each task when it is trained.
    for a in [&m.matrix, &s.matrix] {
        for (j, row) in a.iter().enumerate() {
            assert!(row[j] > 60.0, "task {j} not learned: {a:?}");
        }
    }
    assert!(fs - fm >= 10.0, "MoRAM forgetting {fm:.1} is not clearly below SeqLoRA's {fs:.1}");
}

#[test]
fn interrupted_then_resumed_equals_uninterrupted() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let full = run("moram", 3, &tmp.path().join("full"));

    let cfg = config("moram", 3);
    let dir = tmp.path().join("cut");
    let flag = Arc::new(AtomicBool::new(false));
    let mut l = LinearLearner::new(&cfg, 3);
    l.stop_at = Some((1, 30, flag.clone()));
    let err = moram_cl::run(&mut l, &cfg, &dir, &RunOptions { stop: Some(flag), progress: false }).unwrap_err();
    assert!(matches!(err, Error::Interrupted { task: 1, done: 1, .. }), "{err}");
    assert!(err.to_string().contains("resume"));

    // A fresh process: a new learner (same base) continues from the checkpoint of task 0.
    let mut l2 = LinearLearner::new(&cfg, 3);
    let resumed = moram_cl::resume(&mut l2, &cfg, &dir, &RunOptions::default()).unwrap();
    assert_eq!(resumed.matrix, full.matrix);
    for t in 0..3 {
        let load = |d: &Path| {
            moram_core::AdapterFile::load(d.join(format!("adapter-task{t}.safetensors")), tch::Device::Cpu).unwrap()
        };
        let (a, b) = (load(&tmp.path().join("full")), load(&dir));
        let (ba, bb) = (a.bank("head").unwrap(), b.bank("head").unwrap());
        assert!(ba.keys_tensor().equal(&bb.keys_tensor()) && ba.values_tensor().equal(&bb.values_tensor()), "task {t}");
    }
    let steps = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 3 * 200, "step log of the interrupted task is replaced, not duplicated");

    // Resuming with another config is refused, naming the fields.
    let mut other = cfg.clone();
    other.optimizer.lr = 0.02;
    other.training.batch_size = 8;
    let err = moram_cl::resume(&mut LinearLearner::new(&other, 3), &other, &dir, &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("optimizer.lr (run 0.05, given 0.02)") && msg.contains("training.batch_size (run 16, given 8)"),
        "{msg}"
    );
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config("moram", 3);
    let dir = tmp.path().join("nan");
    let mut l = LinearLearner::new(&cfg, 3);
    l.nan_at = Some((1, 10));
    let err = moram_cl::run(&mut l, &cfg, &dir, &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("non-finite loss NaN in task 1 (`subspace-1`) at step 5"), "{msg}");
    let state = moram_cl::RunState::load(&dir).unwrap();
    assert_eq!(state.tasks_done(), 1);
    assert!(dir.join("adapter-task0.safetensors").exists() && !dir.join("adapter-task1.safetensors").exists());
    moram_core::AdapterFile::load(dir.join("adapter-task0.safetensors"), tch::Device::Cpu).unwrap();
}

#[test]
fn pruning_reports_storage_and_metric_change() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config("moram", 2);
    cfg.pruning.enabled = true;
    cfg.pruning.share = 0.9;
    let mut l = LinearLearner::new(&cfg, 2);
    let state = moram_cl::run(&mut l, &cfg, tmp.path(), &RunOptions::default()).unwrap();
    for t in &state.tasks {
        let p = t.prune.as_ref().unwrap();
        assert!(p.atoms_after <= p.atoms_before && p.parameters_after <= p.parameters_before, "{p:?}");
        assert_eq!(p.parameters_before - p.parameters_after, (p.atoms_before - p.atoms_after) * (D + CLASSES) as usize);
        assert!(p.metric_before.is_finite() && p.metric_after.is_finite());
    }
    let md = std::fs::read_to_string(tmp.path().join("results.md")).unwrap();
    assert!(md.contains("atoms 4 -> "), "{md}");
}
