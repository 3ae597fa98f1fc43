//! The baselines behind the method seam: replay (its buffer, what it keeps, resume) and EWC (its
//! Fisher and penalty as the official TRACE code computes them).

mod common;

use moram_cl::learners::llm::LlmLearner;
use moram_cl::methods::ewc::EwcHooks;
use moram_cl::methods::{RunHooks, TaskRun};
use moram_cl::{Learner, RunConfig, RunOptions, RunState};
use std::path::Path;
use tch::{Kind, Tensor};

fn run(root: &Path, method: &str, tasks: &[&str], iterations: usize, sets: &[&str]) -> RunState {
    std::fs::write(root.join("run.toml"), common::llm_setup_tasks(root, method, iterations, tasks)).unwrap();
    let mut cfg = RunConfig::from_file(root.join("run.toml")).unwrap();
    cfg.set_all(sets).unwrap();
    // The learner every CLI run builds, so that a hook the enum fails to delegate shows here.
    let mut learner = moram_cl::learners::build(&cfg).unwrap();
    moram_cl::run(&mut learner, &cfg, &root.join("out"), &RunOptions::default()).unwrap()
}

/// Replay keeps a seeded draw of each finished task's trained examples, in the run folder only,
/// mixes them into later batches, and keeps earlier tasks where SeqLoRA keeps nothing (Half,
/// Flipped: the same questions with the other answers, then LastWord). A run stopped after a task resumes with the same
/// buffer and ends as the uninterrupted run.
#[test]
fn replay_keeps_a_buffer_in_the_run_folder_and_forgets_less_than_seq_lora() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped", "LastWord"];
    let (seq_root, replay_root) = (dir(tmp.path(), "seq"), dir(tmp.path(), "replay"));
    let seq = run(&seq_root, "seq-lora", &names, 40, &[]);
    let replay = run(&replay_root, "replay", &names, 40, &["method.replay_examples=8", "method.replay_per_step=2"]);
    eprintln!("seq-lora {:?}\nreplay {:?}", seq.matrix, replay.matrix);
    // After the third task SeqLoRA has nothing left of the first two; replay keeps part of both.
    let kept = |s: &RunState| s.matrix[2][0] + s.matrix[2][1];
    assert!(kept(&replay) > kept(&seq) + 40.0, "replay {:?} seq {:?}", replay.matrix, seq.matrix);
    let buffer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(replay_root.join("out/replay-task1.json")).unwrap()).unwrap();
    let pairs: Vec<(usize, usize)> = serde_json::from_value(buffer["buffer"].clone()).unwrap();
    assert_eq!(pairs.len(), 16, "8 of each finished task");
    assert!(pairs[..8].iter().all(|p| p.0 == 0) && pairs[8..].iter().all(|p| p.0 == 1), "{pairs:?}");
    let adapter =
        moram_core::AdapterFile::load(replay_root.join("out/adapter-task1.safetensors"), tch::Device::Cpu).unwrap();
    assert!(adapter.metadata.values().all(|v| !v.contains("Which half")), "no example text in the adapter");

    let resumed = resume_without_last_task(&replay_root);
    assert_eq!(resumed.matrix, replay.matrix, "a resumed run replays the same buffer");
}

/// Resumes a copy of the run folder `root/out` whose last task was dropped, as if the run had been
/// stopped before it; returns the resumed run's state. The copy lies beside the original, so the
/// paths the stored config keeps relative still resolve.
fn resume_without_last_task(root: &Path) -> RunState {
    let copy = root.join("resumed");
    copy_dir(&root.join("out"), &copy);
    let mut state = RunState::load(&copy).unwrap();
    state.matrix.pop();
    state.tasks.pop();
    state.adapters.pop();
    state.save(&copy).unwrap();
    let cfg = moram_cl::checkpoint::read_config(&copy).unwrap();
    let mut learner = moram_cl::learners::build(&cfg).unwrap();
    moram_cl::resume(&mut learner, &cfg, &copy, &RunOptions::default()).unwrap()
}

