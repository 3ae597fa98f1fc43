//! The memory plan of a CLIP run (X-TAIL): a step encodes the batch's images and every class
//! prompt of the current task, both with gradient (`learners/clip.rs`).

use super::{atom_parts, atoms_per_layer, elt, model_parts, MemoryPlan, Part, Phase, PlanDevice, PlanOptions};
use crate::config::{DataFormat, RunConfig};
use crate::data::xtail::xtail_classes;
use crate::error::{Error, Result};
use moram_models::clip::{ClipConfig, CLIP_MODULES};
use tch::Kind;

/// Measured over counted bytes of a step's saved activations: the LLM's f32 factor (CLIP is not
/// measured separately here; `docs/performance.md` says so).
const TRAIN_FACTOR: f64 = super::llm::TRAIN_FACTOR_F32;

/// Everything the CLIP plan is computed from.
#[derive(Debug, Clone)]
pub struct ClipPlanInput {
    /// The model's architecture.
    pub config: ClipConfig,
    /// Base weight dtype.
    pub base: Kind,
    /// Where it runs.
    pub device: PlanDevice,
    /// Adapted linear layers as `(encoder, d_in, d_out)`.
    pub sites: Vec<(String, i64, i64)>,
    /// The adapted layers' config.
    pub layer: moram_core::MoramConfig,
    /// The method's name.
    pub method_name: String,
    /// Tasks in the sequence.
    pub tasks: usize,
    /// Images per micro-batch on one process.
    pub images: usize,
    /// Class prompts encoded per step (the largest task's classes).
    pub prompts: usize,
    /// Data-parallel processes.
    pub world: usize,
}

impl ClipPlanInput {
    /// The input `config` describes on `model`. The prompts per step are the largest task's
    /// classes, known before any data is read for X-TAIL only (`format = "xtail"`); other data is
    /// an error naming `data.tasks`.
    pub fn from_run(config: &RunConfig, model: &ClipConfig, options: &PlanOptions) -> Result<Self> {
        let m = config.model.as_ref().ok_or_else(|| Error::config("model", "the run config has no [model]"))?;
        let data = config.data.as_ref().ok_or_else(|| Error::config("data", "the run config has no [data]"))?;
        let all = model.linear_sites();
        let only: Vec<_> = all.iter().map(|(s, ..)| s.clone()).collect();
        let selected =
            m.targets.select(&only, &CLIP_MODULES).map_err(|e| Error::config("model.targets", e.to_string()))?;
        let sites = selected
            .iter()
            .filter_map(|s| all.iter().find(|(a, ..)| a.path == s.path))
            .map(|(s, i, o)| (s.encoder.clone(), *i, *o))
            .collect();
        let prompts = match data.format {
            DataFormat::Xtail => data.tasks.iter().filter_map(|t| xtail_classes(t)).max(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::config("data.tasks", "the classes per task are known for X-TAIL datasets only; plan an X-TAIL run")
        })?;
        let micro = config.training.micro_batch_size.unwrap_or(config.training.batch_size);
        Ok(ClipPlanInput {
            config: model.clone(),
            base: m.dtype.kind(),
            device: options.device,
            sites,
            layer: config.layer_config()?,
            method_name: config.method.name.as_str().to_string(),
            tasks: data.tasks.len(),
            images: micro.min(config.training.batch_size.div_ceil(options.world)).max(1),
            prompts,
            world: options.world,
        })
    }

    /// The plan.
    pub fn plan(&self) -> Result<MemoryPlan> {
        let c = &self.config;
        let mut parts = Vec::new();
        model_parts(&mut parts, self.device, c.parameter_count() as f64, self.base);
        let r = self.layer.r as f64;
        let width: f64 = self.sites.iter().map(|(_, i, o)| (i + o) as f64).sum();
        let atoms = atoms_per_layer(&self.layer, self.tasks) as f64;
        atom_parts(&mut parts, r * width, (atoms - r) * width, 0, &self.method_name);

        let v = &c.vision;
        let patches = (v.image_size / v.patch_size).pow(2) + 1;
        let vision_tokens = (self.images as i64 * patches) as f64;
        let text_tokens = (self.prompts as i64 * c.text.max_position_embeddings) as f64;
        let act = elt(self.base);
        let tower = |d: i64, mlp: i64, layers: i64, encoder: &str, tokens: f64| {
            // Per token and block: two LayerNorms' inputs and outputs, q, k, v, the attention
            // output, the residual sums, fc1's output, the activation (QuickGELU keeps its
            // sigmoid) and its output; then the atoms' scores of every adapted site.
            let block = (8 * d + 3 * mlp) as f64 * act;
            let sites: f64 = self.sites.iter().filter(|s| s.0 == encoder).count() as f64 * 5.0 * 4.0 * atoms;
            tokens * (layers as f64 * block + sites)
        };
        let vision = tower(v.hidden_size, v.intermediate_size, v.num_hidden_layers, "vision", vision_tokens);
        let t = &c.text;
        let text = tower(t.hidden_size, t.intermediate_size, t.num_hidden_layers, "text", text_tokens);
        parts.push(Part {
            name: "training activations".into(),
            phase: Phase::Train,
            bytes: TRAIN_FACTOR * (vision + text),
            note: format!(
                "{} images x {patches} tokens and {} class prompts x {} tokens, x {TRAIN_FACTOR:.2} (the LLM's f32 factor)",
                self.images, self.prompts, t.max_position_embeddings
            ),
        });
        let all_classes = self.prompts.max(1) as f64;
        parts.push(Part {
            name: "evaluation".into(),
            phase: Phase::Eval,
            bytes: 4.0 * c.projection_dim as f64 * (all_classes + self.images as f64)
                + vision_tokens * (3 * v.hidden_size + v.intermediate_size) as f64 * act,
            note: "class embeddings and one image batch's largest block tensors, no gradient".into(),
        });
        Ok(MemoryPlan {
            title: format!("CLIP ({}, r {} x {} tasks)", self.method_name, self.layer.r, self.tasks),
            device: self.device,
            world: self.world,
            parts,
        })
    }
}
