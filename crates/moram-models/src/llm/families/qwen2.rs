//! Qwen2 / Qwen2.5: LLaMA's block with biases on q/k/v; its presets, its `config.json` reader
//! (shared with Qwen3) and its layout.

use super::Family;
use crate::error::{Error, Result};
use crate::llm::config::{Activation, Arch, LlmConfig, Preset};
use crate::llm::hf_config::{self, hf_mirror, HfDefaults, HfRopeScaling, DEFAULTS};
use crate::llm::layout::{linears, BiasRule, BlockLayout};
use serde::de::IgnoredAny;
use std::path::Path;

impl LlmConfig {
    /// Qwen2.5 settings over a block layout: RoPE base 1,000,000, 32k context, eps 1e-6, the
    /// `<|endoftext|>` id as bos/eos of the base models.
    pub(super) fn qwen(arch: Arch, base: LlmConfig) -> Self {
        LlmConfig {
            arch,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 32_768,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_643],
            ..base
        }
    }

    /// Qwen2.5-0.5B: 24 layers, 896 wide, 14 heads over 2 KV heads, tied head (494 M parameters).
    pub fn qwen25_05b() -> Self {
        Self::qwen(Arch::Qwen2, LlmConfig { tie_word_embeddings: true, ..Self::llama(151_936, 896, 4864, 24, 14, 2) })
    }

    /// Qwen2.5-1.5B: 28 layers, 1536 wide, 12 heads over 2 KV heads, tied head.
    pub fn qwen25_15b() -> Self {
        Self::qwen(Arch::Qwen2, LlmConfig { tie_word_embeddings: true, ..Self::llama(151_936, 1536, 8960, 28, 12, 2) })
    }

    /// Qwen2.5-7B: 28 layers, 3584 wide, 28 heads over 4 KV heads, untied head.
    pub fn qwen25_7b() -> Self {
        Self::qwen(Arch::Qwen2, Self::llama(152_064, 3584, 18_944, 28, 28, 4))
    }
}

/// Qwen2 / Qwen2.5: LLaMA's norms, biases on q/k/v (never on o or the MLP), no GGUF row
/// permutation (llama.cpp permutes LLaMA-architecture q/k only).
pub const QWEN2_BLOCK: BlockLayout = BlockLayout {
    norms: super::llama::LLAMA_BLOCK.norms,
    linears: linears(BiasRule::Always, BiasRule::None, BiasRule::None, false),
};

/// Qwen2 / Qwen2.5.
#[derive(Debug, Clone, Copy)]
pub struct Qwen2;

impl Family for Qwen2 {
    fn arch(&self) -> Arch {
        Arch::Qwen2
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen2"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("qwen2")
    }
    fn presets(&self) -> &'static [Preset] {
        &[
            ("qwen2.5-0.5b", LlmConfig::qwen25_05b),
            ("qwen2.5-1.5b", LlmConfig::qwen25_15b),
            ("qwen2.5-7b", LlmConfig::qwen25_7b),
        ]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        from_qwen(text, path, Arch::Qwen2)
    }
    fn layout(&self) -> &'static BlockLayout {
        &QWEN2_BLOCK
    }
}

/// A Qwen2 / Qwen3 `config.json` as transformers 4.57 reads it. Sliding-window layers are
/// refused by name (not implemented yet); every full-attention config is exact.
pub(super) fn from_qwen(text: &str, path: &Path, arch: Arch) -> Result<LlmConfig> {
    let hf: HfQwenConfig = hf_config::parse_mirror(text, path, if arch == Arch::Qwen3 { "Qwen3" } else { "Qwen2" })?;
    let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
    // transformers' rule: without `layer_types`, layer i slides when `use_sliding_window` and
    // i >= `max_window_layers` (28 by default); a window that covers no layer changes nothing.
    let windowed = match &hf.layer_types {
        Some(types) => types.iter().any(|t| t != "full_attention"),
        None => hf.use_sliding_window == Some(true) && hf.max_window_layers.unwrap_or(28) < hf.num_hidden_layers,
    };
    if windowed {
        return Err(bad(
            "use_sliding_window",
            "/ `max_window_layers` / `layer_types`: sliding-window attention on some layers is not supported yet \
             (full attention only)"
                .into(),
        ));
    }
    let act = hf.hidden_act.as_deref().unwrap_or("silu");
    if Activation::from_hf(act) != Some(Activation::Silu) {
        return Err(bad("hidden_act", format!("`{act}` is not supported (silu)")));
    }
    if arch == Arch::Qwen2 && hf.attention_bias.is_some() {
        return Err(bad("attention_bias", "is not a Qwen2 field (its q/k/v always have biases)".into()));
    }
    // Qwen2 derives the head width; Qwen3Config defaults it to 128.
    let head_dim = if arch == Arch::Qwen3 { Some(128) } else { None };
    let defaults = HfDefaults { head_dim, max_position_embeddings: 32_768, ..DEFAULTS };
    Ok(LlmConfig {
        rope_scaling: hf_config::resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?,
        attention_bias: hf.attention_bias.unwrap_or(false),
        ..hf.shared(arch, &defaults, path)?
    })
}

hf_mirror! {
    /// `Qwen2Config` / `Qwen3Config` (transformers 4.57.1). The window size matters only for
    /// windowed layers, which are refused, so it is dropped.
    HfQwenConfig {
        hidden_act: Option<String>,
        rope_scaling: Option<HfRopeScaling>,
        attention_bias: Option<bool>,
        use_sliding_window: Option<bool>,
        layer_types: Option<Vec<String>>,
        #[serde(rename = "sliding_window")]
        _sliding_window: Option<IgnoredAny>,
        max_window_layers: Option<i64>,
        // Qwen2.5 configs carry `use_mrope: false`; transformers' Qwen2 has no multimodal RoPE
        // and never reads it.
        #[serde(rename = "use_mrope")]
        _use_mrope: Option<IgnoredAny>,
    }
}
