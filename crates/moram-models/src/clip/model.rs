//! CLIP (Radford et al., 2021) with MoRAM injection, in Hugging Face key space.
//!
//! Mirrors `transformers` `modeling_clip.py` as of 4.57.1 (the version the parity fixtures in
//! `tests/fixtures/clip/` come from; 4.45.2, which the official MoRAM code pins, computes the
//! same) (`CLIPVisionTransformer`, `CLIPTextTransformer`,
//! `CLIPEncoderLayer`, `CLIPAttention`, `CLIPMLP`): conv patch embedding, class token, positional
//! embedding, pre-LN, pre-norm blocks, post-LN on the class token and a bias-free projection for
//! images; token + positional embedding, causal blocks, final LN, end-of-text pooling and a
//! projection for text. Attention runs through scaled-dot-product attention.

use super::config::{Activation, ClipConfig, TextConfig, VisionConfig, BLOCK_LINEARS};
use super::loader::{ClipLoader, Layout};
use crate::error::{Error, Result};
use crate::linear::AdaptableLinear;
use crate::target::{LinearSite, ModuleNames, TargetSpec};
use crate::vars::{Provider, Vars};
use crate::weights::WeightSource;
use moram_core::MoramConfig;
use tch::{Device, Kind, Tensor};

/// CLIP's module vocabulary for [`TargetSpec`]: canonical `q k v o fc1 fc2`; the official code's
/// names (`out_proj`, `c_fc`, `c_proj`, `ffn_in`, `ffn_out`) and shorthand tokens
/// `q k v o in out` (so `qkvoinout` = all six).
pub const CLIP_MODULES: ModuleNames = ModuleNames {
    canonical: &["q", "k", "v", "o", "fc1", "fc2"],
    aliases: &[
        ("q_proj", "q"),
        ("k_proj", "k"),
        ("v_proj", "v"),
        ("out_proj", "o"),
        ("c_fc", "fc1"),
        ("c_proj", "fc2"),
        ("ffn_in", "fc1"),
        ("ffn_out", "fc2"),
    ],
    shorthand: &[("q", "q"), ("k", "k"), ("v", "v"), ("o", "o"), ("in", "fc1"), ("out", "fc2")],
};

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn load(vb: &Vars, d: i64, eps: f64) -> Result<Self> {
        Ok(LayerNorm { weight: vb.get("weight", &[d])?, bias: vb.get("bias", &[d])?, eps })
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let d = self.weight.size()[0];
        x.layer_norm([d], Some(&self.weight), Some(&self.bias), self.eps, false)
    }
}

/// A frozen linear layer with a bias at `vb` (weight read first, then bias: the order random
/// weights are drawn in).
fn linear(vb: &Vars, d_out: i64, d_in: i64) -> Result<AdaptableLinear> {
    Ok(AdaptableLinear::frozen(vb.get("weight", &[d_out, d_in])?, Some(vb.get("bias", &[d_out])?)))
}

/// One pre-norm transformer block.
#[derive(Debug)]
pub struct Block {
    ln1: LayerNorm,
    q: AdaptableLinear,
    k: AdaptableLinear,
    v: AdaptableLinear,
    o: AdaptableLinear,
    ln2: LayerNorm,
    fc1: AdaptableLinear,
    fc2: AdaptableLinear,
    heads: i64,
    act: Activation,
}

impl Block {
    fn load(vb: &Vars, d: i64, ff: i64, heads: i64, eps: f64, act: Activation) -> Result<Self> {
        let attn = vb.pp("self_attn");
        Ok(Block {
            ln1: LayerNorm::load(&vb.pp("layer_norm1"), d, eps)?,
            q: linear(&attn.pp("q_proj"), d, d)?,
            k: linear(&attn.pp("k_proj"), d, d)?,
            v: linear(&attn.pp("v_proj"), d, d)?,
            o: linear(&attn.pp("out_proj"), d, d)?,
            ln2: LayerNorm::load(&vb.pp("layer_norm2"), d, eps)?,
            fc1: linear(&vb.pp("mlp.fc1"), ff, d)?,
            fc2: linear(&vb.pp("mlp.fc2"), d, ff)?,
            heads,
            act,
        })
    }

