//! Decoder-LLM configuration (LLaMA and Gemma), from GGUF metadata or a Hugging Face
//! `config.json`, resolved as `transformers` 4.45.2 (the version the official MoRAM code pins)
//! reads it.

pub use super::rope::{Llama3Scaling, RopeScaling};
use crate::error::{Error, Result};
use serde::de::IgnoredAny;
use serde::Deserialize;
use std::path::Path;

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
    fn from_hf(name: &str) -> Option<Self> {
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
}

impl LlmConfig {
    /// A LLaMA block layout with RoPE base 10,000 and an untied head (callers override the rest).
    fn llama(vocab: i64, hidden: i64, ff: i64, layers: i64, heads: i64, kv: i64) -> Self {
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
            query_pre_attn_scalar: None,
            attn_logit_softcapping: None,
            final_logit_softcapping: None,
        }
    }

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

    /// Qwen2.5 settings over a block layout: RoPE base 1,000,000, 32k context, eps 1e-6, the
    /// `<|endoftext|>` id as bos/eos of the base models.
    fn qwen(arch: Arch, base: LlmConfig) -> Self {
        LlmConfig {
            arch,
            rope_theta: 1_000_000.0,
            rms_norm_eps: 1e-6,
            max_position_embeddings: 32_768,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_643],
            ..base
        }
    }

    /// Qwen2.5-0.5B: 24 layers, 896 wide, 14 heads over 2 KV heads, tied head (494 M parameters).
    pub fn qwen25_05b() -> Self {
        Self::qwen(Arch::Qwen2, LlmConfig { tie_word_embeddings: true, ..Self::llama(151_936, 896, 4864, 24, 14, 2) })
    }

    /// Qwen2.5-1.5B: 28 layers, 1536 wide, 12 heads over 2 KV heads, tied head.
    pub fn qwen25_15b() -> Self {
        Self::qwen(Arch::Qwen2, LlmConfig { tie_word_embeddings: true, ..Self::llama(151_936, 1536, 8960, 28, 12, 2) })
    }

    /// Qwen2.5-7B: 28 layers, 3584 wide, 28 heads over 4 KV heads, untied head.
    pub fn qwen25_7b() -> Self {
        Self::qwen(Arch::Qwen2, Self::llama(152_064, 3584, 18_944, 28, 28, 4))
    }

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

    /// Mistral-7B (v0.1): 32 layers, 4096 wide, 8 KV heads, a 4096-token sliding window.
    pub fn mistral_7b() -> Self {
        LlmConfig {
            arch: Arch::Mistral,
            sliding_window: Some(4096),
            max_position_embeddings: 32_768,
            rms_norm_eps: 1e-5,
            ..Self::llama(32_000, 4096, 14_336, 32, 32, 8)
        }
    }

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

    /// Every preset: its name and the function that builds it.
    pub const PRESETS: [Preset; 11] = [
        ("llama2-7b", Self::llama2_7b),
        ("llama3.2-1b", Self::llama32_1b),
        ("llama3.1-8b", Self::llama31_8b),
        ("gemma-2b", Self::gemma_2b),
        ("qwen2.5-0.5b", Self::qwen25_05b),
        ("qwen2.5-1.5b", Self::qwen25_15b),
        ("qwen2.5-7b", Self::qwen25_7b),
        ("qwen3-0.6b", Self::qwen3_06b),
        ("mistral-7b", Self::mistral_7b),
        ("gemma3-270m", Self::gemma3_270m),
        ("gemma2-2b", Self::gemma2_2b),
    ];

    /// A preset by name (see [`LlmConfig::PRESETS`]).
    pub fn preset(name: &str) -> Result<Self> {
        match Self::PRESETS.iter().find(|(n, _)| *n == name) {
            Some((_, build)) => Ok(build()),
            None => {
                let names: Vec<&str> = Self::PRESETS.iter().map(|(n, _)| *n).collect();
                Err(Error::Target(format!("`{name}` is not an LLM preset; valid: {}", names.join(", "))))
            }
        }
    }

    /// Reads a Hugging Face `LlamaForCausalLM` / `GemmaForCausalLM` `config.json` as `transformers`
    /// 4.45.2 reads it. A `model_type` other than `llama` / `gemma` is named first; fields moram does
    /// not implement (tensor-parallel pre-training splits, other RoPE scalings, other activations,
    /// attention dropout, unknown keys) are errors that name them.
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
        // The family first: an unsupported architecture has fields of its own that would otherwise
        // be reported as unknown keys before the real reason.
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt { path: path.into(), reason: format!("invalid JSON: {e}") })?;
        let arch = match json.get("model_type").and_then(serde_json::Value::as_str) {
            None | Some("llama") => Arch::Llama,
            Some("gemma") => Arch::Gemma,
            Some("qwen2") => return Self::from_qwen(parse_mirror(&text, path, "Qwen2")?, Arch::Qwen2, path),
            Some("qwen3") => return Self::from_qwen(parse_mirror(&text, path, "Qwen3")?, Arch::Qwen3, path),
            Some("mistral") => return Self::from_mistral(parse_mirror(&text, path, "Mistral")?, path),
            Some("gemma3_text") => return Self::from_gemma3(parse_mirror(&text, path, "Gemma 3")?, path),
            Some("gemma2") => return Self::from_gemma2(parse_mirror(&text, path, "Gemma 2")?, path),
            Some(other) => {
                return Err(bad(
                    "model_type",
                    format!(
                        "`{other}` is not a supported architecture (llama, gemma, gemma2, gemma3_text, qwen2, qwen3, mistral)"
                    ),
                ))
            }
        };
        let hf: HfLlamaConfig = parse_mirror(&text, path, "LLaMA/Gemma")?;
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
        let rope_scaling = resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?;
        let gemma = arch == Arch::Gemma;
        let defaults = HfDefaults {
            tie_word_embeddings: gemma,
            max_position_embeddings: if gemma { 8192 } else { 2048 },
            ..DEFAULTS
        };
        Ok(LlmConfig {
            rope_scaling,
            activation,
            attention_bias: hf.attention_bias.unwrap_or(false),
            mlp_bias: hf.mlp_bias.unwrap_or(false),
            ..hf.shared(arch, &defaults, path)?
        })
    }

    /// A Qwen2 / Qwen3 `config.json` as transformers 4.57 reads it. Sliding-window layers are
    /// refused by name (not implemented yet); every full-attention config is exact.
    fn from_qwen(hf: HfQwenConfig, arch: Arch, path: &Path) -> Result<Self> {
        let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
        if hf.use_sliding_window == Some(true) || hf.layer_types.iter().flatten().any(|t| t != "full_attention") {
            return Err(bad(
                "use_sliding_window",
                "/ `layer_types`: sliding-window attention is not supported yet (full attention only)".into(),
            ));
        }
        let act = hf.hidden_act.as_deref().unwrap_or("silu");
        if Activation::from_hf(act) != Some(Activation::Silu) {
            return Err(bad("hidden_act", format!("`{act}` is not supported (silu)")));
        }
        if arch == Arch::Qwen2 && hf.attention_bias.is_some() {
            return Err(bad("attention_bias", "is not a Qwen2 field (its q/k/v always have biases)".into()));
        }
        // Qwen2 derives the head width; Qwen3Config defaults it to 128.
        let head_dim = if arch == Arch::Qwen3 { Some(128) } else { None };
        let defaults = HfDefaults { head_dim, max_position_embeddings: 32_768, ..DEFAULTS };
        Ok(LlmConfig {
            rope_scaling: resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?,
            attention_bias: hf.attention_bias.unwrap_or(false),
            ..hf.shared(arch, &defaults, path)?
        })
    }
}

