//! `moram generate` through the built binary on a tiny random LLaMA run: prompts from arguments
//! and JSONL on stdin answer as evaluation did, bad input names its line, and another base model
//! is refused unless --force-base.

mod common;

use common::text;
use moram_cl::synthetic::{fixture_tokenizer_dir, write_tiny_llama, write_tiny_run, TinyLlama};
use std::path::Path;
use std::process::Output;

fn moram(args: &[&str], stdin: Option<&str>) -> Output {
    common::moram_with_input(args, stdin.unwrap_or(""))
}

/// `(prompt, generation)` evaluation stored for `task` after the last task.
fn evaluated(out: &Path, task: &str) -> Vec<(String, String)> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(out.join(format!("outputs/after-task1/{task}.json"))).unwrap())
            .unwrap();
    rows.iter().map(|r| (r["prompt"].as_str().unwrap().into(), r["generation"].as_str().unwrap().into())).collect()
}

#[test]
fn generate_answers_as_evaluation_and_refuses_another_base() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_tiny_run(tmp.path(), "moram", 8, &["LastWord", "Half"]).unwrap();
    let out = tmp.path().join("out");
    let (config, out_s) = (config.to_str().unwrap(), out.to_str().unwrap());
    let trained = moram(&["train", "--config", config, "--out", out_s], None);
    assert!(trained.status.success(), "{}", text(&trained.stderr));

    // Arguments, one answer per prompt in --jsonl.
    let half = evaluated(&out, "Half");
    let args = ["generate", out_s, "--task", "Half", "--jsonl", "--prompt", &half[0].0, "--prompt", &half[1].0];
    let answered = moram(&args, None);
    assert!(answered.status.success(), "{}", text(&answered.stderr));
    let lines: Vec<serde_json::Value> =
        text(&answered.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    for (line, (prompt, generation)) in lines.iter().zip(&half) {
        assert_eq!(line["prompt"], prompt.as_str());
        assert_eq!(line["answer"], generation.as_str(), "{line}");
        assert!(line["prompt_tokens"].as_u64().unwrap() > 0 && line["answer_tokens"].as_u64().unwrap() <= 3);
    }

    // Every evaluation prompt of a task as JSONL on stdin: the evaluation's text, in order.
    let last_word = evaluated(&out, "LastWord");
    let jsonl: String = last_word.iter().map(|(p, _)| format!("{}\n", serde_json::json!({ "prompt": p }))).collect();
    let answered = moram(&["generate", out_s, "--task", "LastWord", "--input", "-", "--jsonl"], Some(&jsonl));
    assert!(answered.status.success(), "{}", text(&answered.stderr));
    let answers: Vec<String> = text(&answered.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["answer"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = last_word.iter().map(|(_, g)| g.clone()).collect();
    assert_eq!(answers, expected);

    // An adapter file on its own with its base: the same answers (targets and generation
    // settings come from the file); without the base, a clear error.
    let file = out.join("adapter-task1.safetensors");
    let model = tmp.path().join("model");
    let args =
        ["generate", file.to_str().unwrap(), "--model", model.to_str().unwrap(), "--jsonl", "--prompt", &half[0].0];
    let alone = moram(&args, None);
    assert!(alone.status.success(), "{}", text(&alone.stderr));
    let line: serde_json::Value = serde_json::from_str(text(&alone.stdout).trim()).unwrap();
    assert_eq!(line["answer"], half[0].1.as_str());
    let no_base = moram(&["generate", file.to_str().unwrap(), "--prompt", "a"], None);
    assert!(!no_base.status.success() && text(&no_base.stderr).contains("give its base model with --model"));

    // Plain text out: the answer only.
    let answered = moram(&["generate", out_s, "--task", "Half", "--after", "1"], Some(&format!("{}\n", half[0].0)));
    assert!(answered.status.success(), "{}", text(&answered.stderr));
    assert_eq!(text(&answered.stdout), format!("{}\n", half[0].1));

    // A malformed JSONL line is named.
    let bad = moram(&["generate", out_s, "--input", "-"], Some("{\"prompt\": \"a\"}\n{\"text\": 1}\n"));
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("stdin line 2: expected an object with a string `prompt`"),
        "{}",
        text(&bad.stderr)
    );
    // No chat template in the tiny checkpoint: --chat says so.
    let chat = moram(&["generate", out_s, "--chat", "--prompt", "hi"], None);
    assert!(!chat.status.success() && text(&chat.stderr).contains("no chat template"), "{}", text(&chat.stderr));

    // A MoRAM adapter does not export as a LoRA: exit 2, pointing at `moram serve`.
    let export = moram(&["export", out_s, "--out", tmp.path().join("peft").to_str().unwrap()], None);
    let err = text(&export.stderr);
    assert!(
        export.status.code() == Some(2) && err.contains("a LoRA cannot express") && err.contains("moram serve"),
        "{err}"
    );

    // Same shapes, other weights: refused with the remedy, loaded with --force-base.
    let other = tmp.path().join("other");
    write_tiny_llama(&other, &fixture_tokenizer_dir(), TinyLlama::default(), 8).unwrap();
    let other = other.to_str().unwrap();
    let refused = moram(&["generate", out_s, "--model", other, "--prompt", "a b c"], None);
    let err = text(&refused.stderr);
    assert!(!refused.status.success() && err.contains("trained on `model`") && err.contains("--force-base"), "{err}");
    let forced = moram(&["generate", out_s, "--model", other, "--force-base", "--prompt", "a b c"], None);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
}

#[test]
fn export_writes_peft_and_merged_checkpoints_of_a_lora_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_tiny_run(tmp.path(), "seq-lora", 4, &["LastWord"]).unwrap();
    let out = tmp.path().join("out");
    let (config, out_s) = (config.to_str().unwrap(), out.to_str().unwrap());
    let trained = moram(&["train", "--config", config, "--out", out_s], None);
    assert!(trained.status.success(), "{}", text(&trained.stderr));
    let peft = tmp.path().join("peft");
    let o = moram(&["export", out_s, "--out", peft.to_str().unwrap()], None);
    assert!(o.status.success() && text(&o.stdout).contains("PEFT adapter (6 layers)"), "{}", text(&o.stderr));
    assert!(peft.join("adapter_config.json").exists() && peft.join("adapter_model.safetensors").exists());
    let merged = tmp.path().join("merged");
    let o = moram(&["export", out_s, "--out", merged.to_str().unwrap(), "--merged"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(merged.join(file).exists(), "{file} missing");
    }
    // Another base refuses the merge (the weights folded in must be the adapter's own base).
    let other = tmp.path().join("other");
    write_tiny_llama(&other, &fixture_tokenizer_dir(), TinyLlama::default(), 8).unwrap();
    let o = moram(
        &[
            "export",
            out_s,
            "--out",
            tmp.path().join("m2").to_str().unwrap(),
            "--merged",
            "--model",
            other.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}
