//! The causal-LM training loss (protocol 4.4): mean cross-entropy over the answer tokens, run
//! padded or packed without padding (`packing.rs`), from token ids or from a frozen prefix.

use super::super::packing::{self, PackedBatch};
use super::{CausalLm, KvCache, Outputs};
use crate::error::{Error, Result};
use crate::llm::llama::Block;
use tch::{Kind, Tensor};

impl CausalLm {
    /// Causal-LM training loss: mean cross-entropy of next-token predictions over the positions
    /// whose label is not -100 (`labels` `(B, L)`, aligned with `ids`; prompt tokens and padding
    /// are masked with -100 by the caller, protocol 4.4). `attention_mask` `(B, L)` marks real
    /// tokens (left padding); positions run 0..L-1 including pads, as `transformers` does in
    /// training when no position ids are given (protocol 4.4, point 7). The LM head runs only on
    /// the positions that predict a label (the loss is the same; the `B x L x vocab` logits of
    /// every prompt position are never formed). A left-padded batch runs without its pad
    /// positions, rows packed end to end (`packing.rs`; the same loss up to float rounding).
    pub fn causal_lm_loss(&self, ids: &Tensor, labels: &Tensor, attention_mask: Option<&Tensor>) -> Result<Tensor> {
        Ok(self.causal_lm_answer_logits(ids, labels, attention_mask)?.loss())
    }

    /// The logits [`CausalLm::causal_lm_loss`] reads: one row per position whose next label is not
    /// -100, rows in (batch row, position) order, with those labels. What distillation (LwF)
    /// compares between two adapters on the same batch.
    pub fn causal_lm_answer_logits(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<AnswerLogits> {
        let l = self.check_labels(ids, labels)?;
        if self.gating() {
            // Task-gated atoms in eval mode: the prompt's pass through the frozen blocks says which
            // atoms the sequence may use.
            let positions = Tensor::arange(l, (Kind::Int64, self.device())).unsqueeze(0);
            let prefix = self.frozen_prefix(ids, &positions, attention_mask, false)?;
            return self.causal_lm_answer_logits_from(&prefix.hidden, prefix.blocks, labels, attention_mask);
        }
        match self.packing(labels, attention_mask)? {
            Some(packed) => self.packed_logits(self.embed_tokens(&packed.gather(ids))?, 0, &packed),
            None => self.padded_logits(ids, labels, attention_mask, l),
        }
    }

    /// [`CausalLm::causal_lm_loss`] of the batch as given, pad positions included, `L = l`.
    #[cfg(test)]
    pub(crate) fn padded_loss(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
        l: i64,
    ) -> Result<Tensor> {
        Ok(self.padded_logits(ids, labels, attention_mask, l)?.loss())
    }

    fn padded_logits(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
        l: i64,
    ) -> Result<AnswerLogits> {
        let positions = Tensor::arange(l, (Kind::Int64, self.device())).unsqueeze(0);
        let outputs = Outputs::Last(labelled_tail(labels));
        let h = self.hidden_states(ids, &positions, attention_mask, &mut KvCache::default(), outputs)?;
        Ok(self.answer_logits(&h, labels))
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
        Ok(self.causal_lm_answer_logits_from(hidden, prefix_blocks, labels, attention_mask)?.loss())
    }

    /// The logits [`CausalLm::causal_lm_loss_from`] reads ([`CausalLm::causal_lm_answer_logits`]).
    pub fn causal_lm_answer_logits_from(
        &self,
        hidden: &Tensor,
        prefix_blocks: usize,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<AnswerLogits> {
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
                let prompt = crate::llm::gating::padded_prompt_tokens(&real).logical_and(&labels.eq(-100));
                Some(self.limit_atoms(&self.recognise(hidden, &prompt)?.unsqueeze(1)))
            }
            false => None,
        };
        if let Some(packed) = self.packing(labels, attention_mask)? {
            return self.packed_logits(packed.gather(hidden), prefix_blocks, &packed);
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
        Ok(self.answer_logits(&h, labels))
    }

    /// The packed layout of a left-padded training batch ([`PackedBatch::of`]), or `None` to run
    /// it padded: also when a MoRAM layer records what passes through it (it would see no pad
    /// positions) or RoPE is `dynamic` (its frequencies depend on the largest position of a pass).
    pub(in crate::llm) fn packing(
        &self,
        labels: &Tensor,
        attention_mask: Option<&Tensor>,
    ) -> Result<Option<PackedBatch>> {
        let dynamic = self.config.rope_scaling.is_some_and(|r| r.depends_on_pass_length());
        if dynamic || self.blocks.iter().any(Block::is_observed) {
            return Ok(None);
        }
        PackedBatch::of(labels, attention_mask, self.config.sliding_window)
    }

    /// The answer logits of a packed batch from hidden states `h` `(1, N, d)` entering block `first`.
    fn packed_logits(&self, h: Tensor, first: usize, packed: &PackedBatch) -> Result<AnswerLogits> {
        let outputs = Outputs::SequenceTails(&packed.tails);
        let segments = Some(packed.lengths.as_slice());
        let mut cache = KvCache::default();
        let h = self.run_blocks(h, first..self.blocks.len(), &packed.positions, None, segments, &mut cache, outputs)?;
        // Every token's output when no block ran (a prefix over the whole model).
        let h = match h.size()[1] == packed.tails.iter().sum::<i64>() {
            true => h,
            false => {
                let rows =
                    Tensor::from_slice(&packing::tail_rows(&packed.lengths, &packed.tails)).to_device(h.device());
                h.index_select(1, &rows)
            }
        };
        let keep = packed.targets.ne(-100).nonzero().squeeze_dim(-1);
        let pred = h.squeeze_dim(0).index_select(0, &keep);
        let targets = packed.targets.index_select(0, &keep);
        Ok(AnswerLogits { logits: self.logits(&pred), targets })
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

    /// The logits of the final hidden states `(B, t, d)` of the last `t` positions of `labels`
    /// `(B, L)` at the positions whose next label is not -100.
    fn answer_logits(&self, h: &Tensor, labels: &Tensor) -> AnswerLogits {
        let (t, d) = (h.size()[1], self.config.hidden_size);
        let start = labels.size()[1] - t;
        let target = labels.narrow(1, start + 1, t - 1).reshape([-1]);
        let keep = target.ne(-100).nonzero().squeeze_dim(-1);
        let pred = h.narrow(1, 0, t - 1).reshape([-1, d]).index_select(0, &keep);
        AnswerLogits { logits: self.logits(&pred), targets: target.index_select(0, &keep) }
    }
}

/// The next-token logits of a training batch at the positions that predict an answer token.
#[derive(Debug)]
pub struct AnswerLogits {
    /// `(N, vocab)`, one row per labelled position, in (batch row, position) order.
    pub logits: Tensor,
    /// `(N,)` the labels those rows predict.
    pub targets: Tensor,
}

impl AnswerLogits {
    /// The causal-LM loss: mean cross-entropy of the rows against their labels.
    pub fn loss(&self) -> Tensor {
        self.logits.cross_entropy_loss::<Tensor>(&self.targets, None, tch::Reduction::Mean, -100, 0.0)
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