impl LlmConfig {
    /// A Mistral `config.json` as transformers 4.57.1 reads it.
    fn from_mistral(hf: HfMistralConfig, path: &Path) -> Result<Self> {
        let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
        let act = hf.hidden_act.as_deref().unwrap_or("silu");
        if Activation::from_hf(act) != Some(Activation::Silu) {
            return Err(bad("hidden_act", format!("`{act}` is not supported (silu)")));
        }
        if hf.sliding_window.is_some_and(|w| w < 1) {
            return Err(bad("sliding_window", "must be at least 1 (or null for full attention)".into()));
        }
        let defaults = HfDefaults { max_position_embeddings: 4096 * 32, ..DEFAULTS };
        Ok(LlmConfig {
            arch: Arch::Mistral,
            sliding_window: hf.sliding_window,
            ..hf.shared(Arch::Mistral, &defaults, path)?
        })
    }
}

impl LlmConfig {
    /// A Gemma 3 text `config.json` (`gemma3_text`) as transformers 4.57.1 reads it.
    fn from_gemma3(hf: HfGemma3Config, path: &Path) -> Result<Self> {
        let bad = |field: &str, why: String| Error::Corrupt { path: path.into(), reason: format!("`{field}` {why}") };
        let activation = gemma_activation(hf.hidden_activation.as_deref(), path)?;
        if hf.use_bidirectional_attention == Some(true) {
            return Err(bad("use_bidirectional_attention", "is not supported (causal LMs only)".into()));
        }
        let layers = hf.num_hidden_layers;
        // transformers' default pattern: every `_sliding_window_pattern`-th layer is global.
        let pattern = hf.sliding_window_pattern.unwrap_or(6).max(1);
        let sliding = sliding_layers(hf.layer_types.as_deref(), layers, pattern, path)?;
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
            rope_scaling: resolve_rope_scaling(hf.rope_scaling.as_ref(), path)?,
            activation,
            attention_bias: hf.attention_bias.unwrap_or(false),
            sliding_window: Some(hf.sliding_window.unwrap_or(4096)),
            sliding_layers: Some(sliding),
            rope_local_theta: Some(hf.rope_local_base_freq.unwrap_or(10_000.0)),
            query_pre_attn_scalar: Some(hf.query_pre_attn_scalar.unwrap_or(256.0)),
            attn_logit_softcapping: hf.attn_logit_softcapping,
            final_logit_softcapping: hf.final_logit_softcapping,
            ..hf.shared(Arch::Gemma3, &defaults, path)?
        })
    }
}

