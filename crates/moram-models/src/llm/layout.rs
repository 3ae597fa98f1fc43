//! The tensor layouts of the decoder families moram builds: one [`BlockLayout`] per family that
//! names every tensor in Hugging Face and GGUF key space with its shape, whether it is an
//! adaptable linear layer, its bias rule and llama.cpp's q/k row permutation. LLaMA and Mistral
//! share [`LLAMA_BLOCK`], Gemma (1) has it without the GGUF permutation ([`GEMMA_BLOCK`]); Qwen2 has [`QWEN2_BLOCK`] (q/k/v biases), Qwen3 [`QWEN3_BLOCK`]
//! (per-head q/k norms), Gemma 2/3 [`GEMMA2_BLOCK`] / [`GEMMA3_BLOCK`] (norms around attention and
//! MLP). The seven linear layers differ only in their bias rules and permutation ([`linears`]).
//! Building, loading (both formats), the strict checkpoint check, injection targets, parameter
//! counts and `base_tensors` all read the family's layout ([`block_table`]).

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
    /// Never (norms, Qwen2's o_proj).
    None,
    /// Always (Qwen2's q/k/v).
    Always,
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
    /// `head_dim` (per-head norms).
    HeadDim,
}

impl Dim {
    pub(crate) fn size(self, c: &LlmConfig) -> i64 {
        match self {
            Dim::Hidden => c.hidden_size,
            Dim::QueryWidth => c.num_attention_heads * c.head_dim,
            Dim::KeyValueWidth => c.num_key_value_heads * c.head_dim,
            Dim::Intermediate => c.intermediate_size,
            Dim::Vocab => c.vocab_size,
            Dim::HeadDim => c.head_dim,
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
            BiasRule::Always => true,
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

/// The seven linear layers of a block in [`LINEAR_MODULES`] order: q/k/v take `qkv_bias`, o
/// takes `o_bias`, the MLP `mlp_bias`; `permuted` says whether llama.cpp permutes q/k rows
/// (LLaMA-architecture files only).
pub(crate) const fn linears(
    qkv_bias: BiasRule,
    o_bias: BiasRule,
    mlp_bias: BiasRule,
    permuted: bool,
) -> [BlockTensor; 7] {
    let (q_perm, k_perm) =
        if permuted { (Permute::QueryHeads, Permute::KeyValueHeads) } else { (Permute::None, Permute::None) };
    [
        linear("self_attn.q_proj", "attn_q", 0, &[Dim::QueryWidth, Dim::Hidden], qkv_bias, q_perm),
        linear("self_attn.k_proj", "attn_k", 1, &[Dim::KeyValueWidth, Dim::Hidden], qkv_bias, k_perm),
        linear("self_attn.v_proj", "attn_v", 2, &[Dim::KeyValueWidth, Dim::Hidden], qkv_bias, Permute::None),
        linear("self_attn.o_proj", "attn_output", 3, &[Dim::Hidden, Dim::QueryWidth], o_bias, Permute::None),
        linear("mlp.gate_proj", "ffn_gate", 4, &[Dim::Intermediate, Dim::Hidden], mlp_bias, Permute::None),
        linear("mlp.up_proj", "ffn_up", 5, &[Dim::Intermediate, Dim::Hidden], mlp_bias, Permute::None),
        linear("mlp.down_proj", "ffn_down", 6, &[Dim::Hidden, Dim::Intermediate], mlp_bias, Permute::None),
    ]
}

pub(crate) const fn norm(hf: &'static str, gguf: &'static str) -> BlockTensor {
    BlockTensor { hf, gguf, module: None, shape: &[Dim::Hidden], bias: BiasRule::None, permute: Permute::None }
}

pub(crate) const fn head_norm(hf: &'static str, gguf: &'static str) -> BlockTensor {
    BlockTensor { hf, gguf, module: None, shape: &[Dim::HeadDim], bias: BiasRule::None, permute: Permute::None }
}

/// A family's block: its norms, then its seven linear layers (the order `base_tensors` and
/// checkpoint checks list them in).
#[derive(Debug)]
pub struct BlockLayout {
    /// RMSNorm weights, in table order.
    pub norms: &'static [BlockTensor],
    /// The adaptable linear layers, in [`LINEAR_MODULES`] order.
    pub linears: [BlockTensor; 7],
}

impl BlockLayout {
    /// Every tensor of the block: norms, then linear layers.
    pub fn tensors(&self) -> impl Iterator<Item = &BlockTensor> {
        self.norms.iter().chain(&self.linears)
    }
}

/// A tensor outside the blocks: `(Hugging Face key, GGUF key, shape)` (the same for every family).
pub const LLAMA_GLOBALS: [(&str, &str, &[Dim]); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight", &[Dim::Vocab, Dim::Hidden]),
    ("model.norm.weight", "output_norm.weight", &[Dim::Hidden]),
    // Absent when the head is tied to the embedding.
    ("lm_head.weight", "output.weight", &[Dim::Vocab, Dim::Hidden]),
];
