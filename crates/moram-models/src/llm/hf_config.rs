//! What every family's `config.json` reader shares: the serde mirror macro (the fields all
//! LLaMA-like families have, and `transformers`' bookkeeping fields read and dropped), the
//! defaults of absent fields, `rope_scaling`, token id lists, and Gemma's activation and window
//! pattern readers. Unknown fields are errors that name them.

use super::config::{Activation, Llama3Scaling, RopeScaling};
use super::rope::YarnScaling;
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Gemma 2/3's `hidden_activation` (tanh GELU when absent).
pub(crate) fn gemma_activation(name: Option<&str>, path: &Path) -> Result<Activation> {
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
pub(crate) fn sliding_layers(types: Option<&[String]>, layers: i64, period: i64, path: &Path) -> Result<Vec<bool>> {
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
pub(crate) fn parse_mirror<T: serde::de::DeserializeOwned>(text: &str, path: &Path, family: &str) -> Result<T> {
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
pub(crate) fn check_heads(heads: i64, hidden: i64, path: &Path) -> Result<i64> {
    if heads <= 0 || hidden <= 0 {
        return Err(Error::Corrupt {
            path: path.into(),
            reason: format!("`num_attention_heads` {heads} and hidden_size {hidden} must be positive"),
        });
    }
    Ok(heads)
}

/// `rope_scaling` as transformers resolves it, for the types moram implements.
pub(crate) fn resolve_rope_scaling(rs: Option<&HfRopeScaling>, path: &Path) -> Result<Option<RopeScaling>> {
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
        "yarn" => {
            let factor = g(rs.factor, "factor")?;
            // transformers 4.57.1: `0.1 * mscale * ln(scale) + 1` (1 for scale <= 1).
            let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attention_factor = match (rs.attention_factor, rs.mscale, rs.mscale_all_dim) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => get_mscale(factor, m) / get_mscale(factor, all),
                _ => get_mscale(factor, 1.0),
            };
            Some(RopeScaling::Yarn(YarnScaling {
                factor,
                original_max_position_embeddings: rs.original_max_position_embeddings,
                // `or` as Python's: 0 counts as unset.
                beta_fast: rs.beta_fast.filter(|b| *b != 0.0).unwrap_or(32.0),
                beta_slow: rs.beta_slow.filter(|b| *b != 0.0).unwrap_or(1.0),
                attention_factor,
                truncate: rs.truncate.unwrap_or(true),
            }))
        }
        other => return Err(bad(format!("type `{other}` is not supported (default, linear, dynamic, llama3, yarn)"))),
    };
    if let Some(RopeScaling::Yarn(y)) = scaling {
        if !(y.factor.is_finite() && y.factor >= 1.0 && y.attention_factor.is_finite() && y.attention_factor > 0.0) {
            return Err(bad(format!(
                "(yarn) needs factor >= 1 and a positive attention factor, found {} and {}",
                y.factor, y.attention_factor
            )));
        }
    }
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
        #[derive(serde::Deserialize)]
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
            eos_token_id: Option<$crate::llm::hf_config::TokenIds>,
            attention_dropout: Option<f64>,
            $($(#[$attr])* $field: $ty,)*
            #[serde(rename = "architectures")]
            _architectures: Option<serde::de::IgnoredAny>,
            #[serde(rename = "pad_token_id")]
            _pad_token_id: Option<serde::de::IgnoredAny>,
            #[serde(rename = "initializer_range")]
            _initializer_range: Option<serde::de::IgnoredAny>,
            #[serde(rename = "use_cache")]
            _use_cache: Option<serde::de::IgnoredAny>,
            #[serde(rename = "torch_dtype")]
            _torch_dtype: Option<serde::de::IgnoredAny>,
            #[serde(rename = "dtype")]
            _dtype: Option<serde::de::IgnoredAny>,
            #[serde(rename = "transformers_version")]
            _transformers_version: Option<serde::de::IgnoredAny>,
            #[serde(rename = "_name_or_path")]
            _name_or_path: Option<serde::de::IgnoredAny>,
            #[serde(rename = "output_attentions")]
            _output_attentions: Option<serde::de::IgnoredAny>,
            #[serde(rename = "output_hidden_states")]
            _output_hidden_states: Option<serde::de::IgnoredAny>,
            #[serde(rename = "return_dict")]
            _return_dict: Option<serde::de::IgnoredAny>,
            // Settings of transformers.js (the browser runtime), which SmolLM2 publishes.
            #[serde(rename = "transformers.js_config")]
            _transformers_js_config: Option<serde::de::IgnoredAny>,
        }

        impl $name {
            /// The fields every family reads the same way, with the family's defaults `d`, after
            /// checking the head count and that attention dropout is 0; the family-specific
            /// fields are left neutral (SiLU, no biases, no window) for the family to set.
            fn shared(
                &self,
                arch: $crate::llm::Arch,
                d: &$crate::llm::hf_config::HfDefaults,
                path: &std::path::Path,
            ) -> $crate::Result<$crate::llm::LlmConfig> {
                if self.attention_dropout.unwrap_or(0.0) != 0.0 {
                    return Err($crate::Error::Corrupt {
                        path: path.into(),
                        reason: "`attention_dropout` other than 0 is not supported".into(),
                    });
                }
                let heads = $crate::llm::hf_config::check_heads(self.num_attention_heads, self.hidden_size, path)?;
                let kv = self.num_key_value_heads.unwrap_or(heads);
                // The neutral family-specific fields (SiLU, no biases, no window) come from the
                // LLaMA base; every field the config file sets is read here.
                let base = $crate::llm::LlmConfig::llama(
                    self.vocab_size,
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_hidden_layers,
                    heads,
                    kv,
                );
                Ok($crate::llm::LlmConfig {
                    arch,
                    head_dim: self.head_dim.or(d.head_dim).unwrap_or(self.hidden_size / heads),
                    rms_norm_eps: self.rms_norm_eps.unwrap_or(d.rms_norm_eps),
                    rope_theta: self.rope_theta.unwrap_or(d.rope_theta),
                    tie_word_embeddings: self.tie_word_embeddings.unwrap_or(d.tie_word_embeddings),
                    max_position_embeddings: self.max_position_embeddings.unwrap_or(d.max_position_embeddings),
                    bos_token_id: self.bos_token_id.or(d.bos_token_id),
                    eos_token_ids: self
                        .eos_token_id
                        .clone()
                        .map_or_else(|| d.eos_token_ids.to_vec(), $crate::llm::hf_config::TokenIds::into_vec),
                    ..base
                })
            }
        }
    };
}

/// What a family's `config.json` means when a shared field is absent (its transformers defaults).
pub(crate) struct HfDefaults {
    pub(crate) head_dim: Option<i64>,
    pub(crate) rms_norm_eps: f64,
    pub(crate) rope_theta: f64,
    pub(crate) tie_word_embeddings: bool,
    pub(crate) max_position_embeddings: i64,
    pub(crate) bos_token_id: Option<i64>,
    pub(crate) eos_token_ids: &'static [i64],
}

/// Defaults of most families: head width from the heads, eps 1e-6, RoPE base 10,000, untied head.
pub(crate) const DEFAULTS: HfDefaults = HfDefaults {
    head_dim: None,
    rms_norm_eps: 1e-6,
    rope_theta: 10_000.0,
    tie_word_embeddings: false,
    max_position_embeddings: 2048,
    bos_token_id: None,
    eos_token_ids: &[],
};

/// `rope_scaling`: the type under `rope_type` (or the older `type`) and its parameters. Other
/// keys are not errors here: they belong to scaling types moram refuses by name.
#[derive(Deserialize)]
pub(crate) struct HfRopeScaling {
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original_max_position_embeddings: Option<f64>,
    attention_factor: Option<f64>,
    beta_fast: Option<f64>,
    beta_slow: Option<f64>,
    mscale: Option<f64>,
    mscale_all_dim: Option<f64>,
    truncate: Option<bool>,
}

/// `eos_token_id`: one id or several.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum TokenIds {
    One(i64),
    Many(Vec<i64>),
}

impl TokenIds {
    pub(crate) fn into_vec(self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![id],
            TokenIds::Many(ids) => ids,
        }
    }
}

pub(crate) use hf_mirror;
