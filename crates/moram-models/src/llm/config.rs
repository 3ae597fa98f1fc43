//! Decoder-LLM configuration: the families ([`Arch`]) and every field the model reads
//! ([`LlmConfig`]). Each family's presets, `config.json` reader and layout table are in
//! `families/`; the GGUF metadata reader is `gguf_config.rs`; the shared `config.json` machinery
//! is `hf_config.rs`.

pub use super::rope::{Llama3Scaling, RopeScaling};

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU (`silu`): LLaMA's SwiGLU.
    Silu,
    /// GELU with the tanh approximation (`gelu_pytorch_tanh`, `gelu_new`).
    GeluTanh,
    /// Exact (erf) GELU (`gelu`).
    Gelu,
}

impl Activation {
    /// `transformers`' `ACT2FN` name to activation, for the names the supported families use.
    pub(crate) fn from_hf(name: &str) -> Option<Self> {
        match name {
            "silu" | "swish" => Some(Activation::Silu),
            "gelu_pytorch_tanh" | "gelu_new" => Some(Activation::GeluTanh),
            "gelu" => Some(Activation::Gelu),
            _ => None,
        }
    }
}

/// The decoder family: the same block with family-specific details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// LLaMA-2/3.x (and SmolLM): SwiGLU, RMSNorm `w * x`, untied or tied head.
    Llama,
    /// Gemma: GeGLU (tanh GELU unless `hidden_activation` says otherwise), RMSNorm `(1 + w) * x`
    /// in f32, embeddings scaled by `sqrt(hidden)`, tied head.
    Gemma,
    /// Qwen2 / Qwen2.5: LLaMA's block with biases on q/k/v.
    Qwen2,
    /// Qwen3: LLaMA's block with an RMSNorm over each query and key head before RoPE.
    Qwen3,
    /// Mistral: LLaMA's block with sliding-window attention.
    Mistral,
    /// Gemma 3 (text): Gemma's norms and embedding scale, norms before and after attention and
    /// MLP, per-head q/k norms, local (windowed, own RoPE base) and global layers.
    Gemma3,
    /// Gemma 2: Gemma 3's block without q/k norms, alternating windowed and global layers (one
    /// RoPE base), soft-capped attention scores and logits.
    Gemma2,
}

/// A named preset: its name and the function that builds it.
pub type Preset = (&'static str, fn() -> LlmConfig);

/// A decoder-only causal LM.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmConfig {
    /// The family.
    pub arch: Arch,
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
    /// RoPE frequency scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// The trained context length (`dynamic` RoPE scaling starts past it).
    pub max_position_embeddings: i64,
    /// The MLP's gate activation.
    pub activation: Activation,
    /// Whether q/k/v/o have biases (`attention_bias`).
    pub attention_bias: bool,
    /// Whether gate/up/down have biases (`mlp_bias`).
    pub mlp_bias: bool,
    /// Beginning-of-sequence id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<i64>,
    /// Sliding-window attention (Mistral, Gemma 3's local layers): each token sees itself and the
    /// `w - 1` keys before it.
    pub sliding_window: Option<i64>,
    /// Which layers use the window (Gemma 3's local/global pattern); `None`: every layer does.
    pub sliding_layers: Option<Vec<bool>>,
    /// RoPE base of the windowed layers when it differs from `rope_theta` (Gemma 3: 10,000), with
    /// no scaling.
    pub rope_local_theta: Option<f64>,
    /// Attention scores are scaled by `query_pre_attn_scalar^-1/2` instead of `head_dim^-1/2`.
    pub query_pre_attn_scalar: Option<f64>,
    /// Gemma 2: attention scores become `c * tanh(s / c)` before the mask and softmax.
    pub attn_logit_softcapping: Option<f64>,
    /// Gemma 2: logits become `c * tanh(l / c)`.
    pub final_logit_softcapping: Option<f64>,
    /// Per-frequency divisors `(head_dim / 2)` of the RoPE frequencies, as llama.cpp stores a
    /// LLaMA 3.x model's scaling in GGUF files (`rope_freqs.weight`; `None` elsewhere).
    pub rope_freq_factors: Option<Vec<f32>>,
}

impl LlmConfig {
    /// A LLaMA block layout with RoPE base 10,000 and an untied head (callers override the rest).
    pub(crate) fn llama(vocab: i64, hidden: i64, ff: i64, layers: i64, heads: i64, kv: i64) -> Self {
        LlmConfig {
            arch: Arch::Llama,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: ff,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: kv,
            head_dim: hidden / heads,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: false,
            rope_scaling: None,
            max_position_embeddings: 4096,
            activation: Activation::Silu,
            attention_bias: false,
            mlp_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
            sliding_window: None,
            sliding_layers: None,
            rope_local_theta: None,
            rope_freq_factors: None,
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        }
    }
}
