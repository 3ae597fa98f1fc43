//! Text generation with a KV cache: greedy or sampling (temperature, top-p), repetition penalty
//! and no-repeat-n-gram (the TRACE inference settings), stop ids, and batches of prompts of
//! different lengths with left padding.
//!
//! The logit processors follow `transformers` (`RepetitionPenaltyLogitsProcessor`,
//! `NoRepeatNGramLogitsProcessor`, `TemperatureLogitsWarper`, `TopPLogitsWarper`, in that order),
//! including their treatment of padding tokens as part of each row's history. Sampling draws from
//! a ChaCha8 generator seeded per call, so it is reproducible on any device.

use super::model::{CausalLm, FrozenPrefix, KvCache, Outputs};
use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tch::Tensor;

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// At most this many new tokens per prompt.
    pub max_new_tokens: usize,
    /// Sample (`true`) or take the arg-max (`false`).
    pub do_sample: bool,
    /// Softmax temperature when sampling (> 0).
    pub temperature: f64,
    /// Nucleus sampling: keep the smallest set of tokens with at least this probability mass.
    pub top_p: f64,
    /// > 1 discourages tokens already present (positive logits divided, negative multiplied).
    pub repetition_penalty: f64,
    /// Forbid repeating any n-gram of this size (0: off).
    pub no_repeat_ngram_size: usize,
    /// Generation stops for a row after any of these ids.
    pub stop_ids: Vec<i64>,
    /// Id used to pad prompts on the left and finished rows.
    pub pad_id: i64,
    /// Seed of the sampling generator.
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 64,
            do_sample: false,
            temperature: 1.0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            stop_ids: Vec::new(),
            pad_id: 0,
            seed: 0,
        }
    }
}

impl GenerationConfig {
    fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Input(format!("generation config: {what}")));
        if self.do_sample && !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("temperature must be > 0 when sampling, found {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must lie in (0, 1], found {}", self.top_p));
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(format!("repetition_penalty must be > 0, found {}", self.repetition_penalty));
        }
        Ok(())
    }
}

/// `transformers` RepetitionPenaltyLogitsProcessor on one row of logits.
fn repetition_penalty(logits: &mut [f32], history: &[i64], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let mut seen: Vec<i64> = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for &t in &seen {
        if let Some(v) = logits.get_mut(t as usize) {
            *v = if *v < 0.0 { (*v as f64 * penalty) as f32 } else { (*v as f64 / penalty) as f32 };
        }
    }
}

