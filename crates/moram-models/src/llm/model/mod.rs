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

use super::attention::{AttentionInputs, QueryRows};
use super::config::{Arch, LlmConfig};
use super::families;
use super::gguf::GgufFile;
use super::layout::Permute;
use super::llama::{norm_scale, Block};
use super::norm::RmsNorm;
use super::packing;
use super::rope::Rope;
use crate::error::{Error, Result};
use crate::vars::{Provider, Vars};
use tch::{Device, Kind, Tensor};

pub use super::layout::LLAMA_MODULES;
pub use cache::{FrozenPrefix, KvCache};
pub use loss::AnswerLogits;

mod cache;
mod injection;
mod loss;
mod prefix;

/// Which outputs of a pass through the decoder stack the caller reads. The last block computes
/// only those (keys and values of every token are still computed and cached), unless one of its
/// MoRAM layers records statistics over every token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outputs<'a> {
    /// Every new token's hidden state.
    Every,
    /// The last `n` new tokens of each row: training's labelled tail, prefill's last token.
    Last(i64),
    /// The last `tails[i]` tokens of packed sequence `i`, in packed order (packed prefill: 1
    /// each; packed training: each row's labelled tail).
    SequenceTails(&'a [i64]),
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
    /// Task-gated atoms: the task the last generation recognised for each prompt `(B,)`.
    pub(super) recognised: std::cell::RefCell<Option<Tensor>>,
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
        let (dim, max) = (config.head_dim, config.max_position_embeddings);
        let factors = config.rope_freq_factors.as_deref();
        let rope = Rope::new(dim, config.rope_theta, config.rope_scaling, factors, max, device);
        let rope_local = config.rope_local_theta.map(|theta| Rope::new(dim, theta, None, None, max, device));
        Ok(CausalLm {
            embed,
            blocks,
            norm,
            lm_head,
            rope,
            rope_local,
            config: config.clone(),
            task_gate: None,
            recognised: Default::default(),
        })
    }

    /// Loads a Hugging Face checkpoint (file, shard index or folder) for `config`, after one strict
    /// check of every key and shape.
    pub fn from_hf(source: &crate::WeightSource, config: &LlmConfig, kind: Kind, device: Device) -> Result<Self> {
        source.check(&families::hf_tensors(config), |k| k.ends_with("rotary_emb.inv_freq"))?;
        let get = |name: &str, shape: &[i64]| source.get(name, shape, kind, device);
        Self::build(config, &get, device)
    }

    /// Loads a GGUF file (llama.cpp's `llama` or `gemma3` architecture), dequantised to `kind` on
    /// `device`.
    pub fn from_gguf(gguf: &GgufFile, kind: Kind, device: Device) -> Result<Self> {
        let config = LlmConfig::from_gguf(gguf)?;
        let (nh, nkv) = (config.num_attention_heads, config.num_key_value_heads);
        let get = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let (key, permute) = families::gguf_name(config.arch, name);
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
            let t = if families::gguf_norms_include_one(config.arch) && name.ends_with("norm.weight") {
                t - 1.0
            } else {
                t
            };
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

    /// The device of the model.
    pub fn device(&self) -> Device {
        self.embed.device()
    }
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
    families::block_linears(Arch::Llama).map(|t| (t.module.unwrap_or(t.hf), t.hf))
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
mod tests;
