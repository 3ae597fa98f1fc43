//! The LLaMA / Gemma decoder block (`transformers` `LlamaDecoderLayer`, `GemmaDecoderLayer`):
//! pre-norm attention and pre-norm gated MLP, each added to the residual stream. Built from the
//! family's layout table ([`LLAMA_BLOCK`]).

use super::attention::{Attention, AttentionInputs};
use super::config::{Arch, LlmConfig};
use super::layout::{self, LLAMA_BLOCK};
use super::mlp::GatedMlp;
use super::norm::{NormScale, RmsNorm};
use super::vars::Vars;
use crate::error::Result;
use crate::linear::AdaptableLinear;
use tch::Tensor;

/// The norm scale of a family.
pub(crate) fn norm_scale(arch: Arch) -> NormScale {
    match arch {
        Arch::Llama => NormScale::Weight,
        Arch::Gemma => NormScale::OnePlusWeight,
    }
}

/// One decoder block.
#[derive(Debug)]
pub struct Block {
    /// `input_layernorm`.
    pub input_norm: RmsNorm,
    /// `self_attn`.
    pub attn: Attention,
    /// `post_attention_layernorm`.
    pub post_norm: RmsNorm,
    /// `mlp`.
    pub mlp: GatedMlp,
}

impl Block {
    /// Loads block `model.layers.{i}` from `vb` (already at that prefix).
    pub(crate) fn load(vb: &Vars, config: &LlmConfig) -> Result<Self> {
        let norm = |hf: &str| -> Result<RmsNorm> {
            let t = LLAMA_BLOCK.iter().find(|t| t.hf == hf).map(|t| t.weight_shape(config)).unwrap_or_default();
            Ok(RmsNorm::new(vb.pp(hf).get("weight", &t)?, config.rms_norm_eps, norm_scale(config.arch)))
        };
        let mut linears = layout::block_linears()
            .map(|t| vb.pp(t.hf).linear(&t.weight_shape(config), t.has_bias(config)))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let mut next = || linears.next().expect("LLAMA_BLOCK has seven linear layers");
        let (q, k, v, o) = (next(), next(), next(), next());
        let (gate, up, down) = (next(), next(), next());
        let c = config;
        Ok(Block {
            input_norm: norm("input_layernorm")?,
            attn: Attention::new(q, k, v, o, c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            post_norm: norm("post_attention_layernorm")?,
            mlp: GatedMlp::new(gate, up, down, c.activation),
        })
    }

    /// The residual stream `h` `(B, L, hidden)` after this block; extends `cache`.
    pub(crate) fn forward(
        &self,
        h: &Tensor,
        inputs: &AttentionInputs,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let h = h + self.attn.forward(&self.input_norm.forward(h), inputs, cache)?;
        Ok(&h + self.mlp.forward(&self.post_norm.forward(&h))?)
    }

    /// The norms with their Hugging Face paths under `model.layers.{i}`, in table order.
    pub(crate) fn norms(&self) -> [(&'static str, &RmsNorm); 2] {
        [("input_layernorm", &self.input_norm), ("post_attention_layernorm", &self.post_norm)]
    }

    /// The linear layers in [`layout::LINEAR_MODULES`] order.
    pub(crate) fn linears(&self) -> [&AdaptableLinear; 7] {
        let (a, m) = (&self.attn, &self.mlp);
        [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
    }

    /// The linear layers in [`layout::LINEAR_MODULES`] order, mutably.
    pub(crate) fn linears_mut(&mut self) -> [&mut AdaptableLinear; 7] {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        [&mut a.q, &mut a.k, &mut a.v, &mut a.o, &mut m.gate, &mut m.up, &mut m.down]
    }
}
