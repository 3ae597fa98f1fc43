//! The tensor layouts of the decoder families moram builds: one [`BlockLayout`] per family that
//! names every tensor in Hugging Face and GGUF key space with its shape, whether it is an
//! adaptable linear layer, its bias rule and llama.cpp's q/k row permutation. LLaMA and Mistral
//! share [`LLAMA_BLOCK`], Gemma (1) has it without the GGUF permutation ([`GEMMA_BLOCK`]); Qwen2 has [`QWEN2_BLOCK`] (q/k/v biases), Qwen3 [`QWEN3_BLOCK`]
//! (per-head q/k norms), Gemma 2/3 [`GEMMA2_BLOCK`] / [`GEMMA3_BLOCK`] (norms around attention and
//! MLP). The seven linear layers differ only in their bias rules and permutation ([`linears`]).
//! Building, loading (both formats), the strict checkpoint check, injection targets, parameter
//! counts and `base_tensors` all read the family's layout ([`block_table`]).

use super::config::{Arch, LlmConfig};
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
    fn size(self, c: &LlmConfig) -> i64 {
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
const fn linears(qkv_bias: BiasRule, o_bias: BiasRule, mlp_bias: BiasRule, permuted: bool) -> [BlockTensor; 7] {
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

const fn norm(hf: &'static str, gguf: &'static str) -> BlockTensor {
    BlockTensor { hf, gguf, module: None, shape: &[Dim::Hidden], bias: BiasRule::None, permute: Permute::None }
}

const fn head_norm(hf: &'static str, gguf: &'static str) -> BlockTensor {
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

/// LLaMA / Mistral: two norms; biases under `attention_bias` / `mlp_bias`; q/k permuted in GGUF
/// files.
pub const LLAMA_BLOCK: BlockLayout = BlockLayout {
    norms: &[norm("input_layernorm", "attn_norm"), norm("post_attention_layernorm", "ffn_norm")],
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::Mlp, true),
};

/// Gemma (1): LLaMA's block without the GGUF row permutation (llama.cpp's `gemma` converter stores
/// q/k as Hugging Face does).
pub const GEMMA_BLOCK: BlockLayout = BlockLayout {
    norms: LLAMA_BLOCK.norms,
    linears: linears(BiasRule::Attention, BiasRule::Attention, BiasRule::Mlp, false),
};

/// Qwen2 / Qwen2.5: LLaMA's norms, biases on q/k/v (never on o or the MLP), no GGUF row
/// permutation (llama.cpp permutes LLaMA-architecture q/k only).
pub const QWEN2_BLOCK: BlockLayout =
    BlockLayout { norms: LLAMA_BLOCK.norms, linears: linears(BiasRule::Always, BiasRule::None, BiasRule::None, false) };

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

/// The norms around attention and MLP of Gemma 2 and 3 (llama.cpp names them `attn_norm`,
/// `post_attention_norm`, `ffn_norm`, `post_ffw_norm`).
const GEMMA_SANDWICH: [BlockTensor; 4] = [
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

/// Gemma 3: Gemma 2's block plus per-head q/k norms.
pub const GEMMA3_BLOCK: BlockLayout = BlockLayout {
    norms: &[
        GEMMA_SANDWICH[0],
        GEMMA_SANDWICH[1],
        GEMMA_SANDWICH[2],
        GEMMA_SANDWICH[3],
        head_norm("self_attn.q_norm", "attn_q_norm"),
        head_norm("self_attn.k_norm", "attn_k_norm"),
    ],
    linears: GEMMA2_BLOCK.linears,
};

/// Whether llama.cpp's converter stored the family's RMSNorm weights as `1 + w` (Gemma's).
pub fn gguf_norms_include_one(arch: Arch) -> bool {
    matches!(arch, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
}

/// The block layout of a family.
pub fn block_table(arch: Arch) -> &'static BlockLayout {
    match arch {
        Arch::Llama | Arch::Mistral => &LLAMA_BLOCK,
        Arch::Gemma => &GEMMA_BLOCK,
        Arch::Qwen2 => &QWEN2_BLOCK,
        Arch::Qwen3 => &QWEN3_BLOCK,
        Arch::Gemma3 => &GEMMA3_BLOCK,
        Arch::Gemma2 => &GEMMA2_BLOCK,
    }
}

/// A tensor outside the blocks: `(Hugging Face key, GGUF key, shape)` (the same for every family).
pub const LLAMA_GLOBALS: [(&str, &str, &[Dim]); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight", &[Dim::Vocab, Dim::Hidden]),
    ("model.norm.weight", "output_norm.weight", &[Dim::Hidden]),
    // Absent when the head is tied to the embedding.
    ("lm_head.weight", "output.weight", &[Dim::Vocab, Dim::Hidden]),
];

/// The adaptable linear layers of a family's block, in [`LINEAR_MODULES`] order (every family has
/// the same seven; their bias rules and permutations differ).
pub fn block_linears(arch: Arch) -> impl Iterator<Item = &'static BlockTensor> {
    block_table(arch).linears.iter()
}

/// The norms of a family's block, in table order.
pub fn block_norms(arch: Arch) -> impl Iterator<Item = &'static BlockTensor> {
    block_table(arch).norms.iter()
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
        for t in block_table(config.arch).tensors() {
            let shape = t.weight_shape(config);
            if t.has_bias(config) {
                v.push((format!("model.layers.{i}.{}.bias", t.hf), vec![shape[0]]));
            }
            v.push((format!("model.layers.{i}.{}.weight", t.hf), shape));
        }
    }
    v
}

