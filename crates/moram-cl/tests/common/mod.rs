//! Shared helpers: a tiny random LLaMA with the repository's fixture tokenizer and TRACE tasks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Writes `model/` and `data/` under `root`; returns the config text for a 3-task run.
pub fn llm_setup(root: &Path, method: &str, iterations: usize) -> String {
    llm_setup_tasks(root, method, iterations, &["LastWord", "Count", "Half"])
}

/// As [`llm_setup`] with a chosen task list (from LastWord, Count, Half, Flipped, Low, High).
pub fn llm_setup_tasks(root: &Path, method: &str, iterations: usize, tasks: &[&str]) -> String {
    let path = moram_cl::synthetic::write_tiny_run(root, method, iterations, tasks).unwrap();
    std::fs::read_to_string(path).unwrap()
}