/// `parent/name`, created.
fn dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every optimiser step's logged loss of the run in `root/out`, in order.
fn step_losses(root: &Path) -> Vec<f64> {
    std::fs::read_to_string(root.join("out/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"].as_f64().unwrap())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// EWC's Fisher and penalty against the official code's formulas, computed by hand on a LoRA whose
/// gradients are set: F = sum over steps of g^2 / steps (summed over tasks), penalty
/// `lambda / 2 * sum F (p - p_prev)^2` from the second task on.
#[test]
fn ewc_accumulates_the_fisher_and_penalises_moving_away_from_the_previous_task() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("run.toml"), common::llm_setup_tasks(tmp.path(), "ewc", 2, &["Half", "Count"]))
        .unwrap();
    let cfg = RunConfig::from_file(tmp.path().join("run.toml")).unwrap();
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
    for (_, m) in learner.moram_layers_mut() {
        m.bank_mut().begin_task(0).unwrap();
    }
    let lens = [learner.train_len(0), learner.train_len(1)];
    let mut hooks = EwcHooks::new(400.0);
    let params_of = |l: &LlmLearner| moram_cl::learner::trainable_tensors(l);
    hooks
        .before_task(&mut TaskRun {
            learner: &mut learner,
            config: &cfg,
            task: 0,
            lens: &lens,
            progress: false,
            trained: &[],
        })
        .unwrap();
    assert!(hooks.penalty(&learner, 1.0).unwrap().is_none(), "no penalty during the first task");
    // Two steps with gradients 1 and 3 on every element: F = (1 + 9) / 2 = 5.
    for g in [1.0, 3.0] {
        for p in params_of(&learner) {
            let loss = (&p * g).sum(Kind::Float);
            loss.backward();
        }
        hooks.after_step(&mut learner);
        for mut p in params_of(&learner) {
            p.zero_grad();
        }
    }
    assert!(hooks.fisher().iter().all(|f| (f - 5.0).abs().max().double_value(&[]) < 1e-5));
    hooks
        .after_task(&mut TaskRun {
            learner: &mut learner,
            config: &cfg,
            task: 0,
            lens: &lens,
            progress: false,
            trained: &[0],
        })
        .unwrap();
    // Move every parameter by 0.5: penalty = 400 / 2 * 5 * 0.25 * n.
    let n: i64 = params_of(&learner).iter().map(|p| p.numel() as i64).sum();
    tch::no_grad(|| {
        for mut p in params_of(&learner) {
            let _ = p.g_add_scalar_(0.5);
        }
    });
    let penalty = hooks.penalty(&learner, 1.0).unwrap().unwrap().double_value(&[]);
    let want = 200.0 * 5.0 * 0.25 * n as f64;
    assert!((penalty - want).abs() / want < 1e-5, "{penalty} vs {want}");
    // Saved and read back, the state gives the same penalty.
    hooks.save(tmp.path(), 0).unwrap();
    let mut back = EwcHooks::new(400.0);
    back.resume(tmp.path(), 1).unwrap();
    let again = back.penalty(&learner, 1.0).unwrap().unwrap().double_value(&[]);
    assert!((again - penalty).abs() < 1e-3 * penalty);
}

/// An EWC run trains every task, keeps its state per task in the run folder, and differs from
/// SeqLoRA from the second task on (the penalty acts), not before.
#[test]
fn an_ewc_run_keeps_its_state_per_task_and_acts_from_the_second_task() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped"];
    let (seq_root, ewc_root) = (dir(tmp.path(), "seq"), dir(tmp.path(), "ewc"));
    let seq = run(&seq_root, "seq-lora", &names, 12, &[]);
    let ewc = run(&ewc_root, "ewc", &names, 12, &["method.ewc_lambda=1e6"]);
    assert!(ewc_root.join("out/ewc-task0.safetensors").exists() && ewc_root.join("out/ewc-task1.safetensors").exists());
    let (a, b) = (step_losses(&seq_root), step_losses(&ewc_root));
    assert_eq!(a[..12], b[..12], "the first task trains as SeqLoRA");
    assert!(a[13..].iter().zip(&b[13..]).any(|(x, y)| (x - y).abs() > 1e-6), "the penalty changed nothing");
    assert_eq!(ewc.matrix[0], seq.matrix[0]);
}

