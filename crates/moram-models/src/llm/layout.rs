//! The tensor layout of the decoder families moram builds (LLaMA and Gemma share it): one table
//! that names every tensor in Hugging Face and GGUF key space with its shape, whether it is an
//! adaptable linear layer, its bias rule and llama.cpp's q/k row permutation. Building, loading
//! (both formats), the strict checkpoint check, injection targets, parameter counts and
//! `base_tensors` all read this table; a family with another layout adds its own table.

use super::config::LlmConfig;
use crate::target::ModuleNames;

/// The adaptable linear layers of a block, in table order (the [`TargetSpec`] vocabulary).
///
/// [`TargetSpec`]: crate::TargetSpec
pub const LINEAR_MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// LLaMA's module vocabulary for [`crate::TargetSpec`]: the canonical names, `q k v o gate up down`
/// as aliases, and `qkvo`-style shorthand for the attention projections.
pub const LLAMA_MODULES: ModuleNames = ModuleNames {
    canonical: &LINEAR_MODULES,
    aliases: &[
        ("q", "q_proj"),
        ("k", "k_proj"),
        ("v", "v_proj"),
        ("o", "o_proj"),
        ("gate", "gate_proj"),
        ("up", "up_proj"),
        ("down", "down_proj"),
    ],
    shorthand: &[("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "o_proj")],
};

/// Which config switch gives a linear layer its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasRule {
    /// Never (norms).
    None,
    /// `attention_bias` (q, k, v, o).
    Attention,
    /// `mlp_bias` (gate, up, down).
    Mlp,
}

/// llama.cpp's rotary row permutation of a projection (`convert_hf_to_gguf.py` `permute`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permute {
    /// Stored as in Hugging Face.
    None,
    /// Rows permuted per query head.
    QueryHeads,
    /// Rows permuted per key/value head.
    KeyValueHeads,
}

/// The dimensions a tensor's shape is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// `hidden_size`.
    Hidden,
    /// `num_attention_heads * head_dim`.
    QueryWidth,
    /// `num_key_value_heads * head_dim`.
    KeyValueWidth,
    /// `intermediate_size`.
    Intermediate,
    /// `vocab_size`.
    Vocab,
}

impl Dim {
    fn size(self, c: &LlmConfig) -> i64 {
        match self {
            Dim::Hidden => c.hidden_size,
            Dim::QueryWidth => c.num_attention_heads * c.head_dim,
            Dim::KeyValueWidth => c.num_key_value_heads * c.head_dim,
            Dim::Intermediate => c.intermediate_size,
            Dim::Vocab => c.vocab_size,
        }
    }
}

/// One tensor of a decoder block (`.weight`, plus `.bias` where its rule says so).
#[derive(Debug, Clone, Copy)]
pub struct BlockTensor {
    /// Path under `model.layers.{i}` in Hugging Face key space.
    pub hf: &'static str,
    /// Name under `blk.{i}` in llama.cpp's GGUF key space.
    pub gguf: &'static str,
    /// The [`LINEAR_MODULES`] name of an adaptable linear layer; `None` for a norm.
    pub module: Option<&'static str>,
    /// Shape of the weight: `[out, in]` for a linear layer, `[width]` for a norm.
    pub shape: &'static [Dim],
    /// Which switch gives it a bias.
    pub bias: BiasRule,
    /// llama.cpp's row permutation in GGUF files.
    pub permute: Permute,
}

impl BlockTensor {
    /// The weight's shape for `config`.
    pub fn weight_shape(&self, config: &LlmConfig) -> Vec<i64> {
        self.shape.iter().map(|d| d.size(config)).collect()
    }

    /// Whether the layer has a bias under `config`.
    pub fn has_bias(&self, config: &LlmConfig) -> bool {
        match self.bias {
            BiasRule::None => false,
            BiasRule::Attention => config.attention_bias,
            BiasRule::Mlp => config.mlp_bias,
        }
    }
}

const fn linear(
    hf: &'static str,
    gguf: &'static str,
    module: usize,
    shape: &'static [Dim],
    bias: BiasRule,
    permute: Permute,
) -> BlockTensor {
    BlockTensor { hf, gguf, module: Some(LINEAR_MODULES[module]), shape, bias, permute }
}

