//! A decoder-LLM configuration from a llama.cpp GGUF file's metadata (`{architecture}.*` keys) and
//! which tensors it holds.

use super::config::{Activation, Arch, LlmConfig};
use super::gguf::{GgufFile, Value};
use super::hf_config::HfRopeScaling;
use super::rope::RopeScaling;
use crate::error::{Error, Result};

impl LlmConfig {
    /// Reads a llama.cpp GGUF file's `{architecture}.*` metadata (`llama`, `gemma`, `qwen2`,
    /// `qwen3`, `gemma2`, `gemma3`) and which tensors exist (biases, `output.weight`). What llama.cpp fixes
    /// in code instead of storing, this fixes the same way: Gemma 3's local layers use RoPE base
    /// 10,000 with a global layer every sixth, Gemma 2 alternates windowed and global layers, and
    /// Gemma scores are scaled by `head_dim^-1/2` (every size but the 27B ones).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let path = gguf.path();
        let name = gguf.get("general.architecture").and_then(Value::as_str).unwrap_or("<missing>");
        let arch = match super::families::gguf_family(name) {
            Some(f) => f.arch(),
            None => {
                return Err(Error::Corrupt {
                    path: path.into(),
                    reason: format!(
                        "general.architecture `{name}` is not supported yet ({})",
                        super::families::gguf_architectures().join(", ")
                    ),
                })
            }
        };
        let key = |k: &str| format!("{name}.{k}");
        let u = |k: &str| gguf.require_u64(&key(k)).map(|v| v as i64);
        let opt = |k: &str| gguf.get(&key(k)).and_then(Value::as_u64).map(|v| v as i64);
        let f = |k: &str, default: f64| gguf.get(&key(k)).and_then(Value::as_f64).unwrap_or(default);
        let rope_scaling = rope_scaling(gguf, name)?;
        let hidden = u("embedding_length")?;
        let heads = super::hf_config::check_heads(u("attention.head_count")?, hidden, path)?;
        let layers = u("block_count")?;
        let head_dim = opt("attention.key_length").or(opt("rope.dimension_count")).unwrap_or(hidden / heads);
        let rope_freq_factors = rope_freq_factors(gguf, head_dim)?;
        let vocab = opt("vocab_size").unwrap_or_else(|| {
            gguf.get("tokenizer.ggml.tokens").and_then(Value::as_array).map(|a| a.len() as i64).unwrap_or(0)
        });
        let has = |hf: &str| gguf.tensors.contains_key(&super::families::gguf_name(arch, hf).0);
        let id = |k: &str| gguf.get(k).and_then(Value::as_u64).map(|v| v as i64);
        let gemma = matches!(arch, Arch::Gemma2 | Arch::Gemma3);
        let window = if gemma { Some(u("attention.sliding_window")?) } else { None };
        let sliding_layers = match arch {
            Arch::Gemma2 => Some((0..layers).map(|i| i % 2 == 0).collect()),
            Arch::Gemma3 => Some((0..layers).map(|i| (i + 1) % 6 != 0).collect()),
            _ => None,
        };
        let softcap = |k: &str| gguf.get(&key(k)).and_then(Value::as_f64);
        Ok(LlmConfig {
            arch,
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: u("feed_forward_length")?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: opt("attention.head_count_kv").unwrap_or(heads),
            head_dim,
            rms_norm_eps: f("attention.layer_norm_rms_epsilon", if arch == Arch::Llama { 1e-5 } else { 1e-6 }),
            rope_theta: f("rope.freq_base", 10_000.0),
            tie_word_embeddings: !has("lm_head.weight"),
            rope_scaling,
            max_position_embeddings: opt("context_length").unwrap_or(4096),
            activation: if gemma || arch == Arch::Gemma { Activation::GeluTanh } else { Activation::Silu },
            attention_bias: has("model.layers.0.self_attn.q_proj.bias"),
            mlp_bias: has("model.layers.0.mlp.up_proj.bias"),
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids: id("tokenizer.ggml.eos_token_id").into_iter().collect(),
            // llama.cpp has no sliding window for LLaMA-architecture files (Mistral 7B included).
            sliding_window: window,
            sliding_layers,
            rope_local_theta: (arch == Arch::Gemma3).then(|| f("rope.freq_base_swa", 10_000.0)),
            // llama.cpp: 1/sqrt(hidden / heads) for Gemma 2 27B (46 layers), 1/sqrt(head_dim) else.
            query_pre_attn_scalar: match (arch, layers) {
                (Arch::Gemma2, 46) => Some((hidden / heads) as f64),
                _ => gemma.then_some(head_dim as f64),
            },
            attn_logit_softcapping: softcap("attn_logit_softcapping"),
            final_logit_softcapping: softcap("final_logit_softcapping"),
            rope_freq_factors,
        })
    }
}

