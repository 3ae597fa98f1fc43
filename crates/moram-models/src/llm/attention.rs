//! Multi-head self-attention with grouped or multi-query key/value heads, rotary positions and a
//! key/value cache, through libtorch's scaled-dot-product attention.

use super::norm::RmsNorm;
use super::rope::rotate_half;
use crate::error::Result;
use crate::linear::AdaptableLinear;
use tch::Tensor;

/// The four projections and the head layout; each projection may carry MoRAM atoms.
#[derive(Debug)]
pub struct Attention {
    /// `q_proj`, `(heads * head_dim, hidden)`.
    pub q: AdaptableLinear,
    /// `k_proj`, `(kv_heads * head_dim, hidden)`.
    pub k: AdaptableLinear,
    /// `v_proj`, `(kv_heads * head_dim, hidden)`.
    pub v: AdaptableLinear,
    /// `o_proj`, `(hidden, heads * head_dim)`.
    pub o: AdaptableLinear,
    /// Qwen3's RMSNorms over each query / key head (`head_dim` wide), applied before RoPE.
    pub head_norms: Option<(RmsNorm, RmsNorm)>,
    /// Score scale when it is not `head_dim^-1/2` (Gemma 2/3's `query_pre_attn_scalar`).
    scale: Option<f64>,
    /// Gemma 2's soft-capping of the scores, `c * tanh(s / c)` (computed without fused SDPA).
    softcap: Option<f64>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

/// What every block's attention shares in one forward pass.
pub(crate) struct AttentionInputs<'a> {
    /// RoPE tables `(B|1, 1, L, head_dim)` for the new tokens.
    pub cos: &'a Tensor,
    /// See `cos`.
    pub sin: &'a Tensor,
    /// Boolean mask `(B|1, 1, L, cache + L)` of visible keys, when not plain causal.
    pub mask: Option<&'a Tensor>,
    /// Plain causal attention (no cache, no padding, more than one token).
    pub causal: bool,
}

impl Attention {
    /// The attention from its projections and head layout.
    pub fn new(
        q: AdaptableLinear,
        k: AdaptableLinear,
        v: AdaptableLinear,
        o: AdaptableLinear,
        heads: i64,
        kv_heads: i64,
        head_dim: i64,
    ) -> Self {
        Attention { q, k, v, o, head_norms: None, scale: None, softcap: None, heads, kv_heads, head_dim }
    }

    /// The same attention with scores scaled by `scale` instead of `head_dim^-1/2`.
    pub fn with_scale(self, scale: f64) -> Self {
        Attention { scale: Some(scale), ..self }
    }

    /// The same attention with scores soft-capped at `cap` (Gemma 2).
    pub fn with_softcap(self, cap: f64) -> Self {
        Attention { softcap: Some(cap), ..self }
    }

    /// The same attention with RMSNorms over each query and key head (Qwen3, Gemma 3).
    pub fn with_head_norms(self, q_norm: RmsNorm, k_norm: RmsNorm) -> Self {
        Attention { head_norms: Some((q_norm, k_norm)), ..self }
    }

    /// Hidden states `x` `(B, L, hidden)` of `L` new tokens -> `(B, L, hidden)`; appends their
    /// keys and values `(B, kv_heads, L, head_dim)` to `cache`.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        inputs: &AttentionInputs,
        cache: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let size = x.size();
        let (b, l) = (size[0], size[1]);
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let heads = |t: Tensor, n: i64| t.view([b, l, n, hd]).transpose(1, 2);
        let (q, k) = (self.q.forward(x)?, self.k.forward(x)?);
        let (q, k) = match &self.head_norms {
            Some((qn, kn)) => (qn.forward(&q.view([b, l, nh, hd])), kn.forward(&k.view([b, l, nkv, hd]))),
            None => (q, k),
        };
        let q = heads(q, nh);
        let k = heads(k, nkv);
        let v = heads(self.v.forward(x)?, nkv);
        let q = &q * inputs.cos + rotate_half(&q) * inputs.sin;
        let k = &k * inputs.cos + rotate_half(&k) * inputs.sin;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.shallow_clone(), v.shallow_clone()));
        let att = match self.softcap {
            None => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, inputs.mask, 0.0, inputs.causal, self.scale, nkv != nh)
            }
            Some(cap) => self.softcapped(&q, &k, &v, inputs, cap),
        };
        self.o.forward(&att.transpose(1, 2).reshape([b, l, nh * hd]))
    }

    /// Attention with soft-capped scores, as transformers' eager path computes it: scores scaled,
    /// capped, masked, softmax in f32, weighted values. `q` `(B, H, L, hd)`, `k`/`v`
    /// `(B, KV, T, hd)` -> `(B, H, L, hd)`.
    fn softcapped(&self, q: &Tensor, k: &Tensor, v: &Tensor, inputs: &AttentionInputs, cap: f64) -> Tensor {
        let groups = self.heads / self.kv_heads;
        let (k, v) = if groups > 1 {
            (k.repeat_interleave_self_int(groups, 1, None), v.repeat_interleave_self_int(groups, 1, None))
        } else {
            (k.shallow_clone(), v.shallow_clone())
        };
        let scale = self.scale.unwrap_or(1.0 / (self.head_dim as f64).sqrt());
        let scores = (q.matmul(&k.transpose(2, 3)) * scale / cap).tanh() * cap;
        let (l, t) = (q.size()[2], k.size()[2]);
        let visible = match (inputs.mask, inputs.causal) {
            (Some(m), _) => Some(m.shallow_clone()),
            (None, true) => Some(Tensor::ones([l, t], (tch::Kind::Bool, q.device())).tril(t - l)),
            (None, false) => None,
        };
        // The dtype's lowest finite value, as transformers adds it: a query that sees no key (a
        // left-padding position) gets uniform weights instead of NaN.
        let lowest = if q.kind() == tch::Kind::Half { -65504.0 } else { f64::from(f32::MIN) };
        let scores = match visible {
            Some(m) => scores.masked_fill(&m.logical_not(), lowest),
            None => scores,
        };
        scores.softmax(-1, tch::Kind::Float).to_kind(q.kind()).matmul(&v)
    }
}
