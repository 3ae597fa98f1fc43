//! Multi-head self-attention with grouped or multi-query key/value heads, rotary positions and a
//! key/value cache, through libtorch's scaled-dot-product attention.

use super::norm::RmsNorm;
use super::rope::rotate_half;
use crate::error::Result;
use crate::linear::AdaptableLinear;
use tch::{Device, Kind, Tensor};

/// The type attention computes in and the KV cache keeps, for activations of type `kind` on
/// `device`: f32 for a half-precision model on a CPU (docs/performance.md, "f32 attention for
/// bf16 models"), `kind` otherwise.
pub(crate) fn attention_kind(kind: Kind, device: Device) -> Kind {
    match (device, kind) {
        (Device::Cpu, Kind::BFloat16 | Kind::Half) => Kind::Float,
        _ => kind,
    }
}

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

/// One layer's cached keys and values, `(B, kv_heads, len, head_dim)` views into buffers that
/// keep room for more positions, so a decoding step writes its keys in place instead of copying
/// the whole cache (`torch.cat`) at every token.
#[derive(Debug)]
pub(crate) struct KvSlot {
    k: Tensor,
    v: Tensor,
    len: i64,
}

impl KvSlot {
    /// A slot holding exactly `k` and `v` (`(B, kv_heads, L, head_dim)`); the first append copies
    /// them into a buffer with room, so tensors shared with others are never written.
    pub(crate) fn new(k: Tensor, v: Tensor) -> Self {
        let len = k.size()[2];
        KvSlot { k, v, len }
    }

    /// The cached keys and values.
    pub(crate) fn kv(&self) -> (Tensor, Tensor) {
        (self.k.narrow(2, 0, self.len), self.v.narrow(2, 0, self.len))
    }

    /// Appends `k`, `v` of new positions; returns every cached key and value. Under autograd the
    /// cache is concatenated (an in-place write would join the graph); otherwise the buffer grows
    /// by a quarter of its length (at least 128 slots) when full, which keeps the copying linear
    /// in the final length.
    fn append(&mut self, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
        let (old, l) = (self.len, k.size()[2]);
        if k.requires_grad() || v.requires_grad() || self.k.requires_grad() {
            let (pk, pv) = self.kv();
            *self = KvSlot::new(Tensor::cat(&[pk, k], 2), Tensor::cat(&[pv, v], 2));
            return self.kv();
        }
        let capacity = self.k.size()[2];
        if old + l > capacity {
            let room = old + l + (old / 4).max(128);
            let grow = |buf: &Tensor| {
                let mut size = buf.size();
                size[2] = room;
                let fresh = Tensor::empty(size, (buf.kind(), buf.device()));
                fresh.narrow(2, 0, old).copy_(&buf.narrow(2, 0, old));
                fresh
            };
            self.k = grow(&self.k);
            self.v = grow(&self.v);
        }
        self.k.narrow(2, old, l).copy_(&k);
        self.v.narrow(2, old, l).copy_(&v);
        self.len = old + l;
        self.kv()
    }
}

/// What every block's attention shares in one forward pass.
pub(crate) struct AttentionInputs<'a> {
    /// RoPE tables `(B|1, 1, L, head_dim)` for the new tokens.
    pub cos: &'a Tensor,
    /// See `cos`.
    pub sin: &'a Tensor,
    /// Boolean mask `(B|1, 1, Lq, cache + L)` of the keys each query sees, when not plain causal.
    pub mask: Option<&'a Tensor>,
    /// Plain causal attention (no cache, no padding, more than one token, every token a query).
    pub causal: bool,
    /// Which new tokens are queries, and whether rows are packed.
    pub queries: QueryRows<'a>,
}

/// Which of the `L` new tokens a block computes outputs for, and how rows are laid out. A block
/// always computes keys and values for every new token (later tokens and the cache need them);
/// the last block of a pass can skip the queries, attention and MLP of tokens whose output nobody
/// reads (`docs/performance.md`, "Only the outputs that are read").
#[derive(Clone, Copy)]
pub(crate) enum QueryRows<'a> {
    /// Every new token of every row.
    All,
    /// The last `n` new tokens of every row (a left-padded batch); the mask has `Lq = n` rows.
    Last(i64),
    /// One packed row (`B = 1`): the new tokens are whole sequences of these lengths laid end to
    /// end, each attending causally to itself only (no padding, no cache before them). With
    /// `tails` (`(counts, rows)`), only the last `counts[i]` tokens of sequence `i` are queries,
    /// at the i64 indices `rows` `(sum of counts,)` of the packed row.
    Packed { lengths: &'a [i64], tails: Option<(&'a [i64], &'a Tensor)> },
}

