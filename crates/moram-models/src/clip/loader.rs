//! Where each CLIP tensor comes from, in the two checkpoint layouts users hold.
//!
//! The model is built in Hugging Face key space (`vision_model.encoder.layers.{i}.self_attn.q_proj`,
//! ...). For an OpenAI / open_clip state dict (`visual.transformer.resblocks.{i}.attn.in_proj_weight`,
//! ...) each Hugging Face name is mapped to its source key and a transform: the fused `in_proj`
//! is split into q/k/v rows at load time (as the official X-TAIL wrapper does) and the
//! `proj` / `text_projection` matrices, applied as `x @ P` there, are transposed.

use super::config::ClipConfig;
use crate::error::Result;
use crate::weights::WeightSource;
use tch::{Device, Kind, Tensor};

/// The key layout of a CLIP checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Hugging Face `CLIPModel` (`vision_model.*`, `text_model.*`, `visual_projection`, ...).
    HuggingFace,
    /// OpenAI / open_clip (`visual.*`, `transformer.resblocks.*`, `text_projection`, ...).
    OpenAi,
}

impl Layout {
    /// Guesses the layout from the keys present.
    pub fn detect(source: &WeightSource) -> Option<Layout> {
        if source.contains("vision_model.embeddings.class_embedding") {
            Some(Layout::HuggingFace)
        } else if source.contains("visual.class_embedding") {
            Some(Layout::OpenAi)
        } else {
            None
        }
    }

