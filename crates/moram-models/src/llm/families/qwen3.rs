//! Qwen3: LLaMA's block with an RMSNorm over each query and key head before RoPE; its preset and
//! layout (its `config.json` reads as Qwen2's, [`super::qwen2::from_qwen`]).

use super::Family;
use crate::error::Result;
use crate::llm::config::{Arch, LlmConfig, Preset};
use crate::llm::layout::{head_norm, linears, norm, BiasRule, BlockLayout};
use std::path::Path;

impl LlmConfig {
    /// Qwen3-0.6B: 28 layers, 1024 wide, 16 heads of 128 over 8 KV heads, q/k norms, tied head.
    pub fn qwen3_06b() -> Self {
        LlmConfig {
            head_dim: 128,
            max_position_embeddings: 40_960,
            eos_token_ids: vec![151_645],
            ..Self::qwen(
                Arch::Qwen3,
                LlmConfig { tie_word_embeddings: true, ..Self::llama(151_936, 1024, 3072, 28, 16, 8) },
            )
        }
    }
}

/// Qwen3: LLaMA's norms plus RMSNorms over each query and key head (`head_dim` wide), biases under
/// `attention_bias` (q/k/v/o), none in the MLP, no GGUF row permutation.
pub const QWEN3_BLOCK: BlockLayout = BlockLayout {
    norms: &[
        norm("input_layernorm", "attn_norm"),
        norm("post_attention_layernorm", "ffn_norm"),
        head_norm("self_attn.q_norm", "attn_q_norm"),
        head_norm("self_attn.k_norm", "attn_k_norm"),
    ],
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::None, false),
};

/// Qwen3.
#[derive(Debug, Clone, Copy)]
pub struct Qwen3;

impl Family for Qwen3 {
    fn arch(&self) -> Arch {
        Arch::Qwen3
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["qwen3"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("qwen3")
    }
    fn presets(&self) -> &'static [Preset] {
        &[("qwen3-0.6b", LlmConfig::qwen3_06b)]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        super::qwen2::from_qwen(text, path, Arch::Qwen3)
    }
    fn layout(&self) -> &'static BlockLayout {
        &QWEN3_BLOCK
    }
}
