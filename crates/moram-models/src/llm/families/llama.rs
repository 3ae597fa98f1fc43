//! LLaMA-2 / LLaMA-3.x (and SmolLM): SwiGLU, RMSNorm `w * x`, q/k rows permuted in GGUF files.
//! Its presets, its `config.json` reader (shared with Gemma 1: `LlamaConfig` and `GemmaConfig`
//! have the same fields in transformers 4.45.2) and its block layout.

use super::Family;
use crate::error::{Error, Result};
use crate::llm::config::{Activation, Arch, Llama3Scaling, LlmConfig, Preset, RopeScaling};
use crate::llm::hf_config::{self, hf_mirror, HfDefaults, HfRopeScaling, DEFAULTS};
use crate::llm::layout::{linears, norm, BiasRule, BlockLayout};
use serde::de::IgnoredAny;
use std::path::Path;

impl LlmConfig {
    /// LLaMA-2-7B(-Chat): 32 layers, 4096 wide, multi-head attention.
    pub fn llama2_7b() -> Self {
        Self::llama(32_000, 4096, 11_008, 32, 32, 32)
    }

    /// LLaMA-3.x settings over a block layout: llama3 RoPE with `factor`, base 500,000, and the
    /// LLaMA-3 special token ids.
    fn llama3(factor: f64, base: LlmConfig) -> Self {
        let scaling = Llama3Scaling {
            factor,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192.0,
        };
        LlmConfig {
            rope_scaling: Some(RopeScaling::Llama3(scaling)),
            max_position_embeddings: 131_072,
            rope_theta: 500_000.0,
            bos_token_id: Some(128_000),
            eos_token_ids: vec![128_001, 128_008, 128_009],
            ..base
        }
    }

    /// LLaMA-3.2-1B(-Instruct): 16 layers, 2048 wide, 8 KV heads, llama3 RoPE (factor 32), tied head.
    pub fn llama32_1b() -> Self {
        Self::llama3(32.0, LlmConfig { tie_word_embeddings: true, ..Self::llama(128_256, 2048, 8192, 16, 32, 8) })
    }

    /// LLaMA-3.1-8B(-Instruct): 32 layers, 4096 wide, 8 KV heads, llama3 RoPE (factor 8).
    pub fn llama31_8b() -> Self {
        Self::llama3(8.0, Self::llama(128_256, 4096, 14_336, 32, 32, 8))
    }
}

/// LLaMA / Mistral: two norms; biases under `attention_bias` / `mlp_bias`; q/k permuted in GGUF
/// files.
pub const LLAMA_BLOCK: BlockLayout = BlockLayout {
    norms: &[norm("input_layernorm", "attn_norm"), norm("post_attention_layernorm", "ffn_norm")],
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::Mlp, true),
};

/// LLaMA.
#[derive(Debug, Clone, Copy)]
pub struct Llama;

impl Family for Llama {
    fn arch(&self) -> Arch {
        Arch::Llama
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["llama"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("llama")
    }
    fn presets(&self) -> &'static [Preset] {
        &[
            ("llama2-7b", LlmConfig::llama2_7b),
            ("llama3.2-1b", LlmConfig::llama32_1b),
            ("llama3.1-8b", LlmConfig::llama31_8b),
        ]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        from_llama_like(text, path, Arch::Llama)
    }
    fn layout(&self) -> &'static BlockLayout {
        &LLAMA_BLOCK
    }
}

/// A `LlamaForCausalLM` / `GemmaForCausalLM` `config.json` as transformers 4.45.2 reads it:
/// fields moram does not implement (tensor-parallel pre-training splits, other RoPE scalings,
/// other activations, attention dropout, unknown keys) are errors that name them.
pub(super) fn from_llama_like(text: &str, path: &Path, arch: Arch) -> Result<LlmConfig> {
    let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
    let hf: HfLlamaConfig = hf_config::parse_mirror(text, path, "LLaMA/Gemma")?;
    // transformers 4.45.2: LlamaMLP uses `hidden_act`; GemmaMLP ignores `hidden_act` and uses
    // `hidden_activation`, tanh GELU when absent. (From 4.46 on, GemmaMLP reads `hidden_act`
    // instead: a Gemma config with `hidden_act = "gelu"` and no `hidden_activation` computes
    // exact GELU there, tanh GELU in 4.45.2 and here.)
    let (field, act) = match arch {
        Arch::Gemma => ("hidden_activation", hf.hidden_activation.as_deref().unwrap_or("gelu_pytorch_tanh")),
        _ => ("hidden_act", hf.hidden_act.as_deref().unwrap_or("silu")),
    };
    let activation = match (arch, Activation::from_hf(act)) {
        (Arch::Llama, Some(Activation::Silu)) => Activation::Silu,
        (Arch::Gemma, Some(a @ (Activation::GeluTanh | Activation::Gelu))) => a,
        _ => {
            let valid = if arch == Arch::Llama { "silu" } else { "gelu_pytorch_tanh, gelu_new, gelu" };
            return Err(bad(field, format!("`{act}` is not supported ({valid})")));
        }
    };
    if hf.pretraining_tp.is_some_and(|tp| tp != 1) {
        return Err(bad("pretraining_tp", "other than 1 is not supported".into()));
    }
    let rope_scaling = hf_config::resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?;
    let gemma = arch == Arch::Gemma;
    let defaults =
        HfDefaults { tie_word_embeddings: gemma, max_position_embeddings: if gemma { 8192 } else { 2048 }, ..DEFAULTS };
    Ok(LlmConfig {
        rope_scaling,
        activation,
        attention_bias: hf.attention_bias.unwrap_or(false),
        mlp_bias: hf.mlp_bias.unwrap_or(false),
        ..hf.shared(arch, &defaults, path)?
    })
}

hf_mirror! {
    /// `LlamaConfig` / `GemmaConfig` (the two share their fields in transformers 4.45.2).
    HfLlamaConfig {
        hidden_act: Option<String>,
        hidden_activation: Option<String>,
        rope_scaling: Option<HfRopeScaling>,
        attention_bias: Option<bool>,
        mlp_bias: Option<bool>,
        pretraining_tp: Option<i64>,
        // SmolLM's configs carry these two; transformers' LLaMA reads neither (its RoPE is the
        // rotate-half one whatever `rope_interleaved` says), so they change nothing here either.
        #[serde(rename = "is_llama_config")]
        _is_llama_config: Option<IgnoredAny>,
        #[serde(rename = "rope_interleaved")]
        _rope_interleaved: Option<IgnoredAny>,
    }
}
