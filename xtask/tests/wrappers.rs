//! `cargo xtask xtail` and `cargo xtask trace` end to end on tiny generated models and data (with
//! `--debug`, the dev-profile `moram` this test run already built): the benchmark wrappers run the
//! sequence and print the paper's numbers next to the run's.

use moram_cl::synthetic::{
    fixture_tokenizer_dir, write_mini_xtail_root, write_tiny_clip, write_tiny_llama, write_trace_tasks, TinyLlama,
};
use std::path::Path;
use std::process::Command;

fn xtask(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(repo()).output().unwrap()
}

fn repo() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn xtask_xtail_runs_the_order_on_the_official_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_clip(&tmp.path().join("clip"), 2).unwrap();
    write_mini_xtail_root(&tmp.path().join("data")).unwrap();
    let (data, clip, out) = (s(&tmp.path().join("data")), s(&tmp.path().join("clip")), s(&tmp.path().join("out")));
    let shots = format!("data.shot_cache={:?}", s(&tmp.path().join("shots")));
    let o = xtask(&[
        "xtail",
        "--debug",
        "--data-dir",
        &data,
        "--model",
        &clip,
        "--order",
        "1",
        "--out",
        &out,
        "--set",
        r#"data.tasks=["aircraft", "eurosat", "mnist"]"#,
        "--set",
        "training.iterations=1",
        "--set",
        "training.batch_size=4",
        "--set",
        "method.r=2",
        "--set",
        "method.top_k=2",
        "--set",
        &shots,
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("| X-TAIL order 1 | Transfer | Average | Last |"), "{stdout}");
    assert!(stdout.contains("| MoRAM, paper Table 1 | 63.3 | 72.7 | 80.9 |"), "{stdout}");
    // The shots were cached (the default cache, the repository's data/cache/xtail, was overridden).
    assert!(tmp.path().join("shots/aircraft-shots16-seed42.json").is_file());
    // A model folder without config.json is refused before anything runs.
    let o = xtask(&["xtail", "--debug", "--data-dir", &data, "--model", &data]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("has no config.json"));
}

#[test]
fn xtask_trace_runs_a_checkpoint_path() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_llama(&tmp.path().join("llm"), &fixture_tokenizer_dir(), TinyLlama::default(), 4).unwrap();
    write_trace_tasks(&tmp.path().join("data"), &[("A", "count"), ("B", "half")], 8, 4, 3).unwrap();
    let (data, llm, out) = (s(&tmp.path().join("data")), s(&tmp.path().join("llm")), s(&tmp.path().join("out")));
    let o = xtask(&[
        "trace",
        "--debug",
        "--model",
        &llm,
        "--data-dir",
        &data,
        "--profile",
        "code",
        "--out",
        &out,
        "--set",
        r#"data.tasks=["A", "B"]"#,
        "--set",
        "training.epochs=[1]",
        "--set",
        "training.batch_size=4",
        "--set",
        "generation.max_new_tokens=2",
        "--set",
        "generation.max_prompt_tokens=64",
        "--set",
        "generation.max_answer_tokens=8",
        "--set",
        "evaluation.batch_size=4",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    // The model that ran is named; the paper's row is marked as another model's.
    assert!(stdout.contains("| TRACE, llm (settings of llama2-7b) | OP | BWT (Eq. 10) |"), "{stdout}");
    assert!(stdout.contains("| moram (this run: llm) |"), "{stdout}");
    assert!(
        stdout.contains("| MoRAM on meta-llama/Llama-2-7b-chat-hf, paper Table 2 (another model) | 44.54 | 1.37 |"),
        "{stdout}"
    );
    // A preset without a checkpoint folder says which checkpoint and how to give it.
    let o = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["trace", "--model", "gemma-2b", "--data-dir", &data])
        .current_dir(repo())
        .env_remove("MORAM_MODEL_DIR")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("google/gemma-2b-it") && err.contains("remedy"), "{err}");
}
