//! Decoder-only causal LMs: LLaMA (Touvron et al., 2023), Gemma (Gemma Team, 2024), Qwen2,
//! Qwen3, Mistral, Gemma 2 and Gemma 3, with MoRAM injection and a KV cache.
//!
//! Mirrors `transformers` `modeling_llama.py` / `modeling_gemma.py` (parity fixtures from
//! transformers 4.57.1, `tests/fixtures/llm/`; config semantics of 4.45.2, the version the official
//! MoRAM code pins, see `config.rs`): RMSNorm in f32 (Gemma:
//! `1 + w`), rotary embeddings with `rotate_half`, grouped- or multi-query attention through
//! scaled-dot-product attention, SwiGLU (Gemma: GeGLU, tanh or exact GELU) MLP, Gemma's `sqrt(hidden)`
//! embedding scale, tied or separate LM head. Built in Hugging Face key space (`model.layers.{i}.self_attn.q_proj`);
//! GGUF checkpoints are mapped at load, undoing llama.cpp's q/k row permutation.

use super::attention::{AttentionInputs, KvSlot, QueryRows};
use super::config::{Arch, LlmConfig};
use super::gguf::GgufFile;
use super::layout::{self, Permute};
use super::llama::{norm_scale, Block};
use super::norm::RmsNorm;
use super::packing::{self, PackedBatch};
use super::rope::Rope;
use super::vars::{Provider, Vars};
use crate::error::{Error, Result};
use crate::target::{LinearSite, TargetSpec};
use moram_core::MoramConfig;
use tch::{Device, Kind, Tensor};

pub use super::layout::LLAMA_MODULES;

/// Per-layer key/value cache for incremental decoding.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<super::attention::KvSlot>>,
    len: i64,
    /// Task-gated atoms: the task each row was recognised as at its prompt `(B, 1)` i64; the
    /// rows' later tokens use the same atoms.
    pub(super) open_tasks: Option<Tensor>,
}

impl KvCache {
    /// Turns the cache of one packed row (`(1, kv_heads, sum of lengths, head_dim)` per layer,
    /// sequences of `lengths` end to end) into the cache of a left-padded batch
    /// `(B, kv_heads, width, head_dim)`: row `i` holds sequence `i` in its last `lengths[i]` slots
    /// and zeros before (masked out by the caller's `keys_valid`).
    pub(super) fn unpack(&mut self, lengths: &[i64], width: i64) {
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
    kv: Option<Vec<(Tensor, Tensor)>>,
    /// The sequence lengths when the rows were packed into one (generation's prefill).
    segments: Option<Vec<i64>>,
}

/// Which outputs of a pass through the decoder stack the caller reads. The last block computes
/// only those (keys and values of every token are still computed and cached), unless one of its
/// MoRAM layers records statistics over every token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Outputs<'a> {
    /// Every new token's hidden state.
    Every,
    /// The last `n` new tokens of each row: training's labelled tail, prefill's last token.
    Last(i64),
    /// The last `tails[i]` tokens of packed sequence `i`, in packed order (packed prefill: 1
    /// each; packed training: each row's labelled tail).
    SequenceTails(&'a [i64]),
}

impl FrozenPrefix {
    /// Bytes held by its tensors.
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        size(&self.hidden) + self.kv.iter().flatten().map(|(k, v)| size(k) + size(v)).sum::<usize>()
    }
}

/// A decoder-only causal language model (LLaMA or Gemma).
#[derive(Debug)]
pub struct CausalLm {
    embed: Tensor,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Tensor,
    rope: Rope,
    /// The windowed layers' RoPE when its base differs (Gemma 3).
    rope_local: Option<Rope>,
    config: LlmConfig,
    /// Task-gated atoms: which task each sequence belongs to (`gating.rs`).
    pub(super) task_gate: Option<moram_core::TaskGate>,
}

impl CausalLm {
    fn build(config: &LlmConfig, get: &Provider, device: Device) -> Result<Self> {
        let d = config.hidden_size;
        let vb = Vars::root(get);
        let model = vb.pp("model");
        let blocks = (0..config.num_hidden_layers)
            .map(|i| Block::load(&model.pp(format!("layers.{i}")), config, i as usize))
            .collect::<Result<Vec<_>>>()?;
        let embed = model.pp("embed_tokens").get("weight", &[config.vocab_size, d])?;
        let lm_head = if config.tie_word_embeddings {
            embed.shallow_clone()
        } else {
            vb.pp("lm_head").get("weight", &[config.vocab_size, d])?
        };
        let norm = RmsNorm::new(model.pp("norm").get("weight", &[d])?, config.rms_norm_eps, norm_scale(config.arch));
        let rope =
            Rope::new(config.head_dim, config.rope_theta, config.rope_scaling, config.max_position_embeddings, device);
        let rope_local = config
            .rope_local_theta
            .map(|theta| Rope::new(config.head_dim, theta, None, config.max_position_embeddings, device));
        Ok(CausalLm { embed, blocks, norm, lm_head, rope, rope_local, config: config.clone(), task_gate: None })
    }

    /// Loads a Hugging Face checkpoint (file, shard index or folder) for `config`, after one strict
    /// check of every key and shape.
    pub fn from_hf(source: &crate::WeightSource, config: &LlmConfig, kind: Kind, device: Device) -> Result<Self> {
        source.check(&layout::hf_tensors(config), |k| k.ends_with("rotary_emb.inv_freq"))?;
        let get = |name: &str, shape: &[i64]| source.get(name, shape, kind, device);
        Self::build(config, &get, device)
    }

