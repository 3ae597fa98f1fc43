//! MoRAM on a causal LM: which linear layers can be adapted, the adapted ones, task steps and
//! modes on all of them, and the frozen base tensors (sizes, provenance).

use super::{module_paths, CausalLm, LLAMA_MODULES};
use crate::error::Result;
use crate::target::{LinearSite, TargetSpec};
use moram_core::MoramConfig;
use tch::Tensor;

impl CausalLm {
    /// Bytes of every frozen base tensor ([`CausalLm::base_tensors`]): what one forward pass
    /// reads, tied head included.
    pub fn base_bytes(&self) -> usize {
        self.base_tensors().iter().map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes()).sum()
    }

    /// Bytes the KV cache keeps per position and row: keys and values of every layer, in the
    /// type attention runs in on this device (f32 for a half-precision model on a CPU).
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.config;
        let kind = crate::llm::attention::attention_kind(self.embed.kind(), self.embed.device());
        2 * (c.num_hidden_layers * c.num_key_value_heads * c.head_dim) as usize * kind.elt_size_in_bytes()
    }

    /// Every frozen base tensor by Hugging Face key (`model.embed_tokens.weight`, norms,
    /// projections, and `lm_head.weight` when the head is not tied), as shallow clones; MoRAM
    /// atoms are not among them.
    pub fn base_tensors(&self) -> Vec<(String, Tensor)> {
        let mut v = vec![
            ("model.embed_tokens.weight".to_string(), self.embed.shallow_clone()),
            ("model.norm.weight".to_string(), self.norm.weight.shallow_clone()),
        ];
        if !self.config.tie_word_embeddings {
            v.push(("lm_head.weight".into(), self.lm_head.shallow_clone()));
        }
        for (i, blk) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (path, norm) in blk.norms() {
                v.push((format!("{p}.{path}.weight"), norm.weight.shallow_clone()));
            }
            for ((_, path), l) in module_paths().zip(blk.linears()) {
                v.push((format!("{p}.{path}.weight"), l.weight().shallow_clone()));
                if let Some(b) = l.bias() {
                    v.push((format!("{p}.{path}.bias"), b.shallow_clone()));
                }
            }
        }
        v
    }

    /// Every adaptable linear layer as [`LinearSite`]s (encoder `decoder`).
    pub fn linear_sites(&self) -> Vec<LinearSite> {
        self.config.linear_sites()
    }

    /// Wraps the layers `spec` selects in MoRAM layers (empty banks); returns their paths. A
    /// task-gated config also gives the model an empty task gate over its hidden states.
    pub fn inject(&mut self, spec: &TargetSpec, config: &MoramConfig) -> Result<Vec<String>> {
        self.task_gate = match config.task_gate {
            Some(g) => Some(moram_core::TaskGate::new(self.config.hidden_size as usize, g.shrinkage, self.device())?),
            None => None,
        };
        let sites = self.linear_sites();
        let layers = self.blocks.iter_mut().enumerate().flat_map(|(i, blk)| {
            module_paths().zip(blk.linears_mut()).map(move |((_, path), l)| (format!("model.layers.{i}.{path}"), l))
        });
        crate::linear::inject(spec, &LLAMA_MODULES, &sites, layers, config)
    }

    /// Every MoRAM layer by module path (`model.layers.{i}.self_attn.q_proj`, ...).
    pub fn moram_layers(&self) -> Vec<(String, &moram_core::MoramLinear)> {
        let mut v = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            for ((_, path), l) in module_paths().zip(blk.linears()) {
                if let Some(m) = l.moram() {
                    v.push((format!("model.layers.{i}.{path}"), m));
                }
            }
        }
        v
    }

    /// Every MoRAM layer by module path, mutably (begin/end tasks, train/eval mode, new banks).
    pub fn moram_layers_mut(&mut self) -> Vec<(String, &mut moram_core::MoramLinear)> {
        let mut v = Vec::new();
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            for ((_, path), l) in module_paths().zip(blk.linears_mut()) {
                if let Some(m) = l.moram_mut() {
                    v.push((format!("model.layers.{i}.{path}"), m));
                }
            }
        }
        v
    }

    /// Starts task `task` on every MoRAM layer.
    pub fn begin_task(&mut self, task: u32) -> Result<()> {
        crate::linear::begin_task_all(self.moram_layers_mut().into_iter().map(|(_, m)| m), task)
    }

    /// Training (`true`: dropout, no threshold gate) or eval mode for every MoRAM layer.
    pub fn set_training(&mut self, training: bool) {
        crate::linear::set_training_all(self.moram_layers_mut().into_iter().map(|(_, m)| m), training)
    }

    /// The current task's trainable tensors across all MoRAM layers.
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        crate::linear::trainable_all(self.moram_layers().into_iter().map(|(_, m)| m))
    }
}