/// LwF trains the first task exactly as SeqLoRA (there is no old model yet), then, distilled
/// towards the model as it was before the task, keeps the first task's answers on the second
/// task's inputs where SeqLoRA overwrites them (Half, then Flipped: the same questions wanting
/// the other answers, so keeping one costs the other). A run stopped after the first task resumes
/// (its teacher is the adapter it loads) and ends as the uninterrupted run.
#[test]
fn an_lwf_run_trains_the_first_task_as_seq_lora_and_then_holds_the_old_answers() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped"];
    let (seq_root, lwf_root) = (dir(tmp.path(), "seq"), dir(tmp.path(), "lwf"));
    let seq = run(&seq_root, "seq-lora", &names, 40, &[]);
    let lwf = run(&lwf_root, "lwf", &names, 40, &["method.lwf_lambda=500"]);
    eprintln!("seq-lora {:?}\nlwf {:?}", seq.matrix, lwf.matrix);
    let (a, b) = (step_losses(&seq_root), step_losses(&lwf_root));
    assert_eq!(a[..40], b[..40], "the first task trains as SeqLoRA");
    assert_eq!(lwf.matrix[0], seq.matrix[0]);
    assert!(lwf.matrix[1][0] > seq.matrix[1][0] + 25.0, "lwf {:?} seq {:?}", lwf.matrix, seq.matrix);
    assert!(lwf.matrix[1][0] >= 0.8 * lwf.matrix[0][0], "keeps most of Half: {:?}", lwf.matrix);
    assert!(lwf.matrix[1][1] < seq.matrix[1][1], "keeping Half costs Flipped: {:?} vs {:?}", lwf.matrix, seq.matrix);

    let resumed = resume_without_last_task(&lwf_root);
    assert_eq!(resumed.matrix, lwf.matrix, "a resumed LwF run distils from the same teacher");
}

/// An LwF setting on another method, or a temperature that is not positive, is refused by name.
#[test]
fn lwf_settings_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("run.toml"), common::llm_setup_tasks(tmp.path(), "seq-lora", 2, &["Half"])).unwrap();
    let mut cfg = RunConfig::from_file(tmp.path().join("run.toml")).unwrap();
    let err = cfg.set_all(&["method.lwf_lambda=2"]).map(|_| ()).and_then(|_| cfg.layer_config().map(|_| ()));
    assert!(format!("{:?}", err.unwrap_err()).contains("method.lwf_lambda"));
    let mut cfg = RunConfig::from_file(tmp.path().join("run.toml")).unwrap();
    cfg.set_all(&["method.name=lwf", "method.lwf_temperature=0"]).unwrap();
    let err = moram_cl::methods::start_hooks(&cfg).map(|_| ()).unwrap_err();
    assert!(err.to_string().contains("method.lwf_temperature"), "{err}");
}