    /// `x` `(B, L, D)`; causal for the text tower.
    fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, l, d) = x.size3()?;
        let hd = d / self.heads;
        let h = self.ln1.forward(x);
        let split = |t: Tensor| t.view([b, l, self.heads, hd]).transpose(1, 2);
        let (q, k, v) = (split(self.q.forward(&h)?), split(self.k.forward(&h)?), split(self.v.forward(&h)?));
        let att = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, causal, None, false);
        let x = x + self.o.forward(&att.transpose(1, 2).reshape([b, l, d]))?;
        let h = self.fc1.forward(&self.ln2.forward(&x))?;
        let h = match self.act {
            Activation::QuickGelu => &h * (&h * 1.702).sigmoid(),
            Activation::Gelu => h.gelu("none"),
        };
        Ok(&x + self.fc2.forward(&h)?)
    }

    fn linears_mut(&mut self) -> [(&'static str, &'static str, &mut AdaptableLinear); 6] {
        let [q, k, v, o, fc1, fc2] = BLOCK_LINEARS;
        [
            (q.0, q.1, &mut self.q),
            (k.0, k.1, &mut self.k),
            (v.0, v.1, &mut self.v),
            (o.0, o.1, &mut self.o),
            (fc1.0, fc1.1, &mut self.fc1),
            (fc2.0, fc2.1, &mut self.fc2),
        ]
    }

    fn linears(&self) -> [(&'static str, &'static str, &AdaptableLinear); 6] {
        let [q, k, v, o, fc1, fc2] = BLOCK_LINEARS;
        [
            (q.0, q.1, &self.q),
            (k.0, k.1, &self.k),
            (v.0, v.1, &self.v),
            (o.0, o.1, &self.o),
            (fc1.0, fc1.1, &self.fc1),
            (fc2.0, fc2.1, &self.fc2),
        ]
    }
}

/// The image encoder.
#[derive(Debug)]
pub struct VisionTransformer {
    patch_embedding: Tensor,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_ln: LayerNorm,
    blocks: Vec<Block>,
    post_ln: LayerNorm,
    projection: Tensor,
    config: VisionConfig,
}

impl VisionTransformer {
    fn load(vb: &Vars, c: &VisionConfig, embed: i64) -> Result<Self> {
        let (d, p) = (c.hidden_size, c.patch_size);
        let grid = c.image_size / p;
        let model = vb.pp("vision_model");
        let layers = model.pp("encoder.layers");
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let (ff, heads, eps) = (c.intermediate_size, c.num_attention_heads, c.layer_norm_eps);
                Block::load(&layers.pp(i.to_string()), d, ff, heads, eps, c.hidden_act)
            })
            .collect::<Result<Vec<_>>>()?;
        let emb = model.pp("embeddings");
        Ok(VisionTransformer {
            patch_embedding: emb.get("patch_embedding.weight", &[d, 3, p, p])?,
            class_embedding: emb.get("class_embedding", &[d])?,
            position_embedding: emb.get("position_embedding.weight", &[grid * grid + 1, d])?,
            pre_ln: LayerNorm::load(&model.pp("pre_layrnorm"), d, c.layer_norm_eps)?,
            blocks,
            post_ln: LayerNorm::load(&model.pp("post_layernorm"), d, c.layer_norm_eps)?,
            projection: vb.get("visual_projection.weight", &[embed, d])?,
            config: c.clone(),
        })
    }

    /// Pixels `(B, 3, H, W)` (normalised, `H = W = image_size`) -> image embeddings `(B, E)` (not
    /// normalised).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let size = pixels.size();
        let s = self.config.image_size;
        if size.len() != 4 || size[1] != 3 || size[2] != s || size[3] != s {
            return Err(Error::Input(format!("pixels must be (B, 3, {s}, {s}), found {size:?}")));
        }
        let kind = self.patch_embedding.kind();
        let p = self.config.patch_size;
        let x = pixels.to_kind(kind).conv2d(&self.patch_embedding, None::<Tensor>, [p, p], [0, 0], [1, 1], 1);
        let x = x.flatten(2, -1).transpose(1, 2); // (B, grid^2, D)
        let b = x.size()[0];
        let cls = self.class_embedding.view([1, 1, -1]).expand([b, 1, -1], false);
        let mut x = self.pre_ln.forward(&(Tensor::cat(&[cls, x], 1) + &self.position_embedding));
        for block in &self.blocks {
            x = block.forward(&x, false)?;
        }
        let pooled = self.post_ln.forward(&x.select(1, 0));
        Ok(pooled.linear(&self.projection, None::<Tensor>))
    }
}

