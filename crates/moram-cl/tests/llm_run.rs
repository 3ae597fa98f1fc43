//! A 3-task run of a tiny random LLaMA through the whole engine: matrix, frozen atoms, outputs.

mod common;

use moram_cl::learners::llm::LlmLearner;
use moram_cl::{Learner, RunConfig, RunOptions};
use moram_core::AdapterFile;
use tch::Device;

#[test]
fn three_task_llm_run() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("run.toml");
    std::fs::write(&cfg_path, common::llm_setup(tmp.path(), "moram", 6)).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
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
    let err = moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap_err();
    assert!(matches!(err, moram_cl::Error::RunExists { ref dir } if dir == &out), "{err}");
}

/// Manual exploration: prints both methods' matrices (`cargo test -- --ignored --nocapture`).
#[test]
#[ignore]
fn explore_methods() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    for method in ["moram", "seq-lora"] {
        let tmp = tempfile::tempdir().unwrap();
        let cfg_path = tmp.path().join("run.toml");
        let iters: usize = std::env::var("ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
        let tasks: Vec<String> =
            std::env::var("TASKS").unwrap_or("LastWord,Count,Half".into()).split(',').map(String::from).collect();
        let tasks: Vec<&str> = tasks.iter().map(String::as_str).collect();
        std::fs::write(&cfg_path, common::llm_setup_tasks(tmp.path(), method, iters, &tasks)).unwrap();
        let cfg = RunConfig::from_file(&cfg_path).unwrap();
        let mut learner = LlmLearner::from_config(&cfg).unwrap();
        let out = tmp.path().join("out");
        moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap();
        println!("{}", std::fs::read_to_string(out.join("results.md")).unwrap());
    }
}

/// Protocol 4.4: BOS + tokens(prompt + answer) + EOS, and the labels are the answer's tokens + EOS
/// (counted from the end); over-long pairs keep their tail and get no BOS/EOS.
#[test]
fn training_sequences_follow_the_trace_collator() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("run.toml");
    std::fs::write(&cfg_path, common::llm_setup(tmp.path(), "moram", 1)).unwrap();
    let mut cfg = RunConfig::from_file(&cfg_path).unwrap();
    let l = LlmLearner::from_config(&cfg).unwrap();
    let tok = l.tokenizer();
    let (bos, eos) = (tok.bos.unwrap(), tok.eos[0]);
    let ex = moram_cl::data::trace::Example { prompt: "Count: dog fox\nAnswer:\n".into(), answer: "2".into() };
    let (seq, n) = l.training_sequence("Count", &ex).unwrap();
    let body = tok.encode_plain("Count: dog fox\nAnswer:\n2").unwrap();
    assert_eq!(seq.first(), Some(&bos));
    assert_eq!(&seq[1..seq.len() - 1], &body[..]);
    assert_eq!(seq.last(), Some(&eos));
    assert_eq!(n, tok.encode_plain("2").unwrap().len() + 1);
    // Limit 64 + 16 = 80 tokens: a long prompt keeps its tail, without BOS or EOS.
    cfg.generation.max_prompt_tokens = 4;
    cfg.generation.max_answer_tokens = 2;
    let l = LlmLearner::from_config(&cfg).unwrap();
    let (seq, _) = l.training_sequence("Count", &ex).unwrap();
    assert_eq!(seq, body[body.len() - 6..].to_vec());
}

/// bf16 base weights with f32 atoms: training moves the atoms, the loss goes down, frozen atoms
/// stay put, outputs stay finite.
#[test]
fn bf16_base_trains_f32_atoms() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("run.toml");
    let text = common::llm_setup_tasks(tmp.path(), "moram", 30, &["Half", "Low"])
        .replace("path = \"model\"", "path = \"model\"\ndtype = \"bf16\"");
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    assert_eq!(cfg.model.as_ref().unwrap().dtype, moram_cl::config::BaseDtype::Bf16);
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
    let (_, m) = &learner.moram_layers()[0];
    assert_eq!(m.weight().kind(), tch::Kind::BFloat16);
    let out = tmp.path().join("out");
    let state = moram_cl::run(&mut learner, &cfg, &out, &RunOptions::default()).unwrap();
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = steps[..5].iter().map(|s| s["loss"].as_f64().unwrap()).sum::<f64>();
    let last = steps[25..30].iter().map(|s| s["loss"].as_f64().unwrap()).sum::<f64>();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    for (_, m) in learner.moram_layers() {
        assert_eq!(m.bank().keys_tensor().kind(), tch::Kind::Float);
    }
    assert!(state.matrix.iter().flatten().all(|v| v.is_finite()));
}

/// Evaluation batches across tasks: with 16 examples per task and batches of 12, each task alone
/// takes a batch of 12 and one of 4; the three tasks' rests share one batch of 12 instead. Every
/// generation is the one the task gets evaluated alone, and the runner's row of scores is the
/// task-by-task one.
#[test]
fn evaluation_fills_partial_batches_with_other_tasks_prompts() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("run.toml");
    let text = common::llm_setup(tmp.path(), "moram", 1)
        .replace("[evaluation]\nbatch_size = 4", "[evaluation]\nbatch_size = 12");
    std::fs::write(&cfg_path, text).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
    for (_, m) in learner.moram_layers_mut() {
        m.set_training(false);
    }
    let _guard = tch::no_grad_guard();
    assert!(learner.evaluates_across_tasks());

    let mut alone = Vec::new();
    let mut alone_batches = Vec::new();
    for task in 0..3 {
        let mut sizes = Vec::new();
        alone.push(learner.evaluate_parts(&[(task, 0..16)], &mut |k| sizes.push(k)).unwrap().remove(0));
        alone_batches.push(sizes);
    }
    assert_eq!(alone_batches, vec![vec![12, 4]; 3]);

    let parts: Vec<_> = (0..3).map(|t| (t, 0..16)).collect();
    let mut sizes = Vec::new();
    let together = learner.evaluate_parts(&parts, &mut |k| sizes.push(k)).unwrap();
    assert_eq!(sizes, vec![12, 12, 12, 12]);
    assert_eq!(together.len(), 3);
    for (t, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(a.len(), 16);
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.1, y.1, "task {t} example {i}");
            assert_eq!(x.0, y.0);
        }
    }
    // Some generations are non-empty, so the comparison above compares text.
    assert!(together.iter().flatten().any(|(_, v)| !v["generation"].as_str().unwrap().is_empty()));

    let row = moram_cl::runner::evaluate_every_task(&mut learner, &RunOptions::default()).unwrap();
    let means: Vec<f64> = alone.iter().map(|s| s.iter().map(|(x, _)| x).sum::<f64>() / 16.0).collect();
    assert_eq!(row, means);
}