/// InfLoRA designs each task's keys before it and never trains them: every task's keys are
/// orthonormal rows scaled by 1/sqrt(3) (singular vectors, not a random draw moved by training),
/// the second task's keys lie outside the subspace grown after the first, the subspace grows
/// after each task, and the values still learn.
#[test]
fn an_inflora_run_designs_fixed_keys_outside_earlier_tasks_inputs() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let state = run(tmp.path(), "inf-lora", &["Half", "LastWord"], 24, &[]);
    eprintln!("inf-lora {:?}", state.matrix);
    // Only the values train, and they do: the first task's training loss falls tenfold.
    let first: Vec<f64> = std::fs::read_to_string(tmp.path().join("out/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["task"] == 0)
        .map(|v| v["loss"].as_f64().unwrap())
        .collect();
    assert_eq!(first.len(), 24);
    let (start, end) = (first[..4].iter().sum::<f64>() / 4.0, first[20..].iter().sum::<f64>() / 4.0);
    assert!(end < start / 10.0, "task 1's loss went from {start} to {end}");
    let adapter =
        moram_core::AdapterFile::load(tmp.path().join("out/adapter-task1.safetensors"), tch::Device::Cpu).unwrap();
    let mut checked = 0;
    for name in adapter.layer_names() {
        let bank = adapter.bank(name).unwrap();
        let keys = bank.keys_tensor();
        let r = bank.config().r as i64;
        for task in 0..2 {
            let k = keys.narrow(0, task * r, r);
            let gram = k.mm(&k.tr()) * 3.0 - Tensor::eye(r, (Kind::Float, tch::Device::Cpu));
            assert!(gram.abs().max().double_value(&[]) < 1e-4, "{name} task {task}: keys are not as designed");
        }
        let m0 = bank.atom_basis()[r as usize];
        let width = bank.key_basis().size()[1];
        assert!(m0 > 0 && width > m0 as i64, "{name}: the subspace grows after each task ({m0}, then {width})");
        let old = bank.key_basis().narrow(1, 0, m0 as i64);
        let overlap = keys.narrow(0, r, r).mm(&old).abs().max().double_value(&[]);
        assert!(overlap < 1e-4, "{name}: task 2's keys reach into task 1's subspace ({overlap})");
        checked += 1;
    }
    assert!(checked > 0);
}

/// TreeLoRA trains the first task exactly as IncLoRA (no earlier task to compare with), keeps each
/// finished task's mean keys in the run folder, builds its tree from them, and from the second
/// task on acts on `r = -sum_l <A_l, G_0[l]>`: its term's gradient is that of `-c ln|r|`, so with
/// a strong weight `|r|` ends larger than IncLoRA's (the official code's behaviour, see
/// `docs/method.md`). A resumed run ends as the uninterrupted one.
#[test]
fn a_tree_lora_run_grows_the_keys_inner_product_with_earlier_tasks_and_resumes() {
    use moram_cl::methods::tree_lora::TreeLoraHooks;
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped", "LastWord"];
    let (inc_root, tree_root) = (dir(tmp.path(), "inc"), dir(tmp.path(), "tree"));
    let inc = run(&inc_root, "inc-lora", &names, 12, &[]);
    let tree = run(&tree_root, "tree-lora", &names, 12, &["method.tree_reg=20"]);
    let (a, b) = (step_losses(&inc_root), step_losses(&tree_root));
    assert_eq!(a[..12], b[..12], "the first task trains as IncLoRA");
    assert_eq!(tree.matrix[0], inc.matrix[0]);
    assert!(a[13..24].iter().zip(&b[13..24]).any(|(x, y)| (x - y).abs() > 1e-6), "the term changed nothing");

    // The state after task 1: both tasks' mean keys, one vector per adapted layer (6).
    let mut hooks = TreeLoraHooks::new(0.5, 3);
    hooks.resume(&tree_root.join("out"), 2).unwrap();
    assert_eq!(hooks.means().len(), 2);
    assert!(hooks.means().iter().all(|layers| layers.len() == 6));
    let root = hooks.root().expect("two tasks split at the root");
    assert_eq!(root.left.0.len() + root.right.0.len(), 2);

    // Task 1's keys against task 0's mean keys: |r| grows under TreeLoRA.
    // The means are in the model's layer order (the learner's), the file's layers sorted by name.
    let cfg = moram_cl::checkpoint::read_config(&tree_root.join("out")).unwrap();
    let order: Vec<String> =
        LlmLearner::for_generation(&cfg).unwrap().moram_layers().into_iter().map(|(n, _)| n).collect();
    let alignment = |root: &Path| {
        let file = moram_core::AdapterFile::load(root.join("out/adapter-task1.safetensors"), tch::Device::Cpu).unwrap();
        let mut total = 0.0;
        for (l, name) in order.iter().enumerate() {
            let keys = file.bank(name).unwrap().keys_tensor();
            let rows = keys.size()[0];
            let task1 = keys.narrow(0, rows / 2, rows / 2).reshape([-1]);
            total -= task1.dot(&hooks.means()[0][l]).double_value(&[]);
        }
        total
    };
    let (with_tree, without) = (alignment(&tree_root), alignment(&inc_root));
    assert!(with_tree.abs() > 2.0 * without.abs(), "TreeLoRA r = {with_tree}, IncLoRA r = {without}");

    let resumed = resume_without_last_task(&tree_root);
    assert_eq!(resumed.matrix, tree.matrix, "a resumed TreeLoRA run rebuilds the same state");
}