/// The text encoder.
#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    blocks: Vec<Block>,
    final_ln: LayerNorm,
    projection: Tensor,
    config: TextConfig,
}

impl TextTransformer {
    fn load(vb: &Vars, c: &TextConfig, embed: i64) -> Result<Self> {
        let d = c.hidden_size;
        let model = vb.pp("text_model");
        let layers = model.pp("encoder.layers");
        let blocks = (0..c.num_hidden_layers)
            .map(|i| {
                let (ff, heads, eps) = (c.intermediate_size, c.num_attention_heads, c.layer_norm_eps);
                Block::load(&layers.pp(i.to_string()), d, ff, heads, eps, c.hidden_act)
            })
            .collect::<Result<Vec<_>>>()?;
        let emb = model.pp("embeddings");
        Ok(TextTransformer {
            token_embedding: emb.get("token_embedding.weight", &[c.vocab_size, d])?,
            position_embedding: emb.get("position_embedding.weight", &[c.max_position_embeddings, d])?,
            blocks,
            final_ln: LayerNorm::load(&model.pp("final_layer_norm"), d, c.layer_norm_eps)?,
            projection: vb.get("text_projection.weight", &[embed, d])?,
            config: c.clone(),
        })
    }

    /// Token ids `(B, L)` (i64, `L <= max_position_embeddings`, each row holding an end-of-text
    /// token) -> text embeddings `(B, E)` (not normalised).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        let max = self.config.max_position_embeddings;
        if size.len() != 2 || size[1] > max || ids.kind() != Kind::Int64 {
            return Err(Error::Input(format!(
                "token ids must be i64 (B, L <= {max}), found {:?} {size:?}",
                ids.kind()
            )));
        }
        let (b, l) = (size[0], size[1]);
        let vocab = self.config.vocab_size;
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= vocab {
            return Err(Error::Input(format!("token ids must lie in [0, {vocab}), found [{lo}, {hi}]")));
        }
        let mut x =
            Tensor::embedding(&self.token_embedding, ids, -1, false, false) + self.position_embedding.narrow(0, 0, l);
        for block in &self.blocks {
            x = block.forward(&x, true)?;
        }
        let x = self.final_ln.forward(&x);
        // transformers' `CLIPTextTransformer`: the legacy id 2 pools the largest token id of each
        // row; otherwise the first position holding the end-of-text id, and position 0 for a row
        // without one (argmax of all zeros).
        let eos = self.config.eos_token_id;
        let positions =
            if eos == 2 { ids.argmax(-1, false) } else { ids.eq(eos).to_kind(Kind::Int64).argmax(-1, false) };
        let d = self.config.hidden_size;
        let pooled = x.gather(1, &positions.view([b, 1, 1]).expand([b, 1, d], false), false).squeeze_dim(1);
        Ok(pooled.linear(&self.projection, None::<Tensor>))
    }
}

/// CLIP: both towers and the logit scale.
#[derive(Debug)]
pub struct ClipModel {
    /// The image encoder.
    pub vision: VisionTransformer,
    /// The text encoder.
    pub text: TextTransformer,
    logit_scale: Tensor,
    config: ClipConfig,
}