impl QueryRows<'_> {
    /// The query rows of `t` along its new-token dimension `dim`.
    pub(crate) fn select(&self, t: &Tensor, dim: i64) -> Tensor {
        match *self {
            QueryRows::All | QueryRows::Packed { tails: None, .. } => t.shallow_clone(),
            QueryRows::Last(n) => {
                let l = t.size()[dim as usize];
                t.narrow(dim, l - n, n)
            }
            QueryRows::Packed { tails: Some((_, rows)), .. } => t.index_select(dim, rows),
        }
    }
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

    /// Hidden states `x` `(B, L, hidden)` of `L` new tokens -> `(B, Lq, hidden)` for the query
    /// tokens `inputs.queries` selects; appends the keys and values `(B, kv_heads, L, head_dim)` of
    /// all `L` to `cache`.
    pub(crate) fn forward(&self, x: &Tensor, inputs: &AttentionInputs, cache: &mut Option<KvSlot>) -> Result<Tensor> {
        let size = x.size();
        let (b, l) = (size[0], size[1]);
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let xq = inputs.queries.select(x, 1);
        let lq = xq.size()[1];
        let heads = |t: Tensor, n: i64, l: i64| t.view([b, l, n, hd]).transpose(1, 2);
        let (q, k) = (self.q.forward(&xq)?, self.k.forward(x)?);
        let (q, k) = match &self.head_norms {
            Some((qn, kn)) => (qn.forward(&q.view([b, lq, nh, hd])), kn.forward(&k.view([b, l, nkv, hd]))),
            None => (q, k),
        };
        let q = heads(q, nh, lq);
        let k = heads(k, nkv, l);
        let v = heads(self.v.forward(x)?, nkv, l);
        let (qcos, qsin) = (inputs.queries.select(inputs.cos, 2), inputs.queries.select(inputs.sin, 2));
        let q = &q * qcos + rotate_half(&q) * qsin;
        let k = &k * inputs.cos + rotate_half(&k) * inputs.sin;
        // On CPUs a half-precision model attends in f32 and caches keys and values in f32
        // (docs/performance.md, "f32 attention for bf16 models"): libtorch's CPU attention
        // multiplies a few queries by a bf16 cache through MKL's bf16 GEMV, 5-8x slower than
        // f32. The cached values are the bf16 projections' values exactly.
        let kind = x.kind();
        let upcast = attention_kind(kind, x.device()) != kind;
        let (q, k, v) = match upcast {
            true => (q.to_kind(Kind::Float), k.to_kind(Kind::Float), v.to_kind(Kind::Float)),
            false => (q, k, v),
        };
        let (k, v) = match cache {
            Some(_) if matches!(inputs.queries, QueryRows::Packed { .. }) => {
                return Err(crate::error::Error::Input("packed sequences start with an empty KV cache".into()));
            }
            Some(slot) => slot.append(k, v),
            None => {
                *cache = Some(KvSlot::new(k.shallow_clone(), v.shallow_clone()));
                (k, v)
            }
        };
        let att = match inputs.queries {
            QueryRows::Packed { lengths, tails } => {
                // Each packed sequence attends to its own keys: one causal product per sequence (a
                // block-diagonal mask would make the kernel visit every pair of the packed row).
                let mut parts = Vec::with_capacity(lengths.len());
                let (mut qo, mut ko) = (0, 0);
                for (i, &n) in lengths.iter().enumerate() {
                    let qn = tails.map_or(n, |(counts, _)| counts[i]);
                    let (qs, ks, vs) = (q.narrow(2, qo, qn), k.narrow(2, ko, n), v.narrow(2, ko, n));
                    // The last qn of n tokens as queries: SDPA's causal flag aligns its triangle
                    // top-left, so a partial tail gets its bottom-right triangle as a mask.
                    match qn {
                        0 => {}
                        _ if qn == n || qn == 1 => parts.push(self.attend(&qs, &ks, &vs, None, qn > 1)),
                        _ => {
                            let mask = Tensor::ones([1, 1, qn, n], (Kind::Bool, q.device())).tril(n - qn);
                            parts.push(self.attend(&qs, &ks, &vs, Some(&mask), false));
                        }
                    }
                    qo += qn;
                    ko += n;
                }
                Tensor::cat(&parts, 2)
            }
            _ => self.attend(&q, &k, &v, inputs.mask, inputs.causal),
        };
        self.o.forward(&att.to_kind(kind).transpose(1, 2).reshape([b, lq, nh * hd]))
    }

    /// Scaled-dot-product attention of `q` `(B, H, Lq, hd)` over `k`/`v` `(B, KV, T, hd)`, with a
    /// boolean `mask` `(B|1, 1, Lq, T)` or the plain causal flag.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool) -> Tensor {
        match self.softcap {
            None => Tensor::scaled_dot_product_attention(
                q,
                k,
                v,
                mask,
                0.0,
                causal,
                self.scale,
                self.kv_heads != self.heads,
            ),
            Some(cap) => self.softcapped(q, k, v, mask, causal, cap),
        }
    }

    /// Attention with soft-capped scores, as transformers' eager path computes it: scores scaled,
    /// capped, masked, softmax in f32, weighted values. `q` `(B, H, L, hd)`, `k`/`v`
    /// `(B, KV, T, hd)` -> `(B, H, L, hd)`.
    fn softcapped(&self, q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, causal: bool, cap: f64) -> Tensor {
        let groups = self.heads / self.kv_heads;
        let (k, v) = if groups > 1 {
            (k.repeat_interleave_self_int(groups, 1, None), v.repeat_interleave_self_int(groups, 1, None))
        } else {
            (k.shallow_clone(), v.shallow_clone())
        };
        let scale = self.scale.unwrap_or(1.0 / (self.head_dim as f64).sqrt());
        let scores = (q.matmul(&k.transpose(2, 3)) * scale / cap).tanh() * cap;
        let (l, t) = (q.size()[2], k.size()[2]);
        let visible = match (mask, causal) {
            (Some(m), _) => Some(m.shallow_clone()),
            (None, true) => Some(Tensor::ones([l, t], (Kind::Bool, q.device())).tril(t - l)),
            (None, false) => None,
        };
        // The dtype's lowest finite value, as transformers adds it: a query that sees no key (a
        // left-padding position) gets uniform weights instead of NaN.
        let lowest = if q.kind() == Kind::Half { -65504.0 } else { f64::from(f32::MIN) };
        let scores = match visible {
            Some(m) => scores.masked_fill(&m.logical_not(), lowest),
            None => scores,
        };
        scores.softmax(-1, Kind::Float).to_kind(q.kind()).matmul(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::KvSlot;
    use tch::{Device, Kind, Tensor};

    /// Appends across several buffer growths give what concatenation gives, and never write into
    /// the tensors the slot started from (they may be shared with a prefix memo).
    #[test]
    fn a_growing_slot_equals_concatenation_and_leaves_its_first_tensors_alone() {
        let _guard = tch::no_grad_guard();
        let opts = (Kind::Float, Device::Cpu);
        let (k0, v0) = (Tensor::randn([2, 3, 5, 4], opts), Tensor::randn([2, 3, 5, 4], opts));
        let (k0_copy, v0_copy) = (k0.copy(), v0.copy());
        let mut slot = KvSlot::new(k0.shallow_clone(), v0.shallow_clone());
        let (mut want_k, mut want_v) = (k0.copy(), v0.copy());
        // 1-token steps and a few longer chunks, past 128 + 160 / 4 slots (two growths).
        for step in 0..300i64 {
            let l = if step % 50 == 0 { 7 } else { 1 };
            let (k, v) = (Tensor::randn([2, 3, l, 4], opts), Tensor::randn([2, 3, l, 4], opts));
            want_k = Tensor::cat(&[&want_k, &k], 2);
            want_v = Tensor::cat(&[&want_v, &v], 2);
            let (got_k, got_v) = slot.append(k, v);
            assert!(got_k.equal(&want_k) && got_v.equal(&want_v), "step {step}");
        }
        assert_eq!(slot.kv().0.size()[2], 5 + 294 + 6 * 7);
        assert!(k0.equal(&k0_copy) && v0.equal(&v0_copy));
    }

    /// Under autograd the cache concatenates, so gradients reach earlier keys.
    #[test]
    fn appending_keeps_gradients_flowing() {
        let opts = (Kind::Float, Device::Cpu);
        let k0 = Tensor::randn([1, 1, 2, 2], opts).set_requires_grad(true);
        let mut slot = KvSlot::new(k0.shallow_clone(), Tensor::zeros([1, 1, 2, 2], opts));
        let (k, _) = slot.append(Tensor::ones([1, 1, 1, 2], opts), Tensor::ones([1, 1, 1, 2], opts));
        k.sum(Kind::Float).backward();
        assert!(k0.grad().equal(&Tensor::ones([1, 1, 2, 2], opts)));
    }
}