impl LlmConfig {
    /// A Gemma 2 `config.json` as transformers 4.57.1 reads it.
    fn from_gemma2(hf: HfGemma2Config, path: &Path) -> Result<Self> {
        let activation = gemma_activation(hf.hidden_activation.as_deref(), path)?;
        let layers = hf.num_hidden_layers;
        // transformers' default: even layers (0, 2, ...) use the window.
        let sliding = sliding_layers(hf.layer_types.as_deref(), layers, 2, path)?;
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
}

/// Gemma 2/3's `hidden_activation` (tanh GELU when absent).
fn gemma_activation(name: Option<&str>, path: &Path) -> Result<Activation> {
    let act = name.unwrap_or("gelu_pytorch_tanh");
    match Activation::from_hf(act) {
        Some(a @ (Activation::GeluTanh | Activation::Gelu)) => Ok(a),
        _ => Err(Error::Corrupt {
            path: path.into(),
            reason: format!("`hidden_activation` `{act}` is not supported (gelu_pytorch_tanh, gelu)"),
        }),
    }
}

/// Which layers use the sliding window: `layer_types` when given, else every layer but each
/// `period`-th (transformers' default patterns: Gemma 2 alternates, Gemma 3 has one global layer
/// in six).
fn sliding_layers(types: Option<&[String]>, layers: i64, period: i64, path: &Path) -> Result<Vec<bool>> {
    let bad = |why: String| Error::Corrupt { path: path.into(), reason: format!("`layer_types` {why}") };
    match types {
        Some(types) => {
            if types.len() as i64 != layers {
                return Err(bad(format!("has {} entries for {layers} layers", types.len())));
            }
            types
                .iter()
                .map(|t| match t.as_str() {
                    "sliding_attention" => Ok(true),
                    "full_attention" => Ok(false),
                    other => Err(bad(format!("entry `{other}` is not supported"))),
                })
                .collect()
        }
        None => Ok((0..layers).map(|i| (i + 1) % period.max(1) != 0).collect()),
    }
}

/// Reads a config mirror; an unknown field is named as such (serde's "unknown field" message,
/// reworded), any other problem with its line and column.
fn parse_mirror<T: serde::de::DeserializeOwned>(text: &str, path: &Path, family: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // serde says "unknown field `x`, expected one of ... at line L column C".
        let unknown = msg.strip_prefix("unknown field `").and_then(|r| r.split_once("`, "));
        let reason = match unknown {
            Some((field, rest)) => format!("`{field}` is not a supported {family} config field ({rest})"),
            None => format!("not a {family} config.json as transformers reads it: {msg}"),
        };
        Error::Corrupt { path: path.into(), reason }
    })
}

