//! Multi-head self-attention with grouped or multi-query key/value heads, rotary positions and a
//! key/value cache, through libtorch's scaled-dot-product attention.

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
        Attention { q, k, v, o, heads, kv_heads, head_dim }
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
        let q = heads(self.q.forward(x)?, nh);
        let k = heads(self.k.forward(x)?, nkv);
        let v = heads(self.v.forward(x)?, nkv);
        let q = &q * inputs.cos + rotate_half(&q) * inputs.sin;
        let k = &k * inputs.cos + rotate_half(&k) * inputs.sin;
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.shallow_clone(), v.shallow_clone()));
        let att = Tensor::scaled_dot_product_attention(&q, &k, &v, inputs.mask, 0.0, inputs.causal, None, nkv != nh);
        self.o.forward(&att.transpose(1, 2).reshape([b, l, nh * hd]))
    }
}
