//! Gemma 2: Gemma 3's block without q/k norms, alternating windowed and global layers (one RoPE
//! base), soft-capped attention scores and logits; its preset, `config.json` reader and layout.

use super::Family;
use crate::error::Result;
use crate::llm::config::{Activation, Arch, LlmConfig, Preset};
use crate::llm::hf_config::{self, hf_mirror, HfDefaults, DEFAULTS};
use crate::llm::layout::{linears, norm, BiasRule, BlockLayout, BlockTensor};
use serde::de::IgnoredAny;
use std::path::Path;

impl LlmConfig {
    /// Gemma 2 2B: 26 layers, 2304 wide, 8 heads of 256 over 4 KV heads, a 4096-token window on
    /// every other layer, scores capped at 50 and logits at 30, tied head.
    pub fn gemma2_2b() -> Self {
        LlmConfig {
            arch: Arch::Gemma2,
            activation: Activation::GeluTanh,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            sliding_window: Some(4096),
            sliding_layers: Some((0..26).map(|i| i % 2 == 0).collect()),
            query_pre_attn_scalar: Some(256.0),
            attn_logit_softcapping: Some(50.0),
            final_logit_softcapping: Some(30.0),
            ..Self::llama(256_000, 2304, 9216, 26, 8, 4)
        }
    }
}

/// The norms around attention and MLP of Gemma 2 and 3 (llama.cpp names them `attn_norm`,
/// `post_attention_norm`, `ffn_norm`, `post_ffw_norm`).
pub(super) const GEMMA_SANDWICH: [BlockTensor; 4] = [
    norm("input_layernorm", "attn_norm"),
    norm("post_attention_layernorm", "post_attention_norm"),
    norm("pre_feedforward_layernorm", "ffn_norm"),
    norm("post_feedforward_layernorm", "post_ffw_norm"),
];

/// Gemma 2: the sandwich norms, biases under `attention_bias`, no GGUF row permutation.
pub const GEMMA2_BLOCK: BlockLayout = BlockLayout {
    norms: &GEMMA_SANDWICH,
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::None, false),
};

/// Gemma 2.
#[derive(Debug, Clone, Copy)]
pub struct Gemma2;

impl Family for Gemma2 {
    fn arch(&self) -> Arch {
        Arch::Gemma2
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma2"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("gemma2")
    }
    fn presets(&self) -> &'static [Preset] {
        &[("gemma2-2b", LlmConfig::gemma2_2b)]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        from_gemma2(text, path)
    }
    fn layout(&self) -> &'static BlockLayout {
        &GEMMA2_BLOCK
    }
}

/// A Gemma 2 `config.json` as transformers 4.57.1 reads it.
pub(super) fn from_gemma2(text: &str, path: &Path) -> Result<LlmConfig> {
    let hf: HfGemma2Config = hf_config::parse_mirror(text, path, "Gemma 2")?;
    let activation = hf_config::gemma_activation(hf.hidden_activation.as_deref(), path)?;
    let layers = hf.num_hidden_layers;
    // transformers' default: even layers (0, 2, ...) use the window.
    let sliding = hf_config::sliding_layers(hf.layer_types.as_deref(), layers, 2, path)?;
    let defaults = HfDefaults {
        head_dim: Some(256),
        tie_word_embeddings: true,
        max_position_embeddings: 8192,
        bos_token_id: Some(2),
        eos_token_ids: &[1],
        ..DEFAULTS
    };
    Ok(LlmConfig {
        activation,
        attention_bias: hf.attention_bias.unwrap_or(false),
        sliding_window: Some(hf.sliding_window.unwrap_or(4096)),
        sliding_layers: Some(sliding),
        query_pre_attn_scalar: Some(hf.query_pre_attn_scalar.unwrap_or(256.0)),
        attn_logit_softcapping: hf.attn_logit_softcapping,
        final_logit_softcapping: hf.final_logit_softcapping,
        ..hf.shared(Arch::Gemma2, &defaults, path)?
    })
}

hf_mirror! {
    /// `Gemma2Config` (transformers 4.57.1).
    HfGemma2Config {
        hidden_activation: Option<String>,
        attention_bias: Option<bool>,
        query_pre_attn_scalar: Option<f64>,
        sliding_window: Option<i64>,
        layer_types: Option<Vec<String>>,
        attn_logit_softcapping: Option<f64>,
        final_logit_softcapping: Option<f64>,
        #[serde(rename = "cache_implementation")]
        _cache_implementation: Option<IgnoredAny>,
        // Published Gemma 2 configs carry both activations; Gemma2MLP reads `hidden_activation`.
        #[serde(rename = "hidden_act")]
        _hidden_act: Option<IgnoredAny>,
    }
}
