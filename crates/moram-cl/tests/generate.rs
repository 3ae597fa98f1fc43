//! Answering prompts with a trained adapter (`moram generate`'s library side), and the base-model
//! identity adapter files record: a tiny random LLaMA trained on two tasks.

mod common;

use moram_cl::base_model::{BaseCheck, BaseModel, BASE_KEY};
use moram_cl::learners::llm::LlmLearner;
use moram_cl::synthetic::{write_tiny_llama, TinyLlama};
use moram_cl::{Learner, RunConfig, RunOptions};
use moram_models::llm::ChatMessage;
use std::path::{Path, PathBuf};

/// A finished two-task `moram` run in `root/out`; returns its config.
fn trained_run(root: &Path) -> RunConfig {
    let cfg_path = root.join("run.toml");
    std::fs::write(&cfg_path, common::llm_setup_tasks(root, "moram", 8, &["LastWord", "Half"])).unwrap();
    let cfg = RunConfig::from_file(&cfg_path).unwrap();
    let mut learner = LlmLearner::from_config(&cfg).unwrap();
    moram_cl::run(&mut learner, &cfg, &root.join("out"), &RunOptions::default()).unwrap();
    cfg
}

/// The `{prompt, generation}` pairs evaluation stored for `task` after task `after`.
fn evaluated(out: &Path, after: usize, task: &str) -> Vec<(String, String)> {
    let path = out.join(format!("outputs/after-task{after}/{task}.json"));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    rows.iter()
        .map(|r| (r["prompt"].as_str().unwrap().to_string(), r["generation"].as_str().unwrap().to_string()))
        .collect()
}

fn adapter(root: &Path, task: usize) -> PathBuf {
    root.join("out").join(moram_cl::checkpoint::adapter_name(task))
}

#[test]
fn generate_answers_evaluation_prompts_with_the_text_evaluation_scored() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trained_run(tmp.path());
    // The data folder is not needed to answer prompts.
    std::fs::remove_dir_all(tmp.path().join("data")).unwrap();
    let mut learner = LlmLearner::for_generation(&cfg).unwrap();
    assert!(learner.task_names().is_empty());
    let config = learner.generation_config();
    for after in [0, 1] {
        moram_cl::checkpoint::load_adapter(&mut learner, &adapter(tmp.path(), after)).unwrap();
        for task in ["LastWord", "Half"] {
            let pairs = evaluated(&tmp.path().join("out"), after, task);
            assert_eq!(pairs.len(), 16);
            let ids: Vec<Vec<i64>> = pairs.iter().map(|(p, _)| learner.encode_prompt(p, Some(task)).unwrap()).collect();
            let answers = learner.generate(&ids, &config).unwrap();
            for ((prompt, expected), (answer, ids)) in pairs.iter().zip(answers.iter().zip(&ids)) {
                assert_eq!(&answer.answer, expected, "after task {after}, {task}: {prompt:?}");
                assert_eq!(answer.prompt_tokens, ids.len());
                assert!((1..=3).contains(&answer.answer_tokens), "{answer:?}");
                assert!(answer.answer_tokens == 3 || answer.stopped, "{answer:?}");
            }
        }
    }
    // Free prompts: the run's default budget keeps the tail of a long prompt, with BOS first.
    let long = "word ".repeat(200);
    let ids = learner.encode_prompt(&long, None).unwrap();
    assert_eq!(ids.len(), 64, "generation.max_prompt_tokens of the run");
    assert!(learner.generate(&[Vec::new()], &config).unwrap_err().to_string().contains("prompt 0 has no token"));
}

#[test]
fn adapters_record_their_base_and_refuse_another_one() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trained_run(tmp.path());
    let file = adapter(tmp.path(), 1);
    let stored = moram_core::AdapterFile::load(&file, tch::Device::Cpu).unwrap();
    let base: BaseModel = serde_json::from_str(&stored.metadata[BASE_KEY]).unwrap();
    assert_eq!(
        (base.architecture.as_deref(), base.name.as_str(), base.dtype.as_str()),
        (Some("llama"), "model", "float")
    );
    assert_eq!(base.checksum.len(), 64);

    // The same checkpoint loaded in bf16 is the same base.
    let mut bf16 = cfg.clone();
    bf16.set("model.dtype=\"bf16\"").unwrap();
    let mut learner = LlmLearner::for_generation(&bf16).unwrap();
    moram_cl::checkpoint::load_adapter(&mut learner, &file).unwrap();

    // A base of the same shapes with other weights (another seed) is refused by name.
    write_tiny_llama(
        &tmp.path().join("other"),
        &common::repo().join("tests/fixtures/llm/tokenizer"),
        TinyLlama::default(),
        8,
    )
    .unwrap();
    let mut other = cfg.clone();
    other.model.as_mut().unwrap().path = tmp.path().join("other");
    let mut learner = LlmLearner::for_generation(&other).unwrap();
    let err = moram_cl::checkpoint::load_adapter(&mut learner, &file).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, moram_cl::Error::WrongBase { ref path, .. } if path == &file), "{err}");
    assert!(
        message.contains("trained on `model` (llama, float, base checksum") && message.contains("--force-base"),
        "{message}"
    );
    // --force-base loads it anyway, and the atoms are the file's.
    moram_cl::checkpoint::load_adapter_with(&mut learner, &file, BaseCheck::Force).unwrap();
    let (name, layer) = &learner.moram_layers()[0];
    assert!(layer.bank().keys_tensor().equal(&stored.bank(name).unwrap().keys_tensor()));

    // A file written before bases were recorded still loads (with a warning), onto any base.
    let old = tmp.path().join("old.safetensors");
    let layers = learner.moram_layers();
    let banks = layers.iter().map(|(p, m)| (p.as_str(), m.bank()));
    moram_core::save_adapter(&old, banks, &Default::default()).unwrap();
    moram_cl::checkpoint::load_adapter(&mut learner, &old).unwrap();
}

#[test]
fn chat_prompts_go_through_the_checkpoint_template() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = trained_run(tmp.path());
    let learner = LlmLearner::for_generation(&cfg).unwrap();
    let err = learner.encode_chat(&[ChatMessage::user("hi")]).unwrap_err().to_string();
    assert!(err.contains("no chat template"), "{err}");

    let template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}";
    let config = serde_json::json!({ "chat_template": template, "add_bos_token": true });
    std::fs::write(tmp.path().join("model/tokenizer_config.json"), config.to_string()).unwrap();
    let learner = LlmLearner::for_generation(&cfg).unwrap();
    let (text, ids) = learner.encode_chat(&[ChatMessage::user("one two")]).unwrap();
    assert_eq!(text, "<s>user: one two</s><s>assistant:");
    assert_eq!(ids, learner.tokenizer().encode_plain(&text).unwrap());
    let bos = learner.tokenizer().bos.unwrap();
    assert_eq!(
        ids.iter().filter(|&&i| i == bos).count(),
        2,
        "special-token text maps to its id, no extra BOS: {ids:?}"
    );
}
