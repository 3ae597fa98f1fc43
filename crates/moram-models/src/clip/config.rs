//! CLIP configurations: presets (ViT-B/16 of the paper, ViT-B/32, ViT-L/14) and Hugging Face
//! `config.json` files.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// The MLP activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`: the OpenAI CLIP models.
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    fn parse(name: &str, origin: &Path, field: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => Err(Error::Corrupt {
                path: origin.into(),
                reason: format!("`{field}` = \"{other}\" is not supported (quick_gelu, gelu)"),
            }),
        }
    }
}

/// The adaptable linear layers of a block, `(module, path under the block)`, in order.
pub const BLOCK_LINEARS: [(&str, &str); 6] = [
    ("q", "self_attn.q_proj"),
    ("k", "self_attn.k_proj"),
    ("v", "self_attn.v_proj"),
    ("o", "self_attn.out_proj"),
    ("fc1", "mlp.fc1"),
    ("fc2", "mlp.fc2"),
];

/// The vision tower.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// Width `D`.
    pub hidden_size: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Number of blocks.
    pub num_hidden_layers: i64,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Input resolution (square).
    pub image_size: i64,
    /// Patch size (square).
    pub patch_size: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
}

/// The text tower.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Width.
    pub hidden_size: i64,
    /// MLP width.
    pub intermediate_size: i64,
    /// Number of blocks.
    pub num_hidden_layers: i64,
    /// Attention heads.
    pub num_attention_heads: i64,
    /// Context length (77 for OpenAI CLIP).
    pub max_position_embeddings: i64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation.
    pub hidden_act: Activation,
    /// End-of-text token id (transformers' default 49407 when `config.json` omits it); pooling takes
    /// the first position holding it, position 0 in a row without it, and for legacy configs with
    /// id 2 the position of the largest id, as transformers does.
    pub eos_token_id: i64,
}

/// A CLIP model: both towers and the shared embedding width.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Vision tower.
    pub vision: VisionConfig,
    /// Text tower.
    pub text: TextConfig,
    /// Joint embedding width.
    pub projection_dim: i64,
}

impl ClipConfig {
    fn openai(vision_width: i64, vision_layers: i64, patch: i64, embed: i64, text_width: i64, text_heads: i64) -> Self {
        ClipConfig {
            vision: VisionConfig {
                hidden_size: vision_width,
                intermediate_size: 4 * vision_width,
                num_hidden_layers: vision_layers,
                num_attention_heads: vision_width / 64,
                image_size: 224,
                patch_size: patch,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
            },
            text: TextConfig {
                vocab_size: 49408,
                hidden_size: text_width,
                intermediate_size: 4 * text_width,
                num_hidden_layers: 12,
                num_attention_heads: text_heads,
                max_position_embeddings: 77,
                layer_norm_eps: 1e-5,
                hidden_act: Activation::QuickGelu,
                eos_token_id: 49407,
            },
            projection_dim: embed,
        }
    }

    /// OpenAI ViT-B/16 (the paper's backbone): vision 768 x 12 layers, patch 16; text 512 x 12; embed 512.
    pub fn vit_b16() -> Self {
        Self::openai(768, 12, 16, 512, 512, 8)
    }

    /// OpenAI ViT-B/32.
    pub fn vit_b32() -> Self {
        Self::openai(768, 12, 32, 512, 512, 8)
    }

    /// OpenAI ViT-L/14: vision 1024 x 24 layers, patch 14; text 768 x 12; embed 768.
    pub fn vit_l14() -> Self {
        Self::openai(1024, 24, 14, 768, 768, 12)
    }