/// Head count and width must be positive (the head width is derived from them).
pub(super) fn check_heads(heads: i64, hidden: i64, path: &Path) -> Result<i64> {
    if heads <= 0 || hidden <= 0 {
        return Err(Error::Corrupt {
            path: path.into(),
            reason: format!("`num_attention_heads` {heads} and hidden_size {hidden} must be positive"),
        });
    }
    Ok(heads)
}

/// `rope_scaling` as transformers resolves it, for the types moram implements.
fn resolve_rope_scaling(rs: Option<&HfRopeScaling>, path: &Path) -> Result<Option<RopeScaling>> {
    let bad = |why: String| Error::Corrupt { path: path.into(), reason: format!("`rope_scaling` {why}") };
    let Some(rs) = rs else { return Ok(None) };
    let g = |v: Option<f64>, k: &str| v.ok_or_else(|| bad(format!("lacks `{k}`")));
    let scaling = match rs.rope_type.as_deref().or(rs.kind.as_deref()).unwrap_or("") {
        "default" => None,
        "linear" => Some(RopeScaling::Linear { factor: g(rs.factor, "factor")? }),
        "dynamic" => Some(RopeScaling::Dynamic { factor: g(rs.factor, "factor")? }),
        "llama3" => Some(RopeScaling::Llama3(Llama3Scaling {
            factor: g(rs.factor, "factor")?,
            low_freq_factor: g(rs.low_freq_factor, "low_freq_factor")?,
            high_freq_factor: g(rs.high_freq_factor, "high_freq_factor")?,
            original_max_position_embeddings: g(
                rs.original_max_position_embeddings,
                "original_max_position_embeddings",
            )?,
        })),
        other => return Err(bad(format!("type `{other}` is not supported (default, linear, dynamic, llama3)"))),
    };
    if let Some(RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor }) = scaling {
        if !(factor.is_finite() && factor >= 1.0) {
            return Err(bad(format!("factor must be >= 1, found {factor}")));
        }
    }
    Ok(scaling)
}

