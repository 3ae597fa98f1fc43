//! The decoder families moram builds, one file each: its presets, its `config.json` mirror and
//! reader, and its block layout table, behind [`Family`]. The shared pieces are composed, not
//! copied: `hf_config.rs` (the mirror machinery), `layout.rs` (layout building blocks), the block
//! (`llama.rs`) and the model shell. Adding a family: a file here, its `mod` line, one line in
//! [`FAMILIES`] and its [`Arch`] variant (what the block switches on). GGUF metadata is read by
//! `gguf_config.rs` for the families whose [`Family::gguf_architecture`] llama.cpp writes.

pub mod gemma;
pub mod gemma2;
pub mod gemma3;
pub mod llama;
pub mod mistral;
pub mod qwen2;
pub mod qwen3;

use super::config::{Arch, LlmConfig, Preset};
use super::layout::{BlockLayout, BlockTensor, Permute, LLAMA_GLOBALS};
use crate::error::{Error, Result};
use std::path::Path;

/// What one decoder family is.
pub trait Family: Sync {
    /// The family's switch for the shared block.
    fn arch(&self) -> Arch;
    /// The `model_type` values of its `config.json`.
    fn model_types(&self) -> &'static [&'static str];
    /// llama.cpp's `general.architecture` for it, when moram reads its GGUF files.
    fn gguf_architecture(&self) -> Option<&'static str>;
    /// Its presets, by name.
    fn presets(&self) -> &'static [Preset];
    /// Reads its `config.json` (`text`, from `path`) as `transformers` does; fields moram does not
    /// implement are errors that name them.
    fn read_hf(&self, text: &str, path: &Path) -> Result<LlmConfig>;
    /// Its block's tensors.
    fn layout(&self) -> &'static BlockLayout;
}

/// Every family, in listing order. One line per family.
pub static FAMILIES: &[&dyn Family] =
    &[&llama::Llama, &gemma::Gemma, &qwen2::Qwen2, &qwen3::Qwen3, &mistral::Mistral, &gemma3::Gemma3, &gemma2::Gemma2];

/// The family of `arch`.
pub fn family(arch: Arch) -> &'static dyn Family {
    FAMILIES.iter().copied().find(|f| f.arch() == arch).unwrap_or(&llama::Llama)
}

/// The family whose GGUF files say `general.architecture = name`.
pub fn gguf_family(name: &str) -> Option<&'static dyn Family> {
    FAMILIES.iter().copied().find(|f| f.gguf_architecture() == Some(name))
}

/// The GGUF architectures moram reads, for messages.
pub fn gguf_architectures() -> Vec<&'static str> {
    FAMILIES.iter().filter_map(|f| f.gguf_architecture()).collect()
}

/// The block layout of a family.
pub fn block_table(arch: Arch) -> &'static BlockLayout {
    family(arch).layout()
}