/// `{arch}.rope.scaling.*`, as llama.cpp's converter writes a Hugging Face `rope_scaling`: `linear`
/// (Gemma 3 4B and larger) with its factor, and `yarn` (Qwen2.5 / Qwen3 long-context configs) with
/// its factor, original context and, where the config set them, betas and attention factor. The
/// keys are mapped back to the config's and resolved as a Hugging Face config is, so what the
/// converter leaves out takes `transformers`' default. `none` or no key: no scaling (a LLaMA 3.x
/// file carries its scaling in `rope_freqs.weight` instead).
fn rope_scaling(gguf: &GgufFile, arch: &str) -> Result<Option<RopeScaling>> {
    let key = |k: &str| format!("{arch}.rope.scaling.{k}");
    let corrupt = |reason: String| Error::Corrupt { path: gguf.path().into(), reason };
    let kind = match gguf.get(&key("type")).and_then(Value::as_str) {
        None | Some("none") => return Ok(None),
        Some(kind @ ("linear" | "yarn")) => kind,
        Some(kind) => {
            return Err(corrupt(format!(
                "`{}` `{kind}` is not supported yet (none, linear, yarn; LLaMA 3.x: rope_freqs)",
                key("type")
            )))
        }
    };
    if let Some(ext) = gguf.get(&key("yarn_ext_factor")).and_then(Value::as_f64).filter(|e| *e != 1.0) {
        return Err(corrupt(format!(
            "`{}` {ext} is not supported (transformers' YaRN has no extrapolation factor)",
            key("yarn_ext_factor")
        )));
    }
    let mut hf = serde_json::Map::new();
    hf.insert("rope_type".into(), kind.into());
    for (gguf_key, hf_key) in [
        ("factor", "factor"),
        ("original_context_length", "original_max_position_embeddings"),
        ("yarn_attn_factor", "attention_factor"),
        ("yarn_beta_fast", "beta_fast"),
        ("yarn_beta_slow", "beta_slow"),
    ] {
        if let Some(v) = gguf.get(&key(gguf_key)).and_then(Value::as_f64) {
            hf.insert(hf_key.into(), v.into());
        }
    }
    let hf: HfRopeScaling = serde_json::from_value(hf.into())
        .map_err(|e| corrupt(format!("`{}.*` do not form a RoPE scaling: {e}", key("").trim_end_matches('.'))))?;
    super::hf_config::resolve_rope_scaling(Some(&hf), gguf.path())
}

/// `rope_freqs.weight`: llama.cpp's converter writes a LLaMA 3.x model's `llama3` RoPE scaling as
/// one divisor per frequency (1 for short wavelengths, the factor for long ones, a blend between),
/// which its RoPE divides each frequency by. Checked: `head_dim / 2` positive finite values.
fn rope_freq_factors(gguf: &GgufFile, head_dim: i64) -> Result<Option<Vec<f32>>> {
    const NAME: &str = "rope_freqs.weight";
    if !gguf.tensors.contains_key(NAME) {
        return Ok(None);
    }
    let t = gguf.tensor(NAME)?.to_kind(tch::Kind::Float).reshape([-1]);
    let factors =
        Vec::<f32>::try_from(&t).map_err(|e| Error::Corrupt { path: gguf.path().into(), reason: e.to_string() })?;
    if factors.len() as i64 != head_dim / 2 || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
        return Err(Error::Corrupt {
            path: gguf.path().into(),
            reason: format!(
                "`{NAME}` must hold head_dim / 2 = {} positive finite factors, found {} values",
                head_dim / 2,
                factors.len()
            ),
        });
    }
    Ok(Some(factors))
}
