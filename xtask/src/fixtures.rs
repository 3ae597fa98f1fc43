//! `cargo xtask fixtures`: regenerate the committed reference fixtures with Python PyTorch.
//!
//! The generators are independent re-statements of the paper's equations in PyTorch 2.11.0; the
//! Rust tests compare against what they write. Fixtures are small and committed, so the test
//! suite never needs Python.

use crate::{paths, python};
use anyhow::{Context, Result};
use std::process::Command;

/// Python packages the generators need (PyTorch pinned to the libtorch version we link).
pub const REQUIREMENTS: [&str; 16] = [
    "torch==2.11.0",
    // torchvision pinned to torch 2.11's release, or pip upgrades torch to satisfy a newer one.
    "torchvision==0.26.0",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "transformers==4.57.1",
    "open-clip-torch==3.3.0",
    "ftfy==6.3.1",
    "regex==2026.11.15",
    "gguf==0.17.1",
    // transformers needs it to load GGUF files (bench llm).
    "accelerate==1.10.1",
    // TRACE metric references (tests/fixtures/cl/generate_metrics.py).
    "rouge==1.0.1",
    "fuzzywuzzy==0.18.0",
    "Levenshtein==0.27.5",
    "sacrebleu==2.5.1",
    // PEFT loads moram's LoRA export (tests/fixtures/llm/generate_peft.py).
    "peft==0.22.0",
    // llama.cpp's converter reads the tiny checkpoints' SentencePiece tokenizer
    // (tests/fixtures/llm/generate_llamacpp_gguf.py).
    "sentencepiece==0.2.3",
];

/// Generator scripts, relative to the workspace root, each writing next to itself.
const GENERATORS: [&str; 23] = [
    "tests/fixtures/core/generate.py",
    "tests/fixtures/clip/generate.py",
    "tests/fixtures/clip/generate_tokenizer.py",
    "tests/fixtures/clip/generate_preprocess.py",
    "tests/fixtures/llm/generate_gguf.py",
    "tests/fixtures/llm/generate_gguf_tokenizer.py",
    "tests/fixtures/llm/generate_qwen2_tokenizer.py",
    "tests/fixtures/llm/generate_llama.py",
    "tests/fixtures/llm/generate_gemma.py",
    "tests/fixtures/llm/generate_families.py",
    "tests/fixtures/llm/generate_yarn.py",
    "tests/fixtures/llm/generate_llama32.py",
    // After the checkpoints it converts (families, Gemma, LLaMA 3.2).
    "tests/fixtures/llm/generate_llamacpp_gguf.py",
    "tests/fixtures/llm/generate_published.py",
    "tests/fixtures/llm/generate_gemma3_gguf.py",
    "tests/fixtures/llm/generate_tokenizer.py",
    "tests/fixtures/llm/generate_config_variants.py",
    "tests/fixtures/cl/generate_metrics.py",
    "tests/fixtures/cl/generate_tree_lora.py",
    "tests/fixtures/cl/generate_lwf.py",
    "tests/fixtures/cl/generate_ewc.py",
    "tests/fixtures/cl/generate_o_lora.py",
    "tests/fixtures/llm/generate_peft.py",
];

pub fn generate() -> Result<()> {
    let venv = paths::cache_dir()?.join("venv-torch-2.11.0");
    let python = python::venv_with(&venv, &REQUIREMENTS)?;
    let root = paths::workspace_root();
    // The preprocessing reference also covers the scikit-image photos.
    crate::setup::install_assets()?;
    let assets = crate::setup::assets_dir()?;
    for script in GENERATORS {
        eprintln!("running {script}");
        let mut cmd = Command::new(&python);
        // Generators read only local files: never let a library reach for a model hub.
        cmd.arg(root.join(script)).current_dir(&root).env("MORAM_ASSETS", &assets).env("HF_HUB_OFFLINE", "1");
        paths::run_checked(&mut cmd).with_context(|| format!("fixture generator {script} failed"))?;
    }
    Ok(())
}
