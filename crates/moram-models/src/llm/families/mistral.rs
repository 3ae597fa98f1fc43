//! Mistral: LLaMA's block with sliding-window attention; its preset and `config.json` reader (its
//! layout is LLaMA's).

use super::Family;
use crate::error::{Error, Result};
use crate::llm::config::{Activation, Arch, LlmConfig, Preset};
use crate::llm::hf_config::{self, hf_mirror, HfDefaults, DEFAULTS};
use crate::llm::layout::BlockLayout;
use std::path::Path;

impl LlmConfig {
    /// Mistral-7B (v0.1): 32 layers, 4096 wide, 8 KV heads, a 4096-token sliding window.
    pub fn mistral_7b() -> Self {
        LlmConfig {
            arch: Arch::Mistral,
            sliding_window: Some(4096),
            max_position_embeddings: 32_768,
            rms_norm_eps: 1e-5,
            ..Self::llama(32_000, 4096, 14_336, 32, 32, 8)
        }
    }
}

/// Mistral.
#[derive(Debug, Clone, Copy)]
pub struct Mistral;

impl Family for Mistral {
    fn arch(&self) -> Arch {
        Arch::Mistral
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["mistral"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        None
    }
    fn presets(&self) -> &'static [Preset] {
        &[("mistral-7b", LlmConfig::mistral_7b)]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        from_mistral(text, path)
    }
    fn layout(&self) -> &'static BlockLayout {
        &super::llama::LLAMA_BLOCK
    }
}

/// A Mistral `config.json` as transformers 4.57.1 reads it.
pub(super) fn from_mistral(text: &str, path: &Path) -> Result<LlmConfig> {
    let hf: HfMistralConfig = hf_config::parse_mirror(text, path, "Mistral")?;
    let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
    let act = hf.hidden_act.as_deref().unwrap_or("silu");
    if Activation::from_hf(act) != Some(Activation::Silu) {
        return Err(bad("hidden_act", format!("`{act}` is not supported (silu)")));
    }
    if hf.sliding_window.is_some_and(|w| w < 1) {
        return Err(bad("sliding_window", "must be at least 1 (or null for full attention)".into()));
    }
    let defaults = HfDefaults { max_position_embeddings: 4096 * 32, ..DEFAULTS };
    Ok(LlmConfig {
        arch: Arch::Mistral,
        sliding_window: hf.sliding_window,
        ..hf.shared(Arch::Mistral, &defaults, path)?
    })
}

hf_mirror! {
    /// `MistralConfig` (transformers 4.57.1).
    HfMistralConfig {
        hidden_act: Option<String>,
        sliding_window: Option<i64>,
    }
}
