//! The pre-norm decoder block of the LLaMA family (`transformers` `LlamaDecoderLayer`,
//! `GemmaDecoderLayer`, `Qwen2DecoderLayer`, `Qwen3DecoderLayer`): pre-norm attention and
//! pre-norm gated MLP, each added to the residual stream. Built from the family's layout table
//! (`families::block_table`): its norms (with Qwen3's per-head q/k norms), its seven linear layers
//! and their bias rules.

use super::attention::{Attention, AttentionInputs};
use super::config::{Arch, LlmConfig};
use super::families;
use super::mlp::GatedMlp;
use super::norm::{NormScale, RmsNorm};
use crate::error::Result;
use crate::linear::AdaptableLinear;
use crate::vars::Vars;
use tch::Tensor;

/// The norm scale of a family.
pub(crate) fn norm_scale(arch: Arch) -> NormScale {
    match arch {
        Arch::Llama | Arch::Qwen2 | Arch::Qwen3 | Arch::Mistral => NormScale::Weight,
        Arch::Gemma | Arch::Gemma2 | Arch::Gemma3 => NormScale::OnePlusWeight,
    }
}

/// One decoder block.
#[derive(Debug)]
pub struct Block {
    /// `input_layernorm`.
    pub input_norm: RmsNorm,
    /// `self_attn`.
    pub attn: Attention,
    /// `post_attention_layernorm`: the norm before the MLP in LLaMA-style blocks, the norm of the
    /// attention output in Gemma 3's sandwich blocks.
    pub post_norm: RmsNorm,
    /// `mlp`.
    pub mlp: GatedMlp,
    /// Gemma 3's `pre_feedforward_layernorm` and `post_feedforward_layernorm`.
    pub ffn_norms: Option<(RmsNorm, RmsNorm)>,
    /// Whether the layer attends through the sliding window (and the local RoPE).
    pub local: bool,
}

impl Block {
    /// Loads block `model.layers.{i}` from `vb` (already at that prefix).
    pub(crate) fn load(vb: &Vars, config: &LlmConfig, layer: usize) -> Result<Self> {
        let c = config;
        let norm = |hf: &str| -> Result<Option<RmsNorm>> {
            let Some(t) = families::block_norms(c.arch).find(|t| t.hf == hf) else { return Ok(None) };
            Ok(Some(RmsNorm::new(vb.pp(hf).get("weight", &t.weight_shape(c))?, c.rms_norm_eps, norm_scale(c.arch))))
        };
        let required = |hf: &str| -> Result<RmsNorm> {
            norm(hf)?.ok_or_else(|| crate::error::Error::Input(format!("the {:?} block table has no `{hf}`", c.arch)))
        };
        let mut linears = families::block_linears(c.arch)
            .map(|t| vb.pp(t.hf).linear(&t.weight_shape(c), t.has_bias(c)))
            .collect::<Result<Vec<_>>>()?
            .into_iter();
        let mut next = || linears.next().expect("every block table has seven linear layers");
        let (q, k, v, o) = (next(), next(), next(), next());
        let (gate, up, down) = (next(), next(), next());
        let mut attn = Attention::new(q, k, v, o, c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        if let (Some(qn), Some(kn)) = (norm("self_attn.q_norm")?, norm("self_attn.k_norm")?) {
            attn = attn.with_head_norms(qn, kn);
        }
        if let Some(s) = c.query_pre_attn_scalar {
            attn = attn.with_scale(1.0 / s.sqrt());
        }
        if let Some(cap) = c.attn_logit_softcapping {
            attn = attn.with_softcap(cap);
        }
        let ffn_norms = match (norm("pre_feedforward_layernorm")?, norm("post_feedforward_layernorm")?) {
            (Some(pre), Some(post)) => Some((pre, post)),
            _ => None,
        };
        let local = match &c.sliding_layers {
            Some(v) => v.get(layer).copied().unwrap_or(false),
            None => c.sliding_window.is_some(),
        };
        Ok(Block {
            input_norm: required("input_layernorm")?,
            attn,
            post_norm: required("post_attention_layernorm")?,
            mlp: GatedMlp::new(gate, up, down, c.activation),
            ffn_norms,
            local,
        })
    }

    /// The residual stream `h` `(B, L, hidden)` after this block, at the query tokens
    /// `inputs.queries` selects (`(B, Lq, hidden)`); extends `cache` by all `L`.
    pub(crate) fn forward(
        &self,
        h: &Tensor,
        inputs: &AttentionInputs,
        cache: &mut Option<super::attention::KvSlot>,
    ) -> Result<Tensor> {
        let attn = self.attn.forward(&self.input_norm.forward(h), inputs, cache)?;
        let h = &inputs.queries.select(h, 1);
        match &self.ffn_norms {
            None => {
                let h = h + attn;
                Ok(&h + self.mlp.forward(&self.post_norm.forward(&h))?)
            }
            Some((pre, post)) => {
                let h = h + self.post_norm.forward(&attn);
                Ok(&h + post.forward(&self.mlp.forward(&pre.forward(&h))?))
            }
        }
    }

    /// The norms with their Hugging Face paths under `model.layers.{i}`, in table order.
    pub(crate) fn norms(&self) -> Vec<(&'static str, &RmsNorm)> {
        let mut v = vec![("input_layernorm", &self.input_norm), ("post_attention_layernorm", &self.post_norm)];
        if let Some((pre, post)) = &self.ffn_norms {
            v.extend([("pre_feedforward_layernorm", pre), ("post_feedforward_layernorm", post)]);
        }
        if let Some((q, k)) = &self.attn.head_norms {
            v.extend([("self_attn.q_norm", q), ("self_attn.k_norm", k)]);
        }
        v
    }

    /// Whether a MoRAM layer of this block records what passes through it (every token must run).
    pub(crate) fn is_observed(&self) -> bool {
        self.linears().iter().any(|l| l.moram().is_some_and(|m| m.is_observed()))
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
