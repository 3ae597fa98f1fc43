//! What a pass keeps for the next: the KV cache of incremental decoding, and the frozen leading
//! blocks' output ([`FrozenPrefix`]) that training and evaluation reuse.

use crate::llm::attention::KvSlot;
use tch::Tensor;

/// Per-layer key/value cache for incremental decoding.
#[derive(Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<Option<KvSlot>>,
    pub(crate) len: i64,
    /// Task-gated atoms: the task each row was recognised as at its prompt `(B, 1)` i64; the
    /// rows' later tokens use the same atoms.
    pub(crate) open_tasks: Option<Tensor>,
}

impl KvCache {
    /// Turns the cache of one packed row (`(1, kv_heads, sum of lengths, head_dim)` per layer,
    /// sequences of `lengths` end to end) into the cache of a left-padded batch
    /// `(B, kv_heads, width, head_dim)`: row `i` holds sequence `i` in its last `lengths[i]` slots
    /// and zeros before (masked out by the caller's `keys_valid`).
    pub(crate) fn unpack(&mut self, lengths: &[i64], width: i64) {
        let b = lengths.len() as i64;
        let spread = |packed: &Tensor| {
            let mut size = packed.size();
            size[0] = b;
            size[2] = width;
            let out = Tensor::zeros(size, (packed.kind(), packed.device()));
            let mut start = 0;
            for (i, &n) in lengths.iter().enumerate() {
                out.get(i as i64).narrow(1, width - n, n).copy_(&packed.get(0).narrow(1, start, n));
                start += n;
            }
            out
        };
        for slot in self.layers.iter_mut().flatten() {
            let (k, v) = slot.kv();
            *slot = KvSlot::new(spread(&k), spread(&v));
        }
        self.len = width;
    }

    /// Number of cached positions.
    pub fn len(&self) -> i64 {
        self.len
    }
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What the frozen leading blocks computed for a batch of token rows ([`CausalLm::frozen_prefix`]).
#[derive(Debug)]
pub struct FrozenPrefix {
    /// Blocks covered: `0..blocks`.
    pub blocks: usize,
    /// Hidden states entering block `blocks`, `(B, L, d)` (packed: `(1, sum of lengths, d)`).
    pub hidden: Tensor,
    /// Keys and values `(B, kv_heads, L, head_dim)` of each prefix block, when kept (generation).
    pub(crate) kv: Option<Vec<(Tensor, Tensor)>>,
    /// The sequence lengths when the rows were packed into one (generation's prefill).
    pub(crate) segments: Option<Vec<i64>>,
}

impl FrozenPrefix {
    /// Bytes held by its tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        size(&self.hidden) + self.kv.iter().flatten().map(|(k, v)| size(k) + size(v)).sum::<usize>()
    }
}
