//! Decoder-LLM configuration (LLaMA family so far), from GGUF metadata.

use super::gguf::{GgufFile, Value};
use crate::error::{Error, Result};

/// A LLaMA-architecture decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Model width.
    pub hidden_size: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Number of decoder blocks.
    pub num_hidden_layers: i64,
    /// Query heads.
    pub num_attention_heads: i64,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_key_value_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Whether the LM head reuses the token embedding.
    pub tie_word_embeddings: bool,
}

impl LlmConfig {
    /// Reads `llama.*` metadata (and whether `output.weight` exists) from a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch = gguf.get("general.architecture").and_then(Value::as_str).unwrap_or("<missing>");
        if arch != "llama" {
            return Err(Error::Corrupt {
                path: gguf.path().into(),
                reason: format!("general.architecture `{arch}` is not supported yet (llama)"),
            });
        }
        let u = |k: &str| gguf.require_u64(&format!("llama.{k}")).map(|v| v as i64);
        let f = |k: &str, default: f64| gguf.get(&format!("llama.{k}")).and_then(Value::as_f64).unwrap_or(default);
        if gguf.get("llama.rope.scaling.type").is_some() || gguf.tensors.contains_key("rope_freqs.weight") {
            return Err(Error::Corrupt {
                path: gguf.path().into(),
                reason: "RoPE scaling (llama.rope.scaling.* / rope_freqs) is not supported yet".into(),
            });
        }
        let heads = u("attention.head_count")?;
        let hidden = u("embedding_length")?;
        let vocab = match gguf.get("llama.vocab_size").and_then(Value::as_u64) {
            Some(v) => v as i64,
            None => gguf.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|a| a.len() as i64).unwrap_or(0),
        };
        Ok(LlmConfig {
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: u("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: gguf
                .get("llama.attention.head_count_kv")
                .and_then(Value::as_u64)
                .map_or(heads, |v| v as i64),
            head_dim: gguf
                .get("llama.rope.dimension_count")
                .and_then(Value::as_u64)
                .map_or(hidden / heads, |v| v as i64),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: f("rope.freq_base", 10_000.0),
            tie_word_embeddings: !gguf.tensors.contains_key("output.weight"),
        })
    }
}