impl ClipModel {
    fn build(config: &ClipConfig, get: &Provider) -> Result<Self> {
        let e = config.projection_dim;
        let vb = Vars::root(get);
        Ok(ClipModel {
            vision: VisionTransformer::load(&vb, &config.vision, e)?,
            text: TextTransformer::load(&vb, &config.text, e)?,
            logit_scale: vb.get("logit_scale", &[])?,
            config: config.clone(),
        })
    }

    /// Loads a checkpoint in either layout (`None`: detected from the keys). The checkpoint is
    /// first checked against the config: every missing, unexpected or mis-shaped key is reported
    /// at once. Frozen weights take `kind` (f32, f16, bf16) on `device`.
    pub fn load(
        source: &WeightSource,
        config: &ClipConfig,
        layout: Option<Layout>,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let layout = match layout.or_else(|| Layout::detect(source)) {
            Some(l) => l,
            None => {
                return Err(Error::Corrupt {
                    path: source.origin().into(),
                    reason: "neither a Hugging Face nor an OpenAI/open_clip CLIP checkpoint (no class embedding key)"
                        .into(),
                })
            }
        };
        source.check(&super::loader::expected_keys(config, layout), |k| layout.ignorable(k))?;
        let loader = ClipLoader { source, layout, kind, device };
        let get = |name: &str, shape: &[i64]| loader.get(name, shape);
        Self::build(config, &get)
    }

    /// Random weights (for benchmarks and tests): N(0, 0.02) matrices, unit LayerNorms,
    /// `logit_scale = ln(100)`.
    pub fn random(config: &ClipConfig, seed: i64, kind: Kind, device: Device) -> Result<Self> {
        tch::manual_seed(seed);
        let get = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let opts = (Kind::Float, device);
            let t = if name == "logit_scale" {
                Tensor::from(100f32.ln()).to_device(device)
            } else if name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm") {
                if name.ends_with("weight") {
                    Tensor::ones(shape, opts)
                } else {
                    Tensor::zeros(shape, opts)
                }
            } else {
                Tensor::randn(shape, opts) * 0.02
            };
            Ok(t.to_kind(kind))
        };
        Self::build(config, &get)
    }

    /// The configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Every adaptable linear layer, as [`LinearSite`]s in Hugging Face key space.
    pub fn linear_sites(&self) -> Vec<LinearSite> {
        self.config.linear_sites().into_iter().map(|(site, ..)| site).collect()
    }

    /// Wraps the layers `spec` selects in MoRAM layers (empty banks); returns their paths.
    pub fn inject(&mut self, spec: &TargetSpec, config: &MoramConfig) -> Result<Vec<String>> {
        let sites = self.linear_sites();
        crate::linear::inject(spec, &CLIP_MODULES, &sites, self.adaptable_mut(), config)
    }

    fn adaptable_mut(&mut self) -> Vec<(String, &mut AdaptableLinear)> {
        let mut v = Vec::new();
        for (prefix, blocks) in [("vision_model", &mut self.vision.blocks), ("text_model", &mut self.text.blocks)] {
            for (i, block) in blocks.iter_mut().enumerate() {
                for (_, path, layer) in block.linears_mut() {
                    v.push((format!("{prefix}.encoder.layers.{i}.{path}"), layer));
                }
            }
        }
        v
    }

    /// The device of the weights.
    pub fn device(&self) -> Device {
        self.logit_scale.device()
    }

    /// Parameters of the model: every pretrained tensor plus every atom (and router key).
    pub fn parameter_count(&self) -> usize {
        let atoms: usize = self.moram_layers().iter().map(|(_, m)| m.bank().parameter_count()).sum();
        self.config.parameter_count() as usize + atoms
    }

    /// Every MoRAM layer by module path.
    pub fn moram_layers(&self) -> Vec<(String, &moram_core::MoramLinear)> {
        let mut v = Vec::new();
        for (prefix, blocks) in [("vision_model", &self.vision.blocks), ("text_model", &self.text.blocks)] {
            for (i, block) in blocks.iter().enumerate() {
                for (_, path, layer) in block.linears() {
                    if let Some(m) = layer.moram() {
                        v.push((format!("{prefix}.encoder.layers.{i}.{path}"), m));
                    }
                }
            }
        }
        v
    }

    /// Every MoRAM layer by module path, mutably (begin/end tasks, train/eval mode).
    pub fn moram_layers_mut(&mut self) -> Vec<(String, &mut moram_core::MoramLinear)> {
        self.adaptable_mut().into_iter().filter_map(|(p, l)| l.moram_mut().map(|m| (p, m))).collect()
    }

    /// Starts task `task` on every MoRAM layer.
    pub fn begin_task(&mut self, task: u32) -> Result<()> {
        crate::linear::begin_task_all(self.moram_layers_mut().into_iter().map(|(_, m)| m), task)
    }

    /// Training (`true`) or eval mode for every MoRAM layer.
    pub fn set_training(&mut self, training: bool) {
        crate::linear::set_training_all(self.moram_layers_mut().into_iter().map(|(_, m)| m), training)
    }

    /// The current task's trainable tensors across all MoRAM layers.
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        crate::linear::trainable_all(self.moram_layers().into_iter().map(|(_, m)| m))
    }

    /// Image embeddings `(B, E)` for pixels `(B, 3, H, W)`.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        self.vision.forward(pixels)
    }

    /// Text embeddings `(B, E)` for token ids `(B, L)`.
    pub fn encode_text(&self, ids: &Tensor) -> Result<Tensor> {
        self.text.forward(ids)
    }

    /// `exp(logit_scale)` (100 for OpenAI CLIP).
    pub fn logit_scale(&self) -> f64 {
        self.logit_scale.to_kind(Kind::Float).exp().double_value(&[])
    }

    /// Image-text logits `(B_img, B_txt)` = `exp(logit_scale) * cos(image, text)`.
    pub fn logits(&self, pixels: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let img = self.encode_image(pixels)?.to_kind(Kind::Float);
        let txt = self.encode_text(ids)?.to_kind(Kind::Float);
        Ok(normalize(&img).matmul(&normalize(&txt).tr()) * self.logit_scale())
    }
}