    /// Every adaptable linear layer with its `(d_in, d_out)`: both towers, block by block, in
    /// [`BLOCK_LINEARS`] order; what a [`crate::TargetSpec`] selects from, known before any
    /// weight is loaded.
    pub fn linear_sites(&self) -> Vec<(crate::LinearSite, i64, i64)> {
        let towers = [
            (
                "vision",
                "vision_model",
                self.vision.num_hidden_layers,
                self.vision.hidden_size,
                self.vision.intermediate_size,
            ),
            ("text", "text_model", self.text.num_hidden_layers, self.text.hidden_size, self.text.intermediate_size),
        ];
        let mut v = Vec::new();
        for (encoder, prefix, blocks, d, mlp) in towers {
            for i in 0..blocks as usize {
                for (module, path) in BLOCK_LINEARS {
                    let (d_in, d_out) = match module {
                        "fc1" => (d, mlp),
                        "fc2" => (mlp, d),
                        _ => (d, d),
                    };
                    let site = crate::LinearSite {
                        path: format!("{prefix}.encoder.layers.{i}.{path}"),
                        encoder: encoder.into(),
                        layer: i,
                        module: module.into(),
                    };
                    v.push((site, d_in, d_out));
                }
            }
        }
        v
    }

    /// A preset by name: `vit-b16`, `vit-b32`, `vit-l14`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "vit-b16" => Ok(Self::vit_b16()),
            "vit-b32" => Ok(Self::vit_b32()),
            "vit-l14" => Ok(Self::vit_l14()),
            other => Err(Error::Target(format!("`{other}` is not a CLIP preset; valid: vit-b16, vit-b32, vit-l14"))),
        }
    }

    /// Reads a Hugging Face `CLIPModel` `config.json`.
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let hf: HfClipConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Corrupt { path: path.into(), reason: format!("not a CLIP config.json: {e}") })?;
        let v = hf.vision_config;
        let t = hf.text_config;
        Ok(ClipConfig {
            vision: VisionConfig {
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                image_size: v.image_size,
                patch_size: v.patch_size,
                layer_norm_eps: v.layer_norm_eps,
                hidden_act: Activation::parse(&v.hidden_act, path, "vision_config.hidden_act")?,
            },
            text: TextConfig {
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                intermediate_size: t.intermediate_size,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                max_position_embeddings: t.max_position_embeddings,
                layer_norm_eps: t.layer_norm_eps,
                hidden_act: Activation::parse(&t.hidden_act, path, "text_config.hidden_act")?,
                eos_token_id: t.eos_token_id,
            },
            projection_dim: hf.projection_dim,
        })
    }
}

// Mirrors of the Hugging Face field names; defaults are transformers' CLIP defaults.
#[derive(Deserialize)]
struct HfClipConfig {
    #[serde(default = "d512")]
    projection_dim: i64,
    text_config: HfText,
    vision_config: HfVision,
}

#[derive(Deserialize)]
struct HfText {
    #[serde(default = "d49408")]
    vocab_size: i64,
    #[serde(default = "d512")]
    hidden_size: i64,
    #[serde(default = "d2048")]
    intermediate_size: i64,
    #[serde(default = "d12")]
    num_hidden_layers: i64,
    #[serde(default = "d8")]
    num_attention_heads: i64,
    #[serde(default = "d77")]
    max_position_embeddings: i64,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "quick")]
    hidden_act: String,
    /// transformers' `CLIPTextConfig` default (49407, the `<|endoftext|>` id); `save_pretrained`
    /// leaves it out of `config.json` when it has that value.
    #[serde(default = "d49407")]
    eos_token_id: i64,
}

#[derive(Deserialize)]
struct HfVision {
    #[serde(default = "d768")]
    hidden_size: i64,
    #[serde(default = "d3072")]
    intermediate_size: i64,
    #[serde(default = "d12")]
    num_hidden_layers: i64,
    #[serde(default = "d12")]
    num_attention_heads: i64,
    #[serde(default = "d224")]
    image_size: i64,
    #[serde(default = "d32")]
    patch_size: i64,
    #[serde(default = "eps")]
    layer_norm_eps: f64,
    #[serde(default = "quick")]
    hidden_act: String,
}

fn d49407() -> i64 {
    49407
}
fn d8() -> i64 {
    8
}
fn d12() -> i64 {
    12
}
fn d32() -> i64 {
    32
}
fn d77() -> i64 {
    77
}
fn d224() -> i64 {
    224
}
fn d512() -> i64 {
    512
}
fn d768() -> i64 {
    768
}
fn d2048() -> i64 {
    2048
}
fn d3072() -> i64 {
    3072
}
fn d49408() -> i64 {
    49408
}
fn eps() -> f64 {
    1e-5
}
fn quick() -> String {
    "quick_gelu".into()
}
