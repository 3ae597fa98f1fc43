//! Gemma 3 (text): Gemma's norms and embedding scale, norms before and after attention and MLP,
//! per-head q/k norms, local (windowed, own RoPE base) and global layers; its preset,
//! `config.json` reader and layout.

use super::Family;
use crate::error::{Error, Result};
use crate::llm::config::{Activation, Arch, LlmConfig, Preset};
use crate::llm::hf_config::{self, hf_mirror, HfDefaults, HfRopeScaling, DEFAULTS};
use crate::llm::layout::{head_norm, BlockLayout};
use serde::de::IgnoredAny;
use std::path::Path;

impl LlmConfig {
    /// Gemma 3 270M: 18 layers, 640 wide, 4 heads of 256 over 1 KV head, a 512-token window on
    /// five layers of every six, tied head (268 M parameters).
    pub fn gemma3_270m() -> Self {
        LlmConfig {
            arch: Arch::Gemma3,
            activation: Activation::GeluTanh,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            max_position_embeddings: 32_768,
            tie_word_embeddings: true,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            sliding_window: Some(512),
            sliding_layers: Some((0..18).map(|i| (i + 1) % 6 != 0).collect()),
            rope_local_theta: Some(10_000.0),
            query_pre_attn_scalar: Some(256.0),
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
            ..Self::llama(262_144, 640, 2048, 18, 4, 1)
        }
    }
}

/// Gemma 3: Gemma 2's block plus per-head q/k norms.
pub const GEMMA3_BLOCK: BlockLayout = BlockLayout {
    norms: &[
        super::gemma2::GEMMA_SANDWICH[0],
        super::gemma2::GEMMA_SANDWICH[1],
        super::gemma2::GEMMA_SANDWICH[2],
        super::gemma2::GEMMA_SANDWICH[3],
        head_norm("self_attn.q_norm", "attn_q_norm"),
        head_norm("self_attn.k_norm", "attn_k_norm"),
    ],
    linears: super::gemma2::GEMMA2_BLOCK.linears,
};

/// Gemma 3 (text).
#[derive(Debug, Clone, Copy)]
pub struct Gemma3;

impl Family for Gemma3 {
    fn arch(&self) -> Arch {
        Arch::Gemma3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma3_text"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("gemma3")
    }
    fn presets(&self) -> &'static [Preset] {
        &[("gemma3-270m", LlmConfig::gemma3_270m)]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        from_gemma3(text, path)
    }
    fn layout(&self) -> &'static BlockLayout {
        &GEMMA3_BLOCK
    }
}

/// A Gemma 3 text `config.json` (`gemma3_text`) as transformers 4.57.1 reads it.
pub(super) fn from_gemma3(text: &str, path: &Path) -> Result<LlmConfig> {
    let hf: HfGemma3Config = hf_config::parse_mirror(text, path, "Gemma 3")?;
    let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
    let activation = hf_config::gemma_activation(hf.hidden_activation.as_deref(), path)?;
    if hf.use_bidirectional_attention == Some(true) {
        return Err(bad("use_bidirectional_attention", "is not supported (causal LMs only)".into()));
    }
    let layers = hf.num_hidden_layers;
    // transformers 4.57.1 builds `layer_types` (when absent) from `sliding_window_pattern`, 6 by
    // default: every 6th layer is global. Re-saved configs also carry `_sliding_window_pattern`,
    // which it does not read (checked against Gemma3TextConfig: with only that key, the default
    // applies); `layer_types`, written with it, wins anyway.
    let pattern = hf.sliding_window_pattern.unwrap_or(6).max(1);
    // transformers 4.57.1 stores Gemma 3's `attn_logit_softcapping` but never applies it (Gemma 2
    // does); moram follows, so the logits match. Published Gemma 3 configs have it null.
    if let Some(cap) = hf.attn_logit_softcapping {
        tracing::warn!(
            "{}: `attn_logit_softcapping` = {cap} is ignored for Gemma 3, as transformers ignores it",
            path.display()
        );
    }
    let sliding = hf_config::sliding_layers(hf.layer_types.as_deref(), layers, pattern, path)?;
    let defaults = HfDefaults {
        head_dim: Some(256),
        rope_theta: 1_000_000.0,
        tie_word_embeddings: true,
        max_position_embeddings: 131_072,
        bos_token_id: Some(2),
        eos_token_ids: &[1],
        ..DEFAULTS
    };
    Ok(LlmConfig {
        rope_scaling: hf_config::resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?,
        activation,
        attention_bias: hf.attention_bias.unwrap_or(false),
        sliding_window: Some(hf.sliding_window.unwrap_or(4096)),
        sliding_layers: Some(sliding),
        rope_local_theta: Some(hf.rope_local_base_freq.unwrap_or(10_000.0)),
        query_pre_attn_scalar: Some(hf.query_pre_attn_scalar.unwrap_or(256.0)),
        attn_logit_softcapping: None,
        final_logit_softcapping: hf.final_logit_softcapping,
        ..hf.shared(Arch::Gemma3, &defaults, path)?
    })
}

hf_mirror! {
    /// `Gemma3TextConfig` (transformers 4.57.1).
    HfGemma3Config {
        hidden_activation: Option<String>,
        rope_local_base_freq: Option<f64>,
        rope_scaling: Option<HfRopeScaling>,
        attention_bias: Option<bool>,
        query_pre_attn_scalar: Option<f64>,
        sliding_window: Option<i64>,
        sliding_window_pattern: Option<i64>,
        #[serde(rename = "_sliding_window_pattern")]
        _private_sliding_window_pattern: Option<IgnoredAny>,
        layer_types: Option<Vec<String>>,
        attn_logit_softcapping: Option<f64>,
        final_logit_softcapping: Option<f64>,
        use_bidirectional_attention: Option<bool>,
        #[serde(rename = "cache_implementation")]
        _cache_implementation: Option<IgnoredAny>,
        // Gemma3MLP reads `hidden_activation`; `hidden_act` is inert.
        #[serde(rename = "hidden_act")]
        _hidden_act: Option<IgnoredAny>,
    }
}
