//! A 3-task run of a tiny random LLaMA through the whole engine: matrix, frozen atoms, outputs.

mod common;

use moram_cl::learners::llm::LlmLearner;
use moram_cl::{Learner, RunConfig, RunOptions};
use moram_core::AdapterFile;
use tch::Device;

#[test]
fn three_task_llm_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("run.toml");
    std::fs::write(&cfg_path, common::llm_setup(tmp.path(), "moram", 6)).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    let moram = cfg.method.moram_config().unwrap();
    let mut learner =
        LlmLearner::from_config(cfg.model.as_ref().unwrap(), cfg.data.as_ref().unwrap(), &moram, &cfg.generation, None)
            .unwrap();
    let out = tmp.path().join("out");
    let state = moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap();

    assert_eq!(state.matrix.len(), 3);
    assert!(state.matrix.iter().all(|r| r.len() == 3 && r.iter().all(|v| (0.0..=100.0).contains(v))));
    // 6 steps per task, r = 4 atoms per task on 3 modules x 2 layers.
    assert!(state.tasks.iter().all(|t| t.steps == 6 && t.final_loss.is_finite()));
    assert_eq!(state.tasks.iter().map(|t| t.atoms).collect::<Vec<_>>(), vec![24, 48, 72]);
    // q (64->64), v (64->32), down (128->64), per layer, r = 4: 4*(128 + 96 + 192) * 2 = 3328.
    assert!(state.tasks.iter().all(|t| t.trainable_parameters == 3328), "{:?}", state.tasks);

    // Atoms of task 0 are bit-identical in every later checkpoint (frozen means frozen).
    let a0 = AdapterFile::load(out.join("adapter-task0.safetensors"), Device::Cpu).unwrap();
    let a2 = AdapterFile::load(out.join("adapter-task2.safetensors"), Device::Cpu).unwrap();
    for layer in a0.layer_names() {
        let (b0, b2) = (a0.bank(layer).unwrap(), a2.bank(layer).unwrap());
        let k0 = b0.keys_tensor();
        assert!(b2.keys_tensor().narrow(0, 0, 4).equal(&k0), "{layer} keys moved");
        assert!(b2.values_tensor().narrow(1, 0, 4).equal(&b0.values_tensor()), "{layer} values moved");
        assert!(b0.values_tensor().abs().sum(tch::Kind::Float).double_value(&[]) > 0.0, "{layer} never trained");
    }
    for f in ["state.json", "config.toml", "results.json", "results.csv", "results.md", "metrics.jsonl"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let steps = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 18);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert!(results["summary"]["trace"]["op"].is_number());
    assert_eq!(learner.task_names(), vec!["LastWord", "Count", "Half"]);
    // A second run into the same folder is refused rather than overwriting finished work.
    let err = moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("already holds a run"), "{err}");
}

/// Manual exploration: prints both methods' matrices (`cargo test -- --ignored --nocapture`).
#[test]
#[ignore]
fn explore_methods() {
    for method in ["moram", "seq-lora"] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg_path = tmp.path().join("run.toml");
        let iters: usize = std::env::var("ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
        let tasks: Vec<String> =
            std::env::var("TASKS").unwrap_or("LastWord,Count,Half".into()).split(',').map(String::from).collect();
        let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
        std::fs::write(&cfg_path, common::llm_setup_tasks(tmp.path(), method, iters, &tasks)).unwrap();
        let cfg = RunConfig::from_file(&cfg_path).unwrap();
        let moram = cfg.method.moram_config().unwrap();
        let mut learner = LlmLearner::from_config(
            cfg.model.as_ref().unwrap(),
            cfg.data.as_ref().unwrap(),
            &moram,
            &cfg.generation,
            None,
        )
        .unwrap();
        let out = tmp.path().join("out");
        moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap();
        println!("{}", std::fs::read_to_string(out.join("results.md")).unwrap());
    }
}