/// Whether llama.cpp's converter stored the family's RMSNorm weights as `1 + w` (Gemma's).
pub fn gguf_norms_include_one(arch: Arch) -> bool {
    matches!(arch, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3)
}

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
    /// Every preset of every family, by name.
    pub fn presets() -> impl Iterator<Item = &'static Preset> {
        FAMILIES.iter().flat_map(|f| f.presets())
    }

    /// A preset by name (see [`LlmConfig::presets`]).
    pub fn preset(name: &str) -> Result<Self> {
        match Self::presets().find(|(n, _)| *n == name) {
            Some((_, build)) => Ok(build()),
            None => {
                let names: Vec<&str> = Self::presets().map(|(n, _)| *n).collect();
                Err(Error::Target(format!("`{name}` is not an LLM preset; valid: {}", names.join(", "))))
            }
        }
    }

    /// Reads a Hugging Face `config.json` as `transformers` reads it: its `model_type` picks the
    /// family (`llama` when absent) and the family reads the rest. An unsupported `model_type` is
    /// named first, before the fields of its own would be reported as unknown keys.
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt { path: path.into(), reason: format!("invalid JSON: {e}") })?;
        let model_type = json.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("llama");
        if model_type == "gemma3" {
            return Self::gemma3_text_of_multimodal(&json, path);
        }
        match FAMILIES.iter().find(|f| f.model_types().contains(&model_type)) {
            Some(f) => f.read_hf(&text, path),
            None => {
                let known: Vec<&str> = FAMILIES.iter().flat_map(|f| f.model_types().iter().copied()).collect();
                Err(Error::Corrupt {
                    path: path.into(),
                    reason: format!(
                        "`model_type` `{model_type}` is not a supported architecture ({})",
                        known.join(", ")
                    ),
                })
            }
        }
    }

    /// The language model of a `Gemma3ForConditionalGeneration` config (`model_type` `gemma3`,
    /// Gemma 3 4B and larger): its `text_config` read as a `gemma3_text` config, as transformers
    /// builds the text model from it, with the top-level `eos_token_id` when the text config has
    /// none (where the published files keep it). The vision tower is not moram's concern; the
    /// checkpoint's weights sit under `language_model.` there and are not read by this loader.
    fn gemma3_text_of_multimodal(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let Some(text) = json.get("text_config").and_then(serde_json::Value::as_object) else {
            return Err(Error::Corrupt {
                path: path.into(),
                reason: "`model_type` `gemma3` (Gemma3ForConditionalGeneration) needs a `text_config` object".into(),
            });
        };
        let mut text = text.clone();
        text.entry("model_type").or_insert_with(|| "gemma3_text".into());
        for key in ["eos_token_id", "bos_token_id", "pad_token_id"] {
            if let (None, Some(v)) = (text.get(key), json.get(key)) {
                text.insert(key.into(), v.clone());
            }
        }
        let family = FAMILIES
            .iter()
            .find(|f| f.model_types().contains(&"gemma3_text"))
            .ok_or_else(|| Error::Corrupt { path: path.into(), reason: "no gemma3_text family".into() })?;
        let text = serde_json::to_string(&text)
            .map_err(|e| Error::Corrupt { path: path.into(), reason: format!("`text_config`: {e}") })?;
        family.read_hf(&text, path).map_err(|e| match e {
            Error::Corrupt { path, reason } => Error::Corrupt { path, reason: format!("in `text_config`: {reason}") },
            other => other,
        })
    }

    /// `(module, d_in, d_out)` of the seven linear layers of one block (the family's table).
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

    /// Every adaptable linear layer as [`crate::LinearSite`]s (encoder `decoder`), block by block in
    /// table order: what a [`crate::TargetSpec`] selects from, known before any weight is loaded.
    pub fn linear_sites(&self) -> Vec<crate::LinearSite> {
        (0..self.num_hidden_layers as usize)
            .flat_map(|i| {
                block_linears(self.arch).map(move |t| crate::LinearSite {
                    path: format!("model.layers.{i}.{}", t.hf),
                    encoder: "decoder".into(),
                    layer: i,
                    module: t.module.unwrap_or(t.hf).into(),
                })
            })
            .collect()
    }

    /// Elements of the tensors one token leaves for backward in one block that gradient passes
    /// through, as moram's block computes it: each norm's input and normalised input (a per-head
    /// q/k norm spans all heads); q, k, v; the rotary inputs, their rotated halves and outputs; k
    /// and v repeated to every query head; the attention output and its contiguous copy for
    /// `o_proj`; the MLP's gate, up, activation and product. Attention keeps only a per-head
    /// log-sum-exp beyond that (flash / memory-efficient kernels). The unit of the memory plan
    /// (`docs/performance.md`, "Memory plan"), which scales it by a measured factor; atoms add
    /// their own scores.
    pub fn saved_elements_per_token(&self) -> i64 {
        let (h, kv) = (self.hidden_size, self.num_key_value_heads * self.head_dim);
        let q = self.num_attention_heads * self.head_dim;
        let norms: i64 = block_norms(self.arch)
            .map(|t| match t.hf {
                n if n.contains("q_norm") => q,
                n if n.contains("k_norm") => kv,
                _ => h,
            })
            .map(|width| 2 * width)
            .sum();
        norms + (q + 2 * kv) + 2 * (q + kv) + (q + kv) + 2 * q + 2 * q + 4 * self.intermediate_size
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