/// `transformers` NoRepeatNGramLogitsProcessor on one row.
fn ban_repeated_ngrams(logits: &mut [f32], history: &[i64], n: usize) {
    if n == 0 || history.len() + 1 < n {
        return;
    }
    let prefix = &history[history.len() + 1 - n..];
    for window in history.windows(n) {
        if &window[..n - 1] == prefix {
            if let Some(v) = logits.get_mut(window[n - 1] as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}

/// Temperature and top-p (`transformers` TopPLogitsWarper: drop the low tail whose cumulative
/// probability is at most `1 - top_p`, keeping at least one token), then one draw.
fn sample(logits: &[f32], temperature: f64, top_p: f64, rng: &mut impl Rng) -> i64 {
    let scaled: Vec<f64> = logits.iter().map(|&v| v as f64 / temperature).collect();
    let max = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let mut probs: Vec<(usize, f64)> = scaled.iter().map(|&v| (v - max).exp()).enumerate().collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut cum = 0.0;
    let mut first_kept = 0;
    for (i, p) in probs.iter().enumerate() {
        cum += p.1;
        if cum <= 1.0 - top_p && i + 1 < probs.len() {
            first_kept = i + 1;
        }
    }
    let kept = &probs[first_kept..];
    let mass: f64 = kept.iter().map(|p| p.1).sum();
    let mut u = rng.random::<f64>() * mass;
    for p in kept.iter().rev() {
        u -= p.1;
        if u <= 0.0 {
            return p.0 as i64;
        }
    }
    kept.last().map_or(0, |p| p.0 as i64)
}

/// The frozen prefixes ([`FrozenPrefix`]) of prompt batches, kept across calls: continual-learning
/// evaluation generates from the same prompt batches after every task, and the blocks before the
/// first adapted one give the same keys, values and hidden states each time. Keyed by the prompts'
/// token ids; an entry computed before atoms were added to its blocks is recomputed.
#[derive(Debug)]
pub struct PrefixMemo {
    map: HashMap<Vec<Vec<i64>>, FrozenPrefix>,
    bytes: usize,
    budget: usize,
}

impl Default for PrefixMemo {
    fn default() -> Self {
        PrefixMemo::with_budget(usize::MAX)
    }
}

impl PrefixMemo {
    /// A memo that keeps at most `budget` bytes of tensors; batches beyond it are computed each
    /// time instead of kept (long prompts on many blocks would not fit in memory).
    pub fn with_budget(budget: usize) -> Self {
        PrefixMemo { map: HashMap::new(), bytes: 0, budget }
    }

    /// Bytes of tensors kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Prompt batches remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Forgets every prefix.
    pub fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }
}

impl CausalLm {
    /// The prompts' pass (prefill): f32 logits `(B, vocab)` of each prompt's last token and the
    /// KV cache of the batch left-padded to the longest prompt (pad slots masked by the caller).
    /// Prompts of different lengths are packed end to end into one row, so no work is spent on
    /// padding (`docs/performance.md`, "Prefill without padding"); the frozen leading blocks'
    /// part comes from `memo` when given (stored there the first time).
    pub(super) fn prefill(
        &self,
        prompts: &[Vec<i64>],
        pad_id: i64,
        memo: Option<&mut PrefixMemo>,
    ) -> Result<(Tensor, KvCache)> {
        let device = self.device();
        let lengths: Vec<i64> = prompts.iter().map(|p| p.len() as i64).collect();
        let (b, width) = (prompts.len() as i64, lengths.iter().copied().max().unwrap_or(0));
        let packed = lengths.iter().any(|&n| n != width) && self.config().sliding_window.is_none_or(|w| width <= w);
        let (ids, positions, keys_valid) = if packed {
            let ids = Tensor::from_slice(&prompts.concat()).view([1, -1]).to_device(device);
            let pos: Vec<i64> = lengths.iter().flat_map(|&n| 0..n).collect();
            (ids, Tensor::from_slice(&pos).view([1, -1]).to_device(device), None)
        } else {
            // Prompts of one length, or longer than the attention window: a left-padded batch as
            // transformers builds it (positions 1 on pads, 0.. on the real tokens).
            let mut ids = Vec::with_capacity((b * width) as usize);
            let (mut pos, mut keys) = (Vec::with_capacity(ids.capacity()), Vec::with_capacity(ids.capacity()));
            for (p, &n) in prompts.iter().zip(&lengths) {
                let pad = (width - n) as usize;
                ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
                pos.extend(std::iter::repeat_n(1, pad).chain(0..n));
                keys.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1, n as usize)));
            }
            let t = |v: &[i64]| Tensor::from_slice(v).view([b, width]).to_device(device);
            (t(&ids), t(&pos), Some(Tensor::from_slice(&keys).view([b, width]).to_device(device)))
        };
        let segments = packed.then_some(lengths.as_slice());
        let ends = vec![1; lengths.len()];
        let outputs = if packed { Outputs::SequenceTails(&ends) } else { Outputs::Last(1) };
        let keys_valid = keys_valid.as_ref();
        let mut cache = KvCache::default();
        // Task-gated atoms: every row's task is recognised from the frozen blocks' part of the pass,
        // so that part is computed on its own first.
        let gating = self.gating();
        let recognised = |p: &FrozenPrefix| -> Result<Tensor> {
            let tokens = match (packed, keys_valid) {
                (true, _) => super::gating::packed_prompt_tokens(&lengths, device),
                (false, Some(valid)) => super::gating::padded_prompt_tokens(valid),
                (false, None) => super::gating::padded_prompt_tokens(&ids.ones_like()),
            };
            self.recognise(&p.hidden, &tokens)
        };
        // The limit during the prompts' own pass: per packed token, or per row.
        let limit = |rows: &Tensor| -> Tensor {
            if packed {
                let lens = Tensor::from_slice(&lengths).to_device(device);
                rows.repeat_interleave_self_tensor(&lens, 0, None).unsqueeze(0)
            } else {
                rows.unsqueeze(1)
            }
        };
        let mut rows = None;
        let h = match memo {
            Some(memo) => {
                let fresh = self.frozen_prefix_blocks();
                if let Some(p) = memo.map.get(prompts).filter(|p| p.blocks == fresh) {
                    let r = if gating { Some(recognised(p)?) } else { None };
                    let _open = r.as_ref().map(|r| self.limit_atoms(&limit(r)));
                    rows = r;
                    self.hidden_states_from(p, &positions, keys_valid, &mut cache, outputs)?
                } else {
                    let p = self.frozen_prefix_of(&ids, &positions, keys_valid, segments, true)?;
                    let r = if gating { Some(recognised(&p)?) } else { None };
                    let h = {
                        let _open = r.as_ref().map(|r| self.limit_atoms(&limit(r)));
                        self.hidden_states_from(&p, &positions, keys_valid, &mut cache, outputs)?
                    };
                    rows = r;
                    let size = p.bytes();
                    if let Some(old) = memo.map.remove(prompts) {
                        memo.bytes -= old.bytes();
                    }
                    if memo.bytes.saturating_add(size) <= memo.budget {
                        memo.bytes += size;
                        memo.map.insert(prompts.to_vec(), p);
                    }
                    h
                }
            }
            None if gating => {
                let p = self.frozen_prefix_of(&ids, &positions, keys_valid, segments, true)?;
                let r = recognised(&p)?;
                let _open = self.limit_atoms(&limit(&r));
                rows = Some(r);
                self.hidden_states_from(&p, &positions, keys_valid, &mut cache, outputs)?
            }
            None => {
                let h = self.embed_tokens(&ids)?;
                self.run_blocks(h, 0..self.block_count(), &positions, keys_valid, segments, &mut cache, outputs)?
            }
        };
        *self.recognised.borrow_mut() = rows.as_ref().map(Tensor::shallow_clone);
        cache.open_tasks = rows.map(|r| r.unsqueeze(1));
        // (1, B, d) packed, (B, 1, d) otherwise. When a layer is observed (statistics, captures,
        // task-gated atoms) the last block computed every token: keep each prompt's last one.
        let h = if packed && h.size()[1] != b {
            let rows = Tensor::from_slice(&super::packing::tail_rows(&lengths, &ends)).to_device(device);
            h.index_select(1, &rows)
        } else {
            h
        };
        let last = if packed { h.squeeze_dim(0) } else { h.select(1, -1) };
        if packed {
            cache.unpack(&lengths, width);
        }
        Ok((self.logits(&last), cache))
    }

    /// Greedy decoding of one prompt: at most `max_new_tokens` ids, stopping after any of `stop`.
    pub fn generate_greedy(&self, prompt: &[i64], max_new_tokens: usize, stop: &[i64]) -> Result<Vec<i64>> {
        if prompt.is_empty() {
            return Err(Error::Input("the prompt is empty".into()));
        }
        let _guard = tch::no_grad_guard();
        let mut cache = KvCache::default();
        let mut input = Tensor::from_slice(prompt).view([1, -1]).to_device(self.device());
        let mut out = Vec::new();
        for _ in 0..max_new_tokens {
            let logits = self.forward_last(&input, &mut cache)?;
            let next = logits.argmax(-1, false).int64_value(&[0]);
            out.push(next);
            if stop.contains(&next) {
                break;
            }
            input = Tensor::from_slice(&[next]).view([1, 1]).to_device(self.device());
        }
        Ok(out)
    }

    /// Generates a continuation for each prompt (batched, prompts left-padded to a common
    /// length). Returns the new ids per prompt, ending with the stop id when one was produced.
    pub fn generate(&self, prompts: &[Vec<i64>], config: &GenerationConfig) -> Result<Vec<Vec<i64>>> {
        self.generate_with_prefixes(prompts, config, None)
    }

    /// [`CausalLm::generate`], taking the prompts' pass through the frozen leading blocks from
    /// `memo` (and storing it there the first time). The result is identical to `generate`: the
    /// same computation, done once.
    pub fn generate_with_prefixes(
        &self,
        prompts: &[Vec<i64>],
        config: &GenerationConfig,
        memo: Option<&mut PrefixMemo>,
    ) -> Result<Vec<Vec<i64>>> {
        self.generate_streaming(prompts, config, memo, &mut |_, _| true)
    }

    /// [`CausalLm::generate_with_prefixes`], calling `on_token(row, id)` for every id as it is
    /// chosen (what a streaming server sends on); a row whose callback returns `false` (its client
    /// went away) stops there, the others go on. The ids returned are the same.
    pub fn generate_streaming(
        &self,
        prompts: &[Vec<i64>],
        config: &GenerationConfig,
        memo: Option<&mut PrefixMemo>,
        on_token: &mut dyn FnMut(usize, i64) -> bool,
    ) -> Result<Vec<Vec<i64>>> {
        config.validate()?;
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Input("every prompt needs at least one token".into()));
        }
        let _guard = tch::no_grad_guard();
        let device = self.device();
        let b = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        // Rows as transformers sees them: left padding, then prompt, then generated ids.
        let mut rows: Vec<Vec<i64>> = prompts
            .iter()
            .map(|p| std::iter::repeat_n(config.pad_id, width - p.len()).chain(p.iter().copied()).collect())
            .collect();
        // Left padding: row r's real keys start at slot width - len(r); every generated key is real.
        let first_real = Tensor::from_slice(&prompts.iter().map(|p| (width - p.len()) as i64).collect::<Vec<_>>())
            .to_device(device)
            .unsqueeze(1);
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
        let (mut logits, mut cache) = self.prefill(prompts, config.pad_id, memo)?;
        let mut next_input: Vec<Vec<i64>> = Vec::new();
        for step in 0..config.max_new_tokens {
            if step > 0 {
                let ids = Tensor::from_slice(&next_input.concat()).view([b as i64, 1]).to_device(device);
                // Position of each token = number of real tokens before it (transformers:
                // cumsum(attention_mask) - 1): the prompt's and the step - 1 generated ones.
                let pos: Vec<i64> = prompts.iter().map(|p| (p.len() + step - 1) as i64).collect();
                let positions = Tensor::from_slice(&pos).view([b as i64, 1]).to_device(device);
                let slots = Tensor::arange(cache.len() + 1, (tch::Kind::Int64, device)).unsqueeze(0);
                let keys_valid = slots.ge_tensor(&first_real);
                logits = self.forward_padded_last(&ids, &positions, Some(&keys_valid), &mut cache)?;
            }
            let last = Vec::<f32>::try_from(logits.to_device(tch::Device::Cpu).reshape([-1]))?;
            let vocab = last.len() / b;
            let mut chosen = Vec::with_capacity(b);
            for r in 0..b {
                if done[r] {
                    chosen.push(config.pad_id);
                    continue;
                }
                let mut row = last[r * vocab..(r + 1) * vocab].to_vec();
                repetition_penalty(&mut row, &rows[r], config.repetition_penalty);
                ban_repeated_ngrams(&mut row, &rows[r], config.no_repeat_ngram_size);
                let next = if config.do_sample {
                    sample(&row, config.temperature, config.top_p, &mut rng)
                } else {
                    row.iter()
                        .enumerate()
                        .fold((0usize, f32::NEG_INFINITY), |best, (i, &v)| if v > best.1 { (i, v) } else { best })
                        .0 as i64
                };
                out[r].push(next);
                if config.stop_ids.contains(&next) || !on_token(r, next) {
                    done[r] = true;
                }
                chosen.push(next);
            }
            for (row, &t) in rows.iter_mut().zip(&chosen) {
                row.push(t);
            }
            if done.iter().all(|&d| d) {
                break;
            }
            next_input = chosen.into_iter().map(|t| vec![t]).collect();
        }
        Ok(out)
    }
}