impl ClipModel {
    /// Zero-shot classification: logits `(B, C)` of images `(B, 3, H, W)` against one text prompt
    /// per class (e.g. `"a photo of a {class}."`), tokenised with `tokenizer`.
    pub fn zero_shot<S: AsRef<str>>(
        &self,
        pixels: &Tensor,
        prompts: &[S],
        tokenizer: &super::ClipTokenizer,
    ) -> Result<Tensor> {
        if prompts.is_empty() {
            return Err(Error::Input("zero-shot classification needs at least one class prompt".into()));
        }
        let ids = tokenizer.tokenize_batch(prompts).to_device(self.logit_scale.device());
        self.logits(pixels, &ids)
    }

    /// Keeps (or stops keeping) the per-token atom weights of the MoRAM layer at `path` on each
    /// forward (for activation maps such as paper Fig. 3).
    pub fn set_capture(&self, path: &str, on: bool) -> Result<()> {
        let (_, layer) = self.moram_layers().into_iter().find(|(p, _)| p == path).ok_or_else(|| {
            Error::Target(format!("`{path}` is not an adapted layer; adapted: {}", self.moram_layers().len()))
        })?;
        layer.set_capture(on);
        Ok(())
    }

    /// The per-token weights `(B, L, R)` of the last forward through the layer at `path`.
    pub fn take_captured(&self, path: &str) -> Option<Tensor> {
        self.moram_layers().into_iter().find(|(p, _)| p == path).and_then(|(_, l)| l.take_captured())
    }
}

/// L2 normalisation over the last dimension (torch `normalize`, eps 1e-12).
pub fn normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1].as_slice(), true).clamp_min(1e-12)
}