/// The GGUF key of a Hugging Face key in family `arch`, and the row permutation llama.cpp applied
/// to it.
pub fn gguf_name(arch: Arch, hf: &str) -> (String, Permute) {
    if let Some((_, gguf, _)) = LLAMA_GLOBALS.iter().find(|(h, ..)| *h == hf) {
        return (gguf.to_string(), Permute::None);
    }
    let parsed = hf.strip_prefix("model.layers.").and_then(|rest| {
        let (i, tail) = rest.split_once('.')?;
        let (module, kind) = tail.rsplit_once('.')?;
        let t = block_table(arch).tensors().find(|t| t.hf == module)?;
        Some((format!("blk.{i}.{}.{kind}", t.gguf), t.permute))
    });
    parsed.unwrap_or_else(|| (hf.to_string(), Permute::None))
}

impl LlmConfig {
    /// `(module, d_in, d_out)` of the seven linear layers of one block (the family's table in
    /// `layout`).
    pub fn block_linears(&self) -> [(&'static str, i64, i64); 7] {
        let mut out = [("", 0, 0); 7];
        for (o, t) in out.iter_mut().zip(block_linears(self.arch)) {
            let shape = t.weight_shape(self);
            *o = (t.module.unwrap_or(t.hf), shape[1], shape[0]);
        }
        out
    }

    /// Whether the block linear `module` (`q_proj` ... `down_proj`) has a bias.
    pub fn has_bias(&self, module: &str) -> bool {
        block_linears(self.arch).any(|t| t.module == Some(module) && t.has_bias(self))
    }

    /// Parameters of the base model (embedding, blocks with their biases, norms, head unless tied).
    pub fn parameter_count(&self) -> i64 {
        let biases: i64 = self.block_linears().iter().filter(|(m, _, _)| self.has_bias(m)).map(|(_, _, o)| o).sum();
        let norms: i64 = block_norms(self.arch).map(|t| t.weight_shape(self).iter().product::<i64>()).sum();
        let block: i64 = self.block_linears().iter().map(|(_, i, o)| i * o).sum::<i64>() + norms + biases;
        let embed = self.vocab_size * self.hidden_size;
        embed + self.num_hidden_layers * block + self.hidden_size + if self.tie_word_embeddings { 0 } else { embed }
    }
}
