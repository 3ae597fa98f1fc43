//! `moram train` on the real Gemma 3 270M GGUF (fetched by `cargo xtask setup`; skipped with a
//! printed reason when absent): two TRACE-format tasks of the demo's real data, one step each on
//! the last block, run to the end with a result for every task.

use std::path::PathBuf;
use std::process::Command;

fn assets() -> Option<PathBuf> {
    let needed = [moram_assets::GEMMA3_270M.file, "bbc", "wordnet"];
    let found: Option<Vec<PathBuf>> = needed.iter().map(moram_assets::test_asset).collect();
    found.and_then(|_| moram_assets::assets_dir().ok())
}

#[test]
fn train_runs_a_trace_sequence_on_the_gemma3_gguf() -> anyhow::Result<()> {
    let Some(assets) = assets() else { return Ok(()) };
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let moram = env!("CARGO_BIN_EXE_moram");
    let out = Command::new(moram)
        .args(["-q", "demo-data", "--train", "4", "--eval", "2", "--words", "16", "--assets"])
        .arg(&assets)
        .arg("--out")
        .arg(&data)
        .output()?;
    assert!(out.status.success(), "demo-data: {}", String::from_utf8_lossy(&out.stderr));
    let model = assets.join("gemma3/gemma-3-270m-q4_k_m.gguf");
    let config = format!(
        r#"
name = "gemma3-smoke"
seed = 1
[method]
name = "moram"
profile = "trace_paper"
r = 4
top_k = 4
[optimizer]
kind = "adamw"
lr = 0.01
schedule = "constant"
[training]
iterations = 1
batch_size = 2
micro_batch_size = 2
max_eval_examples = 2
[generation]
max_new_tokens = 4
max_prompt_tokens = 96
max_answer_tokens = 8
[model]
kind = "llm"
path = {model:?}
dtype = "f32"
targets = {{ modules = ["q_proj", "v_proj", "down_proj"], layers = [17] }}
[data]
format = "trace"
dir = {data:?}
tasks = ["bbc-topic", "wordnet-category"]
eval_split = "eval"
"#
    );
    let path = tmp.path().join("run.toml");
    std::fs::write(&path, config)?;
    let run = tmp.path().join("run");
    let out = Command::new(moram)
        .args(["-q", "--threads", "2", "train", "--config"])
        .arg(&path)
        .arg("--out")
        .arg(&run)
        .output()?;
    assert!(out.status.success(), "train: {}", String::from_utf8_lossy(&out.stderr));
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("results.json"))?)?;
    let matrix = results["state"]["matrix"].as_array().map(Vec::len);
    assert_eq!(matrix, Some(2), "a score row after each task");
    assert!(run.join("adapter-task1.safetensors").exists());
    Ok(())
}