    /// Keys a checkpoint of this layout may hold that the model does not use.
    pub fn ignorable(self, key: &str) -> bool {
        match self {
            Layout::HuggingFace => key.ends_with("position_ids"),
            Layout::OpenAi => matches!(key, "input_resolution" | "context_length" | "vocab_size" | "attn_mask"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transform {
    Direct,
    Transpose,
    /// Rows `[j * n, (j + 1) * n)` of a fused `(3n, ..)` tensor.
    Chunk(i64),
}

/// The OpenAI key and transform for a Hugging Face CLIP tensor name.
fn openai_key(hf: &str) -> (String, Transform) {
    use Transform::*;
    let direct = |s: String| (s, Direct);
    let fixed = [
        ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
        ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
        ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
        ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
        ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
        ("vision_model.post_layernorm.weight", "visual.ln_post.weight"),
        ("vision_model.post_layernorm.bias", "visual.ln_post.bias"),
        ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
        ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
        ("text_model.final_layer_norm.weight", "ln_final.weight"),
        ("text_model.final_layer_norm.bias", "ln_final.bias"),
        ("logit_scale", "logit_scale"),
    ];
    if let Some((_, o)) = fixed.iter().find(|(h, _)| *h == hf) {
        return direct(o.to_string());
    }
    match hf {
        "visual_projection.weight" => return ("visual.proj".into(), Transpose),
        "text_projection.weight" => return ("text_projection".into(), Transpose),
        _ => {}
    }
    let (prefix, rest) = if let Some(r) = hf.strip_prefix("vision_model.encoder.layers.") {
        ("visual.transformer.resblocks.", r)
    } else if let Some(r) = hf.strip_prefix("text_model.encoder.layers.") {
        ("transformer.resblocks.", r)
    } else {
        return direct(hf.to_string());
    };
    let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let base = format!("{prefix}{layer}.");
    let (part, suffix) = tail.rsplit_once('.').unwrap_or((tail, ""));
    let chunk = |j| (format!("{base}attn.in_proj_{suffix}"), Chunk(j));
    match part {
        "self_attn.q_proj" => chunk(0),
        "self_attn.k_proj" => chunk(1),
        "self_attn.v_proj" => chunk(2),
        "self_attn.out_proj" => direct(format!("{base}attn.out_proj.{suffix}")),
        "layer_norm1" => direct(format!("{base}ln_1.{suffix}")),
        "layer_norm2" => direct(format!("{base}ln_2.{suffix}")),
        "mlp.fc1" => direct(format!("{base}mlp.c_fc.{suffix}")),
        "mlp.fc2" => direct(format!("{base}mlp.c_proj.{suffix}")),
        _ => direct(hf.to_string()),
    }
}

/// The source key and its shape for a Hugging Face name and shape.
fn source_key(layout: Layout, hf: &str, shape: &[i64]) -> (String, Vec<i64>, Transform) {
    match layout {
        Layout::HuggingFace => (hf.to_string(), shape.to_vec(), Transform::Direct),
        Layout::OpenAi => {
            let (key, t) = openai_key(hf);
            let source_shape = match t {
                Transform::Direct => shape.to_vec(),
                Transform::Transpose => shape.iter().rev().copied().collect(),
                Transform::Chunk(_) => {
                    let mut s = shape.to_vec();
                    s[0] *= 3;
                    s
                }
            };
            (key, source_shape, t)
        }
    }
}

/// Every tensor the model needs, in Hugging Face key space, with its shape.
pub fn hf_tensors(c: &ClipConfig) -> Vec<(String, Vec<i64>)> {
    let mut v: Vec<(String, Vec<i64>)> = Vec::new();
    let (vd, td, e) = (c.vision.hidden_size, c.text.hidden_size, c.projection_dim);
    let grid = c.vision.image_size / c.vision.patch_size;
    let p = c.vision.patch_size;
    v.push(("vision_model.embeddings.patch_embedding.weight".into(), vec![vd, 3, p, p]));
    v.push(("vision_model.embeddings.class_embedding".into(), vec![vd]));
    v.push(("vision_model.embeddings.position_embedding.weight".into(), vec![grid * grid + 1, vd]));
    for n in ["pre_layrnorm", "post_layernorm"] {
        v.push((format!("vision_model.{n}.weight"), vec![vd]));
        v.push((format!("vision_model.{n}.bias"), vec![vd]));
    }
    let blocks = |v: &mut Vec<(String, Vec<i64>)>, prefix: &str, d: i64, ff: i64, n: i64| {
        for i in 0..n {
            let b = format!("{prefix}.encoder.layers.{i}");
            for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                v.push((format!("{b}.self_attn.{m}.weight"), vec![d, d]));
                v.push((format!("{b}.self_attn.{m}.bias"), vec![d]));
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                v.push((format!("{b}.{ln}.weight"), vec![d]));
                v.push((format!("{b}.{ln}.bias"), vec![d]));
            }
            v.push((format!("{b}.mlp.fc1.weight"), vec![ff, d]));
            v.push((format!("{b}.mlp.fc1.bias"), vec![ff]));
            v.push((format!("{b}.mlp.fc2.weight"), vec![d, ff]));
            v.push((format!("{b}.mlp.fc2.bias"), vec![d]));
        }
    };
    blocks(&mut v, "vision_model", vd, c.vision.intermediate_size, c.vision.num_hidden_layers);
    v.push(("text_model.embeddings.token_embedding.weight".into(), vec![c.text.vocab_size, td]));
    v.push(("text_model.embeddings.position_embedding.weight".into(), vec![c.text.max_position_embeddings, td]));
    blocks(&mut v, "text_model", td, c.text.intermediate_size, c.text.num_hidden_layers);
    v.push(("text_model.final_layer_norm.weight".into(), vec![td]));
    v.push(("text_model.final_layer_norm.bias".into(), vec![td]));
    v.push(("visual_projection.weight".into(), vec![e, vd]));
    v.push(("text_projection.weight".into(), vec![e, td]));
    v.push(("logit_scale".into(), vec![]));
    v
}

impl ClipConfig {
    /// Parameters of the base model (both towers, embeddings, projections): the shapes of
    /// [`expected_keys`].
    pub fn parameter_count(&self) -> i64 {
        expected_keys(self, Layout::HuggingFace).iter().map(|(_, s)| s.iter().product::<i64>()).sum()
    }
}

/// The keys and shapes a checkpoint of `layout` must hold for `config` (deduplicated).
pub fn expected_keys(config: &ClipConfig, layout: Layout) -> Vec<(String, Vec<i64>)> {
    let mut out: Vec<(String, Vec<i64>)> = Vec::new();
    for (hf, shape) in hf_tensors(config) {
        let (key, s, _) = source_key(layout, &hf, &shape);
        if !out.iter().any(|(k, _)| *k == key) {
            out.push((key, s));
        }
    }
    out
}

/// Reads CLIP tensors by Hugging Face name from a checkpoint of either layout.
pub struct ClipLoader<'a> {
    /// The checkpoint.
    pub source: &'a WeightSource,
    /// Its layout.
    pub layout: Layout,
    /// Dtype of the frozen weights.
    pub kind: Kind,
    /// Device of the model.
    pub device: Device,
}

impl ClipLoader<'_> {
    /// The tensor `hf_name` of shape `shape`.
    pub fn get(&self, hf_name: &str, shape: &[i64]) -> Result<Tensor> {
        let (key, source_shape, t) = source_key(self.layout, hf_name, shape);
        let raw = self.source.get(&key, &source_shape, self.kind, self.device)?;
        Ok(match t {
            Transform::Direct => raw,
            Transform::Transpose => raw.tr().contiguous(),
            Transform::Chunk(j) => raw.narrow(0, j * shape[0], shape[0]).contiguous(),
        })
    }
}
