//! Shared helpers: a tiny random LLaMA with the repository's fixture tokenizer and TRACE tasks.
#![allow(dead_code)]

use moram_cl::synthetic::{write_tiny_llama, write_trace_tasks, TinyLlama};
use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `model/` and `data/` under `root`; returns the config text for a 3-task run.
pub fn llm_setup(root: &Path, method: &str, iterations: usize) -> String {
    llm_setup_tasks(root, method, iterations, &["LastWord", "Count", "Half"])
}

/// As [`llm_setup`] with a chosen task list (from LastWord, Count, Half, Flipped).
pub fn llm_setup_tasks(root: &Path, method: &str, iterations: usize, tasks: &[&str]) -> String {
    write_tiny_llama(&root.join("model"), &repo().join("tests/fixtures/llm/tokenizer"), TinyLlama::default(), 7)
        .unwrap();
    write_trace_tasks(
        &root.join("data"),
        &[
            ("LastWord", "last-word"),
            ("Count", "count"),
            ("Half", "half"),
            ("Flipped", "half-flipped"),
            ("Low", "parity-low"),
            ("High", "parity-high"),
        ],
        32,
        16,
        11,
    )
    .unwrap();
    format!(
        r#"
name = "tiny-{method}"
seed = 3

[method]
name = "{method}"
profile = "trace_paper"
r = 4
top_k = 4
dropout = 0.1

[optimizer]
kind = "adam"
lr = 0.01
betas = [0.9, 0.95]
schedule = "constant"

[training]
iterations = {iterations}
batch_size = 4
micro_batch_size = 2
clip_grad_norm = 1.0

[generation]
max_new_tokens = 3
max_prompt_tokens = 64
max_answer_tokens = 16

[evaluation]
batch_size = 4

[model]
kind = "llm"
path = "model"
targets = {{ modules = ["q_proj", "v_proj", "down_proj"] }}

[data]
format = "trace"
dir = "data"
tasks = {tasks:?}
metrics = {{ Count = "numglue_accuracy" }}
"#
    )
}