const fn norm(hf: &'static str, gguf: &'static str) -> BlockTensor {
    BlockTensor { hf, gguf, module: None, shape: &[Dim::Hidden], bias: BiasRule::None, permute: Permute::None }
}

/// One LLaMA / Gemma block: the two norms, then the seven linear layers in [`LINEAR_MODULES`]
/// order (the order `base_tensors` and checkpoint checks list them in).
pub const LLAMA_BLOCK: [BlockTensor; 9] = [
    norm("input_layernorm", "attn_norm"),
    norm("post_attention_layernorm", "ffn_norm"),
    linear("self_attn.q_proj", "attn_q", 0, &[Dim::QueryWidth, Dim::Hidden], BiasRule::Attention, Permute::QueryHeads),
    linear(
        "self_attn.k_proj",
        "attn_k",
        1,
        &[Dim::KeyValueWidth, Dim::Hidden],
        BiasRule::Attention,
        Permute::KeyValueHeads,
    ),
    linear("self_attn.v_proj", "attn_v", 2, &[Dim::KeyValueWidth, Dim::Hidden], BiasRule::Attention, Permute::None),
    linear("self_attn.o_proj", "attn_output", 3, &[Dim::Hidden, Dim::QueryWidth], BiasRule::Attention, Permute::None),
    linear("mlp.gate_proj", "ffn_gate", 4, &[Dim::Intermediate, Dim::Hidden], BiasRule::Mlp, Permute::None),
    linear("mlp.up_proj", "ffn_up", 5, &[Dim::Intermediate, Dim::Hidden], BiasRule::Mlp, Permute::None),
    linear("mlp.down_proj", "ffn_down", 6, &[Dim::Hidden, Dim::Intermediate], BiasRule::Mlp, Permute::None),
];

/// A tensor outside the blocks: `(Hugging Face key, GGUF key, shape)`.
pub const LLAMA_GLOBALS: [(&str, &str, &[Dim]); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight", &[Dim::Vocab, Dim::Hidden]),
    ("model.norm.weight", "output_norm.weight", &[Dim::Hidden]),
    // Absent when the head is tied to the embedding.
    ("lm_head.weight", "output.weight", &[Dim::Vocab, Dim::Hidden]),
];

/// The adaptable linear layers of the block table, in [`LINEAR_MODULES`] order.
pub fn block_linears() -> impl Iterator<Item = &'static BlockTensor> {
    LLAMA_BLOCK.iter().filter(|t| t.module.is_some())
}

/// Every tensor of a Hugging Face checkpoint for `config`, with its shape (biases before their
/// weights, as `transformers` names them).
pub fn hf_tensors(config: &LlmConfig) -> Vec<(String, Vec<i64>)> {
    let mut v = Vec::new();
    for (hf, _, shape) in LLAMA_GLOBALS {
        if hf == "lm_head.weight" && config.tie_word_embeddings {
            continue;
        }
        v.push((hf.to_string(), shape.iter().map(|d| d.size(config)).collect()));
    }
    for i in 0..config.num_hidden_layers {
        for t in &LLAMA_BLOCK {
            let shape = t.weight_shape(config);
            if t.has_bias(config) {
                v.push((format!("model.layers.{i}.{}.bias", t.hf), vec![shape[0]]));
            }
            v.push((format!("model.layers.{i}.{}.weight", t.hf), shape));
        }
    }
    v
}

/// The GGUF key of a Hugging Face key, and the row permutation llama.cpp applied to it.
pub fn gguf_name(hf: &str) -> (String, Permute) {
    if let Some((_, gguf, _)) = LLAMA_GLOBALS.iter().find(|(h, ..)| *h == hf) {
        return (gguf.to_string(), Permute::None);
    }
    let parsed = hf.strip_prefix("model.layers.").and_then(|rest| {
        let (i, tail) = rest.split_once('.')?;
        let (module, kind) = tail.rsplit_once('.')?;
        let t = LLAMA_BLOCK.iter().find(|t| t.hf == module)?;
        Some((format!("blk.{i}.{}.{kind}", t.gguf), t.permute))
    });
    parsed.unwrap_or_else(|| (hf.to_string(), Permute::None))
}