    /// Loads a GGUF file (llama.cpp's `llama` or `gemma3` architecture), dequantised to `kind` on
    /// `device`.
    pub fn from_gguf(gguf: &GgufFile, kind: Kind, device: Device) -> Result<Self> {
        let config = LlmConfig::from_gguf(gguf)?;
        let (nh, nkv) = (config.num_attention_heads, config.num_key_value_heads);
        let get = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let (key, permute) = layout::gguf_name(config.arch, name);
            let t = gguf.tensor(&key)?;
            if t.size() != shape {
                return Err(Error::Shape { path: gguf.path().into(), key, expected: shape.to_vec(), found: t.size() });
            }
            // Undo llama.cpp's rotary permutation of q/k rows (convert_hf_to_gguf.py `permute`).
            let t = match permute {
                Permute::QueryHeads => unpermute(&t, nh),
                Permute::KeyValueHeads => unpermute(&t, nkv),
                Permute::None => t,
            };
            // llama.cpp's converter stores Gemma norms as `1 + w`; the model adds the 1 itself.
            let t =
                if layout::gguf_norms_include_one(config.arch) && name.ends_with("norm.weight") { t - 1.0 } else { t };
            Ok(t.to_kind(kind).to_device(device).detach())
        };
        Self::build(&config, &get, device)
    }

    /// The configuration.
    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Logits `(B, L, vocab)` f32 for token ids `(B, L)`, continuing from (and extending) `cache`.
    /// Every row is a real sequence (no padding); see [`CausalLm::forward_padded`].
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let positions = self.next_positions(ids, cache);
        self.forward_padded(ids, &positions, None, cache)
    }

    /// Logits `(B, vocab)` f32 of the last position only, continuing from (and extending)
    /// `cache`: what generation needs after a prompt. The LM head runs on one position per row
    /// instead of `L` (as `transformers` does with `logits_to_keep=1`), which saves a fifth of a
    /// prefill's work for SmolLM2, LLaMA-3.2-1B and Gemma-2B and `B x L x vocab` floats of memory.
    pub fn forward_last(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let positions = self.next_positions(ids, cache);
        self.forward_padded_last(ids, &positions, None, cache)
    }

    /// RoPE positions `(1, L)` of `L` new tokens after the cached ones.
    fn next_positions(&self, ids: &Tensor, cache: &KvCache) -> Tensor {
        let l = ids.size().get(1).copied().unwrap_or(0);
        Tensor::arange_start(cache.len, cache.len + l, (Kind::Int64, self.embed.device())).unsqueeze(0)
    }

    /// The general forward: token ids `(B, L)`, their RoPE positions `(B, L)` (or `(1, L)`), and
    /// which key positions `(B, cache + L)` are real tokens (`None`: all). New tokens attend to
    /// real cached positions and causally among themselves. Returns logits `(B, L, vocab)` f32.
    pub fn forward_padded(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let h = self.hidden_states(ids, positions, keys_valid, cache, Outputs::Every)?;
        Ok(self.logits(&h))
    }

    /// [`CausalLm::forward_padded`] with logits `(B, vocab)` f32 of the last position only
    /// (see [`CausalLm::forward_last`]).
    pub fn forward_padded_last(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let h = self.hidden_states(ids, positions, keys_valid, cache, Outputs::Last(1))?;
        Ok(self.logits(&h.select(1, -1)))
    }

    /// Final norm and LM head: hidden states `(.., d)` to f32 logits `(.., vocab)`.
    pub(crate) fn logits(&self, h: &Tensor) -> Tensor {
        let logits = moram_core::runtime::linear(&self.norm.forward(h), &self.lm_head, None);
        match self.config.final_logit_softcapping {
            Some(cap) => ((logits / cap).tanh() * cap).to_kind(Kind::Float),
            None => logits.to_kind(Kind::Float),
        }
    }

    /// The decoder stack: hidden states `(B, L, d)` before the final norm (`(B, n, d)` for
    /// [`Outputs::Last`]); extends `cache`.
    fn hidden_states(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        cache: &mut KvCache,
        outputs: Outputs<'_>,
    ) -> Result<Tensor> {
        let h = self.embed_tokens(ids)?;
        self.run_blocks(h, 0..self.blocks.len(), positions, keys_valid, None, cache, outputs)
    }

    /// Token embeddings `(B, L, d)` (Gemma: times `sqrt(hidden)`), after checking the ids.
    pub(super) fn embed_tokens(&self, ids: &Tensor) -> Result<Tensor> {
        let size = ids.size();
        if size.len() != 2 || ids.kind() != Kind::Int64 {
            return Err(Error::Input(format!("token ids must be i64 (B, L), found {:?} {size:?}", ids.kind())));
        }
        if size[0] == 0 || size[1] == 0 {
            return Err(Error::Input(format!("token ids must hold at least one token per row, found {size:?}")));
        }
        let c = &self.config;
        let (lo, hi) = (ids.min().int64_value(&[]), ids.max().int64_value(&[]));
        if lo < 0 || hi >= c.vocab_size {
            return Err(Error::Input(format!("token ids must lie in [0, {}), found [{lo}, {hi}]", c.vocab_size)));
        }
        let mut h = Tensor::embedding(&self.embed, ids, -1, false, false);
        if matches!(c.arch, Arch::Gemma | Arch::Gemma2 | Arch::Gemma3) {
            // transformers rounds the normaliser to the hidden dtype before multiplying.
            let scale = Tensor::from((c.hidden_size as f64).sqrt() as f32).to_kind(h.kind()).to_device(h.device());
            h *= scale;
        }
        Ok(h)
    }

    /// Runs the blocks `range` on hidden states `h` `(B, L, d)` of `L` new tokens at RoPE
    /// `positions` `(B|1, L)`, with `keys_valid` `(B, cache + L)` marking real key positions, or
    /// with `segments`: one packed row (`B = 1`) of whole sequences of these lengths (positions
    /// restarting at each), each attending to itself only. Extends `cache` for those blocks; its
    /// length grows by `L` once the last block ran. When `range` ends with the model's last block,
    /// returns only the `outputs` the caller reads (`(B, n, d)` for `Last(n)`, `(1, sum of tails, d)`
    /// for `SequenceTails`), else every token's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_blocks(
        &self,
        mut h: Tensor,
        range: std::ops::Range<usize>,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        segments: Option<&[i64]>,
        cache: &mut KvCache,
        outputs: Outputs<'_>,
    ) -> Result<Tensor> {
        let size = h.size();
        let (b, l) = (size[0], size[1]);
        if cache.layers.is_empty() {
            cache.layers = (0..self.blocks.len()).map(|_| None).collect();
        }
        let device = self.embed.device();
        let total = cache.len + l;
        let kind = self.embed.kind();
        if let Some(lengths) = segments {
            let longest = lengths.iter().copied().max().unwrap_or(0);
            if b != 1 || cache.len != 0 || keys_valid.is_some() || lengths.iter().sum::<i64>() != l {
                return Err(Error::Input(format!(
                    "packed sequences need one row of exactly their {l} tokens, no cache and no padding mask"
                )));
            }
            if self.config.sliding_window.is_some_and(|w| longest > w) {
                return Err(Error::Input("packed sequences longer than the attention window are not supported".into()));
            }
        }
        let (cos, sin) = self.rope.cos_sin(positions, kind);
        let window = self.config.sliding_window.filter(|&w| total > w && segments.is_none());
        let needs_local = self.blocks[range.clone()].iter().any(|blk| blk.local);
        let local_rope = match (&self.rope_local, needs_local) {
            (Some(r), true) => Some(r.cos_sin(positions, kind)),
            _ => None,
        };
        let (lcos, lsin) = local_rope.as_ref().map_or((&cos, &sin), |(c, s)| (c, s));
        // The boolean masks of the last `n` new tokens as queries. Soft-capped attention computes
        // its scores itself: it gets the causal mask built here once, not once per layer.
        let softcap = self.config.attn_logit_softcapping.is_some();
        let masks = |n: i64, local: bool| -> Result<(bool, Option<Tensor>)> {
            if segments.is_some() {
                return Ok((false, None));
            }
            Ok(match attention_mask(total - n, b, n, keys_valid, if local { window } else { None }, device)? {
                (true, None) if softcap => (false, Some(Tensor::ones([1, 1, n, n], (Kind::Bool, device)).tril(0))),
                other => other,
            })
        };
        let all_rows = match segments {
            Some(lengths) => QueryRows::Packed { lengths, tails: None },
            None => QueryRows::All,
        };
        // Every layer windowed (Mistral, once past the window): no global mask is needed.
        let needs_global = window.is_none() || self.blocks[range.clone()].iter().any(|blk| !blk.local);
        let (causal, mask) = if needs_global { masks(l, false)? } else { (false, None) };
        let global = AttentionInputs { cos: &cos, sin: &sin, mask: mask.as_ref(), causal, queries: all_rows };
        let local_mask = match (needs_local, window) {
            (true, Some(_)) => Some(masks(l, true)?),
            _ => None,
        };
        let (lcausal, lmask) = local_mask.as_ref().map_or((causal, mask.as_ref()), |(c, m)| (*c, m.as_ref()));
        // Task-gated atoms: a generation's later tokens use the atoms its prompt was recognised for.
        let _open = cache.open_tasks.as_ref().map(|t| self.limit_atoms(t));
        let local = AttentionInputs { cos: lcos, sin: lsin, mask: lmask, causal: lcausal, queries: all_rows };
        let last = range.end == self.blocks.len();
        // The last block computes only the outputs that are read (docs/performance.md): the
        // query rows and their count.
        let rows = match (outputs, segments) {
            (Outputs::SequenceTails(tails), Some(lengths)) => {
                let bad = tails.iter().zip(lengths).any(|(t, n)| *t < 0 || t > n);
                if tails.len() != lengths.len() || bad || tails.iter().sum::<i64>() == 0 {
                    return Err(Error::Input(format!(
                        "sequence tails {tails:?} must give 0..=n tokens of each packed sequence {lengths:?}, not all 0"
                    )));
                }
                Some(Tensor::from_slice(&packing::tail_rows(lengths, tails)).to_device(device))
            }
            (Outputs::SequenceTails(_), None) => {
                return Err(Error::Input("sequence tails are only defined for packed sequences".into()));
            }
            _ => None,
        };
        let tail = match (outputs, segments, rows.as_ref()) {
            _ if !last || range.is_empty() || self.blocks[range.end - 1].is_observed() => None,
            (Outputs::Last(n), ..) if n < l => Some((n, QueryRows::Last(n))),
            (Outputs::SequenceTails(tails), Some(lengths), Some(rows)) => {
                Some((rows.size()[0], QueryRows::Packed { lengths, tails: Some((tails, rows)) }))
            }
            _ => None,
        };
        for i in range {
            let is_local = self.blocks[i].local;
            let inputs = if is_local { &local } else { &global };
            h = match tail {
                Some((n, queries)) if i + 1 == self.blocks.len() => {
                    let (causal, mask) = masks(n, is_local)?;
                    let tail = AttentionInputs { mask: mask.as_ref(), causal, queries, ..*inputs };
                    self.blocks[i].forward(&h, &tail, &mut cache.layers[i])?
                }
                _ => self.blocks[i].forward(&h, inputs, &mut cache.layers[i])?,
            };
        }
        if last {
            cache.len += l;
        }
        Ok(h)
    }

    /// Number of decoder blocks.
    pub(super) fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Number of leading blocks without any MoRAM layer: what they compute never changes while
    /// atoms are trained, so it can be computed once ([`CausalLm::frozen_prefix`]).
    pub fn frozen_prefix_blocks(&self) -> usize {
        self.blocks.iter().take_while(|b| b.linears().iter().all(|l| l.moram().is_none())).count()
    }

    /// Runs the frozen leading blocks ([`CausalLm::frozen_prefix_blocks`]) once for token ids
    /// `(B, L)` at `positions`, with `keys_valid` as in [`CausalLm::forward_padded`]: the hidden
    /// states entering the first adapted block and (with `keep_kv`) the prefix blocks' keys and
    /// values. [`CausalLm::causal_lm_loss_from`] and [`CausalLm::generate_with_prefixes`] start from it.
    pub fn frozen_prefix(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        keep_kv: bool,
    ) -> Result<FrozenPrefix> {
        self.frozen_prefix_of(ids, positions, keys_valid, None, keep_kv)
    }

    /// [`CausalLm::frozen_prefix`] of rows laid out as `forward`'s `keys_valid` or `segments` say.
    pub(super) fn frozen_prefix_of(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        segments: Option<&[i64]>,
        keep_kv: bool,
    ) -> Result<FrozenPrefix> {
        let _guard = tch::no_grad_guard();
        let blocks = self.frozen_prefix_blocks();
        let mut cache = KvCache::default();
        let h = self.embed_tokens(ids)?;
        let hidden = self.run_blocks(h, 0..blocks, positions, keys_valid, segments, &mut cache, Outputs::Every)?;
        let kv = if keep_kv {
            Some(cache.layers.iter().take(blocks).flatten().map(|slot| slot.kv()).collect())
        } else {
            None
        };
        Ok(FrozenPrefix { blocks, hidden, kv, segments: segments.map(<[i64]>::to_vec) })
    }

    /// Continues a [`FrozenPrefix`] of a whole prompt batch through the remaining blocks, filling
    /// `cache` (which must be empty) for every block: the hidden states before the final norm
    /// that `outputs` asks for, equal to [`CausalLm::hidden_states`]'s on the same inputs.
    pub(super) fn hidden_states_from(
        &self,
        prefix: &FrozenPrefix,
        positions: &Tensor,
        keys_valid: Option<&Tensor>,
        cache: &mut KvCache,
        outputs: Outputs<'_>,
    ) -> Result<Tensor> {
        self.check_prefix(prefix)?;
        if !cache.is_empty() {
            return Err(Error::Input("a frozen prefix starts a sequence: the KV cache must be empty".into()));
        }
        let kv = prefix.kv.as_ref().ok_or_else(|| {
            Error::Input("this frozen prefix kept no keys/values (computed with keep_kv = false)".into())
        })?;
        cache.layers = (0..self.blocks.len()).map(|_| None).collect();
        for (slot, (k, v)) in cache.layers.iter_mut().zip(kv) {
            *slot = Some(super::attention::KvSlot::new(k.shallow_clone(), v.shallow_clone()));
        }
        let h = prefix.hidden.shallow_clone();
        let segments = prefix.segments.as_deref();
        self.run_blocks(h, prefix.blocks..self.blocks.len(), positions, keys_valid, segments, cache, outputs)
    }

    /// Whether `prefix` still describes this model: the blocks it covers must still be free of atoms.
    fn check_prefix(&self, prefix: &FrozenPrefix) -> Result<()> {
        if prefix.blocks > self.frozen_prefix_blocks() {
            return Err(Error::Input(format!(
                "a frozen prefix over {} blocks is stale: block {} has MoRAM layers now",
                prefix.blocks,
                self.frozen_prefix_blocks()
            )));
        }
        Ok(())
    }

    /// Causal-LM training loss: mean cross-entropy of next-token predictions over the positions
    /// whose label is not -100 (`labels` `(B, L)`, aligned with `ids`; prompt tokens and padding
    /// are masked with -100 by the caller, protocol 4.4). `attention_mask` `(B, L)` marks real
    /// tokens (left padding); positions run 0..L-1 including pads, as `transformers` does in
    /// training when no position ids are given (protocol 4.4, point 7). The LM head runs only on
    /// the positions that predict a label (the loss is the same; the `B x L x vocab` logits of
    /// every prompt position are never formed). A left-padded batch runs without its pad
    /// positions, rows packed end to end (`packing.rs`; the same loss up to float rounding).
    pub fn causal_lm_loss(&self, ids: &Tensor, labels: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        let l = self.check_labels(ids, labels)?;
        if self.gating() {
            // Task-gated atoms in eval mode: the prompt's pass through the frozen blocks says which
            // atoms the sequence may use.
            let positions = Tensor::arange(l, (Kind::Int64, self.device())).unsqueeze(0);
            let prefix = self.frozen_prefix(ids, &positions, attention_mask, false)?;
            return self.causal_lm_loss_from(&prefix.hidden, prefix.blocks, labels, attention_mask);
        }
        match self.packing(labels, attention_mask)? {
            Some(packed) => self.packed_loss(self.embed_tokens(&packed.gather(ids))?, 0, &packed),
            None => self.padded_loss(ids, labels, attention_mask, l),
        }
    }

    /// [`CausalLm::causal_lm_loss`] of the batch as given, pad positions included, `L = l`.
    fn padded_loss(&self, ids: &Tensor, labels: &Tensor, attention_mask: Option<&Tensor>, l: i64) -> Result<Tensor> {
        let positions = Tensor::arange(l, (Kind::Int64, self.device())).unsqueeze(0);
        let outputs = Outputs::Last(labelled_tail(labels));
        let h = self.hidden_states(ids, &positions, attention_mask, &mut KvCache::default(), outputs)?;
        self.loss_from_hidden(&h, labels)
    }

    /// [`CausalLm::causal_lm_loss`] starting from the hidden states that enter the first adapted
    /// block, `hidden` `(B, L, d)` (e.g. [`FrozenPrefix::hidden`] of each example, left-padded with
    /// anything: padded positions are masked out as keys and carry label -100). Equal to the full
    /// loss up to float rounding (RoPE depends only on relative positions, so the prefix may have
    /// been computed without padding).
    pub fn causal_lm_loss_from(
        &self,
        hidden: &Tensor,
        prefix_blocks: usize,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let size = hidden.size();
        if size.len() != 3 || size[2] != self.config.hidden_size || labels.size() != size[..2] {
            return Err(Error::Input(format!(
                "hidden states must be (B, L, {}) with labels (B, L), found {size:?} and {:?}",
                self.config.hidden_size,
                labels.size()
            )));
        }
        if prefix_blocks > self.frozen_prefix_blocks() {
            return Err(Error::Input(format!(
                "hidden states after {prefix_blocks} blocks are stale: block {} has MoRAM layers",
                self.frozen_prefix_blocks()
            )));
        }
        let l = self.check_labels(labels, labels)?;
        // Task-gated atoms in eval mode: each sequence is recognised by its prompt (the tokens
        // without a label), and its tokens use the atoms of tasks up to that one. The limit is
        // per row, so the batch runs padded.
        let _open = match self.gating() {
            true => {
                let real = match attention_mask {
                    Some(m) => m.shallow_clone(),
                    None => labels.ones_like(),
                };
                let prompt = super::gating::padded_prompt_tokens(&real).logical_and(&labels.eq(-100));
                Some(self.limit_atoms(&self.recognise(hidden, &prompt)?.unsqueeze(1)))
            }
            false => None,
        };
        if let Some(packed) = self.packing(labels, attention_mask)? {
            return self.packed_loss(packed.gather(hidden), prefix_blocks, &packed);
        }
        let positions = Tensor::arange(l, (Kind::Int64, self.device())).unsqueeze(0);
        let h = self.run_blocks(
            hidden.shallow_clone(),
            prefix_blocks..self.blocks.len(),
            &positions,
            attention_mask,
            None,
            &mut KvCache::default(),
            Outputs::Last(labelled_tail(labels)),
        )?;
        self.loss_from_hidden(&h, labels)
    }

    /// The packed layout of a left-padded training batch ([`PackedBatch::of`]), or `None` to run
    /// it padded: also when a MoRAM layer records what passes through it (it would see no pad
    /// positions) or RoPE is `dynamic` (its frequencies depend on the largest position of a pass).
    fn packing(&self, labels: &Tensor, attention_mask: Option<&Tensor>) -> Result<Option<PackedBatch>> {
        let dynamic = self.config.rope_scaling.is_some_and(|r| r.depends_on_pass_length());
        if dynamic || self.blocks.iter().any(Block::is_observed) {
            return Ok(None);
        }
        PackedBatch::of(labels, attention_mask, self.config.sliding_window)
    }

    /// The loss of a packed batch from hidden states `h` `(1, N, d)` entering block `first`.
    fn packed_loss(&self, h: Tensor, first: usize, packed: &PackedBatch) -> Result<Tensor> {
        let outputs = Outputs::SequenceTails(&packed.tails);
        let segments = Some(packed.lengths.as_slice());
        let mut cache = KvCache::default();
        let h = self.run_blocks(h, first..self.blocks.len(), &packed.positions, None, segments, &mut cache, outputs)?;
        // Every token's output when no block ran (a prefix over the whole model).
        let h = match h.size()[1] == packed.tails.iter().sum::<i64>() {
            true => h,
            false => {
                let rows = Tensor::from_slice(&packing::tail_rows(&packed.lengths, &packed.tails));
                h.index_select(1, &rows.to_device(h.device()))
            }
        };
        let keep = packed.targets.ne(-100).nonzero().squeeze_dim(-1);
        let pred = h.squeeze_dim(0).index_select(0, &keep);
        let target = packed.targets.index_select(0, &keep);
        Ok(self.logits(&pred).cross_entropy_loss::<Tensor>(&target, None, tch::Reduction::Mean, -100, 0.0))
    }

    fn check_labels(&self, ids: &Tensor, labels: &Tensor) -> Result<i64> {
        if labels.size() != ids.size() || labels.dim() != 2 {
            return Err(Error::Input(format!("labels {:?} must match ids {:?} (B, L)", labels.size(), ids.size())));
        }
        let l = ids.size()[1];
        if l < 2 {
            return Err(Error::Input("a training sequence needs at least 2 tokens".into()));
        }
        if labels.ne(-100).sum(Kind::Int64).int64_value(&[]) == 0 {
            return Err(Error::Input("every label is -100: nothing to learn from this batch".into()));
        }
        Ok(l)
    }

    /// Mean next-token cross-entropy of the final hidden states `(B, t, d)` of the last `t`
    /// positions of `labels` `(B, L)` at the positions whose next label is not -100.
    fn loss_from_hidden(&self, h: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let (t, d) = (h.size()[1], self.config.hidden_size);
        let start = labels.size()[1] - t;
        let target = labels.narrow(1, start + 1, t - 1).reshape([-1]);
        let keep = target.ne(-100).nonzero().squeeze_dim(-1);
        let pred = h.narrow(1, 0, t - 1).reshape([-1, d]).index_select(0, &keep);
        let logits = self.logits(&pred);
        Ok(logits.cross_entropy_loss::<Tensor>(&target.index_select(0, &keep), None, tch::Reduction::Mean, -100, 0.0))
    }

    /// The device of the model.
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// Greedy decoding of one prompt: at most `max_new_tokens` ids, stopping after any of `stop`.
    pub fn generate_greedy(&self, prompt: &[i64], max_new_tokens: usize, stop: &[i64]) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::Input("the prompt is empty".into()));
        }
        let _guard = tch::no_grad_guard();
        let mut cache = KvCache::default();
        let mut input = Tensor::from_slice(prompt).view([1, -1]).to_device(self.embed.device());
        let mut out = Vec::new();
        for _ in 0..max_new_tokens {
            let logits = self.forward_last(&input, &mut cache)?;
            let next = logits.argmax(-1, false).int64_value(&[0]);
            out.push(next);
            if stop.contains(&next) {
                break;
            }
            input = Tensor::from_slice(&[next]).view([1, 1]).to_device(self.embed.device());
        }
        Ok(out)
    }

    /// Bytes of every frozen base tensor ([`CausalLm::base_tensors`]): what one forward pass
    /// reads, tied head included.
    pub fn base_bytes(&self) -> usize {
        self.base_tensors().iter().map(|(_, t)| t.numel() * t.kind().elt_size_in_bytes()).sum()
    }

    /// Bytes the KV cache keeps per position and row: keys and values of every layer, in the
    /// type attention runs in on this device (f32 for a half-precision model on a CPU).
    pub fn kv_bytes_per_position(&self) -> usize {
        let c = &self.config;
        let kind = super::attention::attention_kind(self.embed.kind(), self.embed.device());
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
        let mut v = Vec::new();
        for i in 0..self.blocks.len() {
            for (m, path) in module_paths() {
                v.push(LinearSite {
                    path: format!("model.layers.{i}.{path}"),
                    encoder: "decoder".into(),
                    layer: i,
                    module: m.into(),
                });
            }
        }
        v
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

/// How many trailing positions of `labels` `(B, L)` (with at least one label past position 0)
/// a loss reads: from the first position whose next label is not -100 in any row to the end.
fn labelled_tail(labels: &Tensor) -> i64 {
    let l = labels.size()[1];
    let needed = labels.narrow(1, 1, l - 1).ne(-100).any_dim(0, false).nonzero();
    let first = if needed.numel() == 0 { 0 } else { needed.int64_value(&[0, 0]) };
    l - first
}

/// Which keys `L` new tokens after `cache` cached ones may attend to: key slot `j` is visible to
/// new token `i` when `j <= cache + i`, key `j` is a real token (`keys_valid` `(B, cache + L)`),
/// and with a `window` `w`, `j > cache + i - w` (transformers' `sliding_window_overlay`, over cache
/// slots: left padding counts towards the window there too). Returns SDPA's `is_causal` flag and
/// an explicit boolean mask `(B|1, 1, L, cache + L)` when the flag cannot express it.
fn attention_mask(
    cached: i64,
    b: i64,
    l: i64,
    keys_valid: Option<&Tensor>,
    window: Option<i64>,
    device: Device,
) -> Result<(bool, Option<Tensor>)> {
    let total = cached + l;
    // A batch without padding needs no explicit mask: SDPA's causal flag is cheaper (no
    // `L x T` mask is built or converted) and exact.
    let keys_valid = match keys_valid {
        Some(v) if v.size() == [b, total] && v.to_kind(Kind::Bool).all().int64_value(&[]) != 0 => None,
        other => other,
    };
    Ok(match (keys_valid, cached, l, window) {
        (None, 0, _, None) => (l > 1, None),
        (None, _, 1, None) => (false, None),
        _ => {
            let row = Tensor::arange_start(cached, total, (Kind::Int64, device)).unsqueeze(1);
            let col = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
            let mut m = col.le_tensor(&row);
            if let Some(w) = window {
                m = m.logical_and(&col.gt_tensor(&(&row - w)));
            }
            let mut m = m.view([1, 1, l, total]);
            if let Some(valid) = keys_valid {
                if valid.size() != [b, total] {
                    return Err(Error::Input(format!("keys_valid must be ({b}, {total}), found {:?}", valid.size())));
                }
                m = m.logical_and(&valid.to_kind(Kind::Bool).view([b, 1, 1, total]));
            }
            (false, Some(m))
        }
    })
}

/// `(module, path under model.layers.{i})` of the block's linear layers, in [`Block::linears`]
/// order (the same seven paths in every family).
fn module_paths() -> impl Iterator<Item = (&'static str, &'static str)> {
    layout::block_linears(Arch::Llama).map(|t| (t.module.unwrap_or(t.hf), t.hf))
}

/// Inverse of llama.cpp's `permute(w, n_head)` (also applied to q/k biases): rows grouped as
/// (head, 2, half) -> (head, half, 2).
fn unpermute(w: &Tensor, n_head: i64) -> Tensor {
    let size = w.size();
    let rows = size[0];
    let rest: Vec<i64> = size[1..].to_vec();
    let mut grouped = vec![n_head, rows / n_head / 2, 2];
    grouped.extend(&rest);
    w.reshape(grouped.as_slice()).transpose(1, 2).reshape(size.as_slice())
}

#[cfg(test)]
mod tests {
    use super::{CausalLm, KvCache, LlmConfig, Outputs};
    use crate::llm::PrefixMemo;
    use crate::{TargetSpec, WeightSource};
    use tch::{Device, Kind, Tensor};

    /// The tiny LLaMA fixture (2 blocks) with atoms of random keys and values on every linear of
    /// `layers`, in eval mode unless `training`.
    fn tiny(layers: &[usize], training: bool) -> CausalLm {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/tiny_llama");
        let config = LlmConfig::from_hf_json(dir.join("config.json")).expect("tiny_llama config");
        let source = WeightSource::open(&dir).expect("tiny_llama weights");
        let mut model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu).expect("tiny_llama");
        let spec = TargetSpec { layers: Some(layers.to_vec()), ..TargetSpec::all_encoders(&["all"]) };
        let moram = moram_core::MoramConfig { r: 4, top_k: 4, dropout: 0.0, ..Default::default() };
        // Seeded under a lock: tests run on parallel threads and would interleave their draws
        // from libtorch's global generator.
        static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _lock = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tch::manual_seed(11);
        model.inject(&spec, &moram).expect("inject");
        model.begin_task(0).expect("task 0");
        let _guard = tch::no_grad_guard();
        for (i, t) in model.trainable_tensors().iter().enumerate() {
            let g = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.3;
            t.shallow_clone().copy_(&(g + i as f64 * 1e-3));
        }
        model.set_training(training);
        model
    }

    /// A left-padded batch of 3 rows `(ids, positions, keys_valid)`, lengths 9, 5 and 7.
    fn padded(lengths: &[i64]) -> (Vec<Vec<i64>>, Tensor, Tensor, Tensor) {
        let width = *lengths.iter().max().unwrap_or(&1);
        let prompts: Vec<Vec<i64>> = lengths
            .iter()
            .enumerate()
            .map(|(r, &n)| (0..n).map(|i| 3 + (r as i64 * 17 + i * 5) % 90).collect())
            .collect();
        let (mut ids, mut pos, mut valid) = (Vec::new(), Vec::new(), Vec::new());
        for p in &prompts {
            let pad = (width - p.len() as i64) as usize;
            ids.extend(std::iter::repeat_n(0, pad).chain(p.iter().copied()));
            pos.extend(std::iter::repeat_n(1, pad).chain(0..p.len() as i64));
            valid.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1, p.len())));
        }
        let b = lengths.len() as i64;
        let t = |v: &[i64]| Tensor::from_slice(v).view([b, width]);
        (prompts, t(&ids), t(&pos), Tensor::from_slice(&valid).view([b, width]))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// The largest difference relative to `b`'s largest magnitude (at least 1): float-rounding
    /// differences scale with the values, and the routing's 1 / tau amplifies them.
    fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
        max_diff(a, b) / b.abs().max().double_value(&[]).max(1.0)
    }

    #[test]
    fn the_last_block_computes_only_the_rows_read_unless_a_layer_records() -> crate::Result<()> {
        let model = tiny(&[0, 1], false);
        let _guard = tch::no_grad_guard();
        let (_, ids, pos, valid) = padded(&[9, 5, 7]);
        let run = |outputs| {
            let h = model.embed_tokens(&ids)?;
            model.run_blocks(h, 0..2, &pos, Some(&valid), None, &mut KvCache::default(), outputs)
        };
        let every = run(Outputs::Every)?;
        let tail = run(Outputs::Last(3))?;
        assert_eq!(tail.size(), [3, 3, 64]);
        let d = rel_diff(&tail, &every.narrow(1, 6, 3));
        assert!(d < 5e-5, "tail differs by {d} (relative)");
        // A recording layer in the last block sees every token.
        let (_, layer) =
            model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.mlp.down")).expect("down_proj");
        layer.start_stats(moram_core::StatsMode::AsUsed);
        assert_eq!(run(Outputs::Last(3))?.size(), [3, 9, 64]);
        let stats = layer.take_stats().expect("recorded");
        assert_eq!(stats.tokens, 27, "3 rows x 9 positions");
        Ok(())
    }

    /// The loss and the gradients of the trainable tensors of `loss`, zeroing them after.
    fn loss_and_grads(model: &CausalLm, loss: impl Fn() -> crate::Result<Tensor>) -> crate::Result<(f64, Vec<Tensor>)> {
        let params = model.trainable_tensors();
        let loss = loss()?;
        loss.backward();
        let grads = params.iter().map(|p| p.grad().copy()).collect();
        params.iter().for_each(|p| {
            let _ = p.grad().zero_();
        });
        Ok((loss.double_value(&[]), grads))
    }

    /// A batch of rows of 9, 5 and 7 tokens with labels on the last 3 tokens of rows 0 and 2
    /// and the last 2 of row 1: `(ids, labels, keys_valid)`.
    fn labelled() -> (Tensor, Tensor, Tensor) {
        let (_, ids, _, valid) = padded(&[9, 5, 7]);
        let labels = ids.copy();
        let _ = labels.narrow(1, 0, 6).fill_(-100);
        let _ = labels.get(1).narrow(0, 6, 1).fill_(-100);
        (ids, labels, valid)
    }

    /// Gradients agree relative to each tensor's largest magnitude.
    fn assert_close(got: &[Tensor], want: &[Tensor], bound: f64) {
        for (a, b) in got.iter().zip(want) {
            let scale = b.abs().max().double_value(&[]).max(1e-6);
            assert!(max_diff(a, b) / scale < bound, "gradient differs by {} of {scale}", max_diff(a, b));
        }
        assert!(want.iter().any(|g| g.abs().max().double_value(&[]) > 0.0));
    }

    #[test]
    fn a_trimmed_loss_has_the_full_loss_and_gradients() -> crate::Result<()> {
        let model = tiny(&[0, 1], true);
        let (ids, labels, valid) = labelled();
        let (trimmed, trimmed_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
        let (_, layer) = model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.self_attn.q")).expect("q");
        layer.start_input_moments();
        let (full, full_grads) = loss_and_grads(&model, || model.causal_lm_loss(&ids, &labels, Some(&valid)))?;
        assert_eq!(layer.take_input_moments().map(|(_, n)| n), Some(27), "the full padded pass ran");
        assert!((trimmed - full).abs() < 1e-6, "loss {trimmed} vs {full}");
        assert_close(&trimmed_grads, &full_grads, 1e-5);
        Ok(())
    }

    #[test]
    fn a_packed_batch_has_the_padded_loss_and_gradients() -> crate::Result<()> {
        let model = tiny(&[0, 1], true);
        let (ids, labels, valid) = labelled();
        let packed = model.packing(&labels, Some(&valid))?.expect("a left-padded batch packs");
        assert_eq!((packed.lengths.as_slice(), packed.tails.as_slice()), ([9, 5, 7].as_slice(), [4, 3, 4].as_slice()));
        let (want, want_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
        let (got, got_grads) = loss_and_grads(&model, || model.causal_lm_loss(&ids, &labels, Some(&valid)))?;
        assert!((got - want).abs() < 1e-6, "loss {got} vs {want}");
        // RoPE angles at other absolute positions round differently (measured: at most 5e-5).
        assert_close(&got_grads, &want_grads, 2e-4);
        // From the hidden states entering block 1 (the frozen prefix of a model with atoms in
        // block 1 only), left-padded with anything.
        let model = tiny(&[1], true);
        let (want, want_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
        let hidden = {
            let _guard = tch::no_grad_guard();
            let h = model.embed_tokens(&ids)?;
            let pos = Tensor::arange(9, (Kind::Int64, Device::Cpu)).unsqueeze(0);
            model.run_blocks(h, 0..1, &pos, Some(&valid), None, &mut KvCache::default(), Outputs::Every)?
        };
        let pads = valid.eq(0).unsqueeze(-1);
        let hidden = hidden.masked_fill(&pads, 7.0);
        let from = |first| model.causal_lm_loss_from(&hidden, first, &labels, Some(&valid));
        let (got, got_grads) = loss_and_grads(&model, || from(1))?;
        assert!((got - want).abs() < 1e-6, "loss from block 1: {got} vs {want}");
        assert_close(&got_grads, &want_grads, 2e-4);
        // A recording layer sees every position: the batch runs padded.
        let (_, layer) = model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.mlp.up")).expect("up");
        layer.start_input_moments();
        assert!(model.packing(&labels, Some(&valid))?.is_none());
        let _ = layer.take_input_moments();
        Ok(())
    }

    #[test]
    fn a_bf16_model_on_the_cpu_attends_in_f32_over_its_bf16_values() -> crate::Result<()> {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/tiny_llama");
        let config = LlmConfig::from_hf_json(dir.join("config.json"))?;
        let model = CausalLm::from_hf(&WeightSource::open(&dir)?, &config, Kind::BFloat16, Device::Cpu)?;
        let _guard = tch::no_grad_guard();
        let ids = Tensor::from_slice(&[3i64, 17, 5, 42, 9, 11]).view([1, 6]);
        let mut cache = KvCache::default();
        let full = model.forward(&ids, &mut cache)?;
        // What the cache holds per position is what the model reports (keys and values, f32).
        let per_position: usize = cache
            .layers
            .iter()
            .flatten()
            .map(|s| {
                let (k, v) = s.kv();
                (k.numel() + v.numel()) * 4 / 6
            })
            .sum();
        assert_eq!(model.kv_bytes_per_position(), per_position);
        for slot in cache.layers.iter().flatten() {
            let (k, v) = slot.kv();
            for t in [k, v] {
                assert_eq!(t.kind(), Kind::Float);
                assert!(t.to_kind(Kind::BFloat16).to_kind(Kind::Float).equal(&t), "cached values are bf16 values");
            }
        }
        // Decoding the last token on the cache of the first five: the full pass's last logits.
        let mut cache = KvCache::default();
        let _ = model.forward(&ids.narrow(1, 0, 5), &mut cache)?;
        let step = model.forward(&ids.narrow(1, 5, 1), &mut cache)?;
        let d = rel_diff(&step.select(1, 0), &full.select(1, 5));
        assert!(d < 1e-2, "decoded logits differ by {d} (relative)");
        Ok(())
    }

    #[test]
    fn packed_prefill_equals_the_padded_batch_with_and_without_a_prefix_memo() -> crate::Result<()> {
        let model = tiny(&[1], false);
        let _guard = tch::no_grad_guard();
        let (prompts, ids, pos, valid) = padded(&[9, 5, 7]);
        let mut want_cache = KvCache::default();
        let want = model.forward_padded_last(&ids, &pos, Some(&valid), &mut want_cache)?;
        let mut memo = PrefixMemo::default();
        for memo in [None, Some(&mut memo)] {
            let (logits, cache) = model.prefill(&prompts, 0, memo)?;
            assert!(rel_diff(&logits, &want) < 5e-5, "logits differ by {} (relative)", rel_diff(&logits, &want));
            assert_eq!(cache.len(), 9);
            for (got, want) in cache.layers.iter().zip(&want_cache.layers) {
                let ((gk, gv), (wk, wv)) = (got.as_ref().expect("slot").kv(), want.as_ref().expect("slot").kv());
                assert_eq!(gk.size(), wk.size());
                // Real positions agree; pad slots hold zeros (never attended to).
                let real = valid.to_kind(Kind::Bool).view([3, 1, 9, 1]);
                assert!(
                    rel_diff(&gk.masked_fill(&real.logical_not(), 0.0), &wk.masked_fill(&real.logical_not(), 0.0))
                        < 5e-5
                );
                assert!(
                    rel_diff(&gv.masked_fill(&real.logical_not(), 0.0), &wv.masked_fill(&real.logical_not(), 0.0))
                        < 5e-5
                );
                assert_eq!(gk.masked_select(&real.logical_not()).abs().sum(Kind::Float).double_value(&[]), 0.0);
            }
        }
        assert_eq!(memo.len(), 1, "the frozen block's pass was kept");
        let (again, _) = model.prefill(&prompts, 0, Some(&mut memo))?;
        assert!(rel_diff(&again, &want) < 5e-5);
        Ok(())
    }
}
