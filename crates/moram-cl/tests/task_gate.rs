//! Task-gated atoms and the plasticity diagnostics on a tiny random LLaMA through the whole engine.

mod common;

use moram_cl::data::trace::{load_task_split, write_task, Example};
use moram_cl::learners::llm::LlmLearner;
use moram_cl::{Learner, RunConfig, RunOptions, RunState};
use std::path::Path;

fn run(root: &Path, method: &str, tasks: &[&str], iterations: usize) -> (RunState, LlmLearner, RunConfig) {
    let cfg_path = root.join("run.toml");
    std::fs::write(&cfg_path, common::llm_setup_tasks(root, method, iterations, tasks)).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
    let state = moram_cl::run(&mut learner, &cfg, &root.join("out"), &RunOptions::default()).unwrap();
    (state, learner, cfg)
}

fn generations(root: &Path, after: usize, task: &str) -> Vec<String> {
    let path = root.join(format!("out/outputs/after-task{after}/{task}.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_array().unwrap().iter().map(|e| e["generation"].as_str().unwrap().to_string()).collect()
}

/// Every earlier task's prompts are recognised and see exactly the atoms they had after their own
/// task: their generations never change (Half, then Flipped, its questions under another
/// instruction with the other answers, then LastWord). The gate travels with the adapter: reloading an earlier
/// checkpoint gives that row of the matrix again.
#[test]
fn task_gated_runs_keep_earlier_tasks_exactly_and_recognise_their_prompts() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped", "LastWord"];
    let (state, learner, cfg) = run(tmp.path(), "moram-task-gated", &names, 40);
    eprintln!("task-gated {:?}", state.matrix);
    let recognition = state.tasks[2].recognition.as_ref().expect("recognition recorded");
    for (i, row) in recognition.iter().enumerate() {
        assert!(row[i] >= 0.9, "task {i} recognised for {:?}", row);
    }
    // After task 0 the gate knows one task: every prompt goes to it.
    assert!(state.tasks[0].recognition.as_ref().unwrap().iter().all(|r| r == &vec![1.0]));
    for (j, name) in names.iter().enumerate().take(2) {
        for t in j + 1..3 {
            assert_eq!(state.matrix[t][j], state.matrix[j][j], "task {j} moved after task {t}: {:?}", state.matrix);
            assert_eq!(generations(tmp.path(), t, name), generations(tmp.path(), j, name), "task {j}");
        }
    }
    // The third task did learn: its atoms are open on its own prompts and its loss fell.
    let p = moram_cl::plasticity::of_task(&state.tasks[2], 2);
    assert!(p.open_share.unwrap() > 0.9 && p.loss_drop.unwrap() > 0.2, "{p:?}");

    // A fresh learner from the task-1 adapter: the gate has two tasks and the row comes back.
    let adapter = tmp.path().join("out").join(&state.adapters[1]);
    let mut fresh = LlmLearner::from_config(&cfg).unwrap();
    moram_cl::checkpoint::load_adapter(&mut fresh, &adapter).unwrap();
    assert_eq!(fresh.task_gate().unwrap().tasks(), &[0, 1]);
    let row = moram_cl::runner::evaluate_every_task(&mut fresh, &RunOptions::default()).unwrap();
    assert_eq!(row, state.matrix[1]);
    assert_eq!(learner.task_gate().unwrap().tasks(), &[0, 1, 2]);

    // The contrast: the paper's layer on the same sequence changes the first task's answers (the
    // second task's atoms take weight on its tokens).
    let faithful = tmp.path().join("faithful");
    std::fs::create_dir_all(&faithful).unwrap();
    let (m, _, _) = run(&faithful, "moram", &names, 40);
    eprintln!("moram {:?}", m.matrix);
    assert_ne!(generations(&faithful, 1, names[0]), generations(&faithful, 0, names[0]));
}

/// The constructed case where a task cannot be learned: the second task asks the first task's
/// questions (identical prompts) with the other answer. Novelty gating keeps its atoms closed on
/// tokens the first task already covers, which is all of them: the diagnostics show it and the run
/// warns. The task gate cannot tell the two tasks' prompts apart either, and says so.
#[test]
fn plasticity_diagnostics_flag_a_task_whose_inputs_are_an_earlier_tasks() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    // Writes the tiny model and the generated tasks, then "Mirror": Half's prompts, other answers.
    std::fs::write(tmp.path().join("run.toml"), common::llm_setup_tasks(tmp.path(), "moram", 1, &["Half"])).unwrap();
    let data = tmp.path().join("data");
    let flip = |v: Vec<Example>| -> Vec<Example> {
        v.into_iter().map(|e| Example { answer: if e.answer == "A" { "B".into() } else { "A".into() }, ..e }).collect()
    };
    let (train, eval) =
        (load_task_split(&data, "Half", "train").unwrap(), load_task_split(&data, "Half", "eval").unwrap());
    write_task(&data, "Mirror", &flip(train), &flip(eval)).unwrap();

    for (method, sub) in [("moram-novelty-gated", "novelty"), ("moram-task-gated", "task")] {
        let root = tmp.path().join(sub);
        std::fs::create_dir_all(&root).unwrap();
        let mut text = common::llm_setup_tasks(&root, method, 12, &["Half", "Mirror"]);
        text = text.replace("dir = \"data\"", &format!("dir = {:?}", data.display().to_string()));
        std::fs::write(root.join("run.toml"), text).unwrap();
        let cfg = RunConfig::from_file(root.join("run.toml")).unwrap();
        let mut learner = LlmLearner::from_config(&cfg).unwrap();
        let state = moram_cl::run(&mut learner, &cfg, &root.join("out"), &RunOptions::default()).unwrap();
        let p = moram_cl::plasticity::of_task(&state.tasks[1], 1);
        let warnings = moram_cl::plasticity::warnings(&state.tasks[1], 1);
        eprintln!("{method}: {p:?} {warnings:?}");
        if method == "moram-novelty-gated" {
            assert!(p.open_share.unwrap() < 0.1, "{p:?}");
            assert!(warnings.iter().any(|w| w.contains("task Mirror can barely change the model")), "{warnings:?}");
            assert!(p.basis_share.unwrap() > 0.0);
        } else {
            // Identical prompts give identical features: the gate sends them all to the first task.
            assert_eq!(p.recognised, Some(0.0), "{p:?}");
            assert!(warnings.iter().any(|w| w.contains("recognised for only 0%")), "{warnings:?}");
        }
        // The report shows the diagnostics too.
        let md = std::fs::read_to_string(root.join("out/results.md")).unwrap();
        assert!(md.contains("Plasticity"), "{md}");
    }
}

/// Multi-task training, the upper bound: one model trained once on every task's data for the whole
/// sequence's budget; every row of its matrix is that model. On Half then Flipped (the same
/// questions with the other answers under another instruction), it keeps both where SeqLoRA keeps
/// only the last.
#[test]
fn mtl_trains_one_model_on_every_task_and_repeats_its_row() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let names = ["Half", "Flipped", "LastWord"];
    let (mtl, _, _) = run(&tmp.path().join("mtl"), "mtl", &names, 40);
    let (seq, _, _) = run(&tmp.path().join("seq"), "seq-lora", &names, 40);
    eprintln!("mtl {:?}\nseq-lora {:?}", mtl.matrix, seq.matrix);
    assert_eq!(mtl.tasks.iter().map(|t| t.steps).collect::<Vec<_>>(), vec![120, 0, 0]);
    assert!(mtl.matrix.iter().all(|row| row == &mtl.matrix[0]), "{:?}", mtl.matrix);
    assert!(mtl.matrix[2][0] > seq.matrix[2][0] + 10.0, "mtl {:?} seq {:?}", mtl.matrix, seq.matrix);
    // The step log holds the one joint task's steps.
    let steps = std::fs::read_to_string(tmp.path().join("mtl/out/metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 120);
}
