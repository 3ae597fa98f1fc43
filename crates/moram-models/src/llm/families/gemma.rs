//! Gemma (1): GeGLU (tanh GELU unless `hidden_activation` says otherwise), RMSNorm `(1 + w) * x`
//! in f32, embeddings scaled by `sqrt(hidden)`, tied head; LLaMA's block without the GGUF row
//! permutation. Its `config.json` reads as LLaMA's ([`super::llama::from_llama_like`]).

use super::Family;
use crate::error::Result;
use crate::llm::config::{Activation, Arch, LlmConfig, Preset};
use crate::llm::layout::{linears, BiasRule, BlockLayout};
use std::path::Path;

impl LlmConfig {
    /// Gemma-2B(-it): 18 layers, 2048 wide, multi-query attention, head_dim 256, tied head.
    pub fn gemma_2b() -> Self {
        LlmConfig {
            arch: Arch::Gemma,
            activation: Activation::GeluTanh,
            max_position_embeddings: 8192,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            tie_word_embeddings: true,
            ..Self::llama(256_000, 2048, 16_384, 18, 8, 1)
        }
    }
}

/// Gemma (1): LLaMA's block without the GGUF row permutation (llama.cpp's `gemma` converter stores
/// q/k as Hugging Face does).
pub const GEMMA_BLOCK: BlockLayout = BlockLayout {
    norms: super::llama::LLAMA_BLOCK.norms,
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::Mlp, false),
};

/// Gemma (1).
#[derive(Debug, Clone, Copy)]
pub struct Gemma;

impl Family for Gemma {
    fn arch(&self) -> Arch {
        Arch::Gemma
    }
    fn model_types(&self) -> &'static [&'static str] {
        &["gemma"]
    }
    fn gguf_architecture(&self) -> Option<&'static str> {
        Some("gemma")
    }
    fn presets(&self) -> &'static [Preset] {
        &[("gemma-2b", LlmConfig::gemma_2b)]
    }
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig> {
        super::llama::from_llama_like(text, path, Arch::Gemma)
    }
    fn layout(&self) -> &'static BlockLayout {
        &GEMMA_BLOCK
    }
}