/// Declares a serde mirror of a Hugging Face `config.json`: the fields every LLaMA-like family
/// shares, the family's own, and the bookkeeping fields `transformers` writes (read and dropped).
/// Unknown fields are errors that name them.
macro_rules! hf_mirror {
    ($(#[$doc:meta])* $name:ident { $($(#[$attr:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct $name {
            #[allow(dead_code)]
            model_type: Option<String>,
            vocab_size: i64,
            hidden_size: i64,
            intermediate_size: i64,
            num_hidden_layers: i64,
            num_attention_heads: i64,
            num_key_value_heads: Option<i64>,
            head_dim: Option<i64>,
            max_position_embeddings: Option<i64>,
            rms_norm_eps: Option<f64>,
            rope_theta: Option<f64>,
            tie_word_embeddings: Option<bool>,
            bos_token_id: Option<i64>,
            eos_token_id: Option<TokenIds>,
            attention_dropout: Option<f64>,
            $($(#[$attr])* $field: $ty,)*
            #[serde(rename = "architectures")]
            _architectures: Option<IgnoredAny>,
            #[serde(rename = "pad_token_id")]
            _pad_token_id: Option<IgnoredAny>,
            #[serde(rename = "initializer_range")]
            _initializer_range: Option<IgnoredAny>,
            #[serde(rename = "use_cache")]
            _use_cache: Option<IgnoredAny>,
            #[serde(rename = "torch_dtype")]
            _torch_dtype: Option<IgnoredAny>,
            #[serde(rename = "dtype")]
            _dtype: Option<IgnoredAny>,
            #[serde(rename = "transformers_version")]
            _transformers_version: Option<IgnoredAny>,
            #[serde(rename = "_name_or_path")]
            _name_or_path: Option<IgnoredAny>,
            #[serde(rename = "output_attentions")]
            _output_attentions: Option<IgnoredAny>,
            #[serde(rename = "output_hidden_states")]
            _output_hidden_states: Option<IgnoredAny>,
            #[serde(rename = "return_dict")]
            _return_dict: Option<IgnoredAny>,
        }

        impl $name {
            /// The fields every family reads the same way, with the family's defaults `d`, after
            /// checking the head count and that attention dropout is 0; the family-specific
            /// fields are left neutral (SiLU, no biases, no window) for the family to set.
            fn shared(&self, arch: Arch, d: &HfDefaults, path: &Path) -> Result<LlmConfig> {
                if self.attention_dropout.unwrap_or(0.0) != 0.0 {
                    return Err(Error::Corrupt {
                        path: path.into(),
                        reason: "`attention_dropout` other than 0 is not supported".into(),
                    });
                }
                let heads = check_heads(self.num_attention_heads, self.hidden_size, path)?;
                let kv = self.num_key_value_heads.unwrap_or(heads);
                // The neutral family-specific fields (SiLU, no biases, no window) come from the
                // LLaMA base; every field the config file sets is read here.
                let base = LlmConfig::llama(
                    self.vocab_size,
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_hidden_layers,
                    heads,
                    kv,
                );
                Ok(LlmConfig {
                    arch,
                    head_dim: self.head_dim.or(d.head_dim).unwrap_or(self.hidden_size / heads),
                    rms_norm_eps: self.rms_norm_eps.unwrap_or(d.rms_norm_eps),
                    rope_theta: self.rope_theta.unwrap_or(d.rope_theta),
                    tie_word_embeddings: self.tie_word_embeddings.unwrap_or(d.tie_word_embeddings),
                    max_position_embeddings: self.max_position_embeddings.unwrap_or(d.max_position_embeddings),
                    bos_token_id: self.bos_token_id.or(d.bos_token_id),
                    eos_token_ids: self.eos_token_id.clone().map_or_else(|| d.eos_token_ids.to_vec(), TokenIds::into_vec),
                    ..base
                })
            }
        }
    };
}

/// What a family's `config.json` means when a shared field is absent (its transformers defaults).
struct HfDefaults {
    head_dim: Option<i64>,
    rms_norm_eps: f64,
    rope_theta: f64,
    tie_word_embeddings: bool,
    max_position_embeddings: i64,
    bos_token_id: Option<i64>,
    eos_token_ids: &'static [i64],
}

/// Defaults of most families: head width from the heads, eps 1e-6, RoPE base 10,000, untied head.
const DEFAULTS: HfDefaults = HfDefaults {
    head_dim: None,
    rms_norm_eps: 1e-6,
    rope_theta: 10_000.0,
    tie_word_embeddings: false,
    max_position_embeddings: 2048,
    bos_token_id: None,
    eos_token_ids: &[],
};

hf_mirror! {
    /// `LlamaConfig` / `GemmaConfig` (the two share their fields in transformers 4.45.2).
    HfLlamaConfig {
        hidden_act: Option<String>,
        hidden_activation: Option<String>,
        rope_scaling: Option<HfRopeScaling>,
        attention_bias: Option<bool>,
        mlp_bias: Option<bool>,
        pretraining_tp: Option<i64>,
    }
}

hf_mirror! {
    /// `Qwen2Config` / `Qwen3Config` (transformers 4.57.1). The window size and which layers would
    /// use it matter only with `use_sliding_window`, which is refused, so they are dropped.
    HfQwenConfig {
        hidden_act: Option<String>,
        rope_scaling: Option<HfRopeScaling>,
        attention_bias: Option<bool>,
        use_sliding_window: Option<bool>,
        layer_types: Option<Vec<String>>,
        #[serde(rename = "sliding_window")]
        _sliding_window: Option<IgnoredAny>,
        #[serde(rename = "max_window_layers")]
        _max_window_layers: Option<IgnoredAny>,
    }
}

hf_mirror! {
    /// `MistralConfig` (transformers 4.57.1).
    HfMistralConfig {
        hidden_act: Option<String>,
        sliding_window: Option<i64>,
    }
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
    }
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
        #[serde(rename = "_sliding_window_pattern", alias = "sliding_window_pattern")]
        sliding_window_pattern: Option<i64>,
        layer_types: Option<Vec<String>>,
        attn_logit_softcapping: Option<f64>,
        final_logit_softcapping: Option<f64>,
        use_bidirectional_attention: Option<bool>,
    }
}

/// `rope_scaling`: the type under `rope_type` (or the older `type`) and its parameters. Other
/// keys are not errors here: they belong to scaling types moram refuses by name.
#[derive(Deserialize)]
struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
}

/// `eos_token_id`: one id or several.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    fn into_vec(self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}
