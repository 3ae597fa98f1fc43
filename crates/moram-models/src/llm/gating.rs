//! Task-gated atoms on a causal LM (`docs/method.md`, "Task-gated atoms"): the model keeps a
//! [`TaskGate`] and, in eval mode, recognises the task of every sequence from its prompt's pass
//! through the frozen leading blocks; its tokens then use only the atoms of tasks up to that one.
//!
//! The feature is the RMS-normalised mean of the hidden states entering the first adapted block
//! over the prompt's tokens but the first (a BOS token, or a first word, is the same in every
//! prompt). Those blocks hold no atoms, so a prompt's feature never changes while tasks train.
//! In training every atom is open, as in the paper's layer: the current task is the newest.

use super::model::CausalLm;
use crate::error::{Error, Result};
use moram_core::variants::task_gate::pooled_features;
use moram_core::TaskGate;
use tch::{Kind, Tensor};

/// Clears every layer's per-token task limit when dropped (set by [`CausalLm::limit_atoms`]).
pub(super) struct OpenTasks<'a> {
    model: &'a CausalLm,
}

impl Drop for OpenTasks<'_> {
    fn drop(&mut self) {
        self.model.set_open_tasks(None);
    }
}

impl CausalLm {
    /// The task gate, when the adapter is task-gated.
    pub fn task_gate(&self) -> Option<&TaskGate> {
        self.task_gate.as_ref()
    }

    /// The task gate, mutably (a runner adds each task to it).
    pub fn task_gate_mut(&mut self) -> Option<&mut TaskGate> {
        self.task_gate.as_mut()
    }

    /// Replaces the task gate (e.g. with one read from an adapter file); its feature width must be
    /// the model's hidden size.
    pub fn set_task_gate(&mut self, gate: Option<TaskGate>) -> Result<()> {
        if let Some(g) = &gate {
            if g.dim() as i64 != self.config().hidden_size {
                return Err(Error::Input(format!(
                    "a task gate over {}-wide features cannot route a model of hidden size {}",
                    g.dim(),
                    self.config().hidden_size
                )));
            }
        }
        self.task_gate = gate;
        Ok(())
    }

    /// The task the last generation recognised for each of its prompts, in prompt order (`None`
    /// when it recognised nothing: no gate, or training mode); taken, so each call reports once.
    pub fn take_recognised(&self) -> Option<Vec<i64>> {
        let rows = self.recognised.borrow_mut().take()?;
        Vec::<i64>::try_from(rows.to_device(tch::Device::Cpu)).ok()
    }

    /// Whether passes now recognise each sequence's task: a gate that knows a task, and eval mode.
    pub(super) fn gating(&self) -> bool {
        let trained = self.task_gate.as_ref().is_some_and(|g| !g.tasks().is_empty());
        trained && self.moram_layers().first().is_some_and(|(_, m)| !m.is_training())
    }

    /// Sets (or with `None` clears) every MoRAM layer's per-token task limit.
    fn set_open_tasks(&self, open: Option<&Tensor>) {
        for (_, m) in self.moram_layers() {
            m.set_open_tasks(open.map(Tensor::shallow_clone));
        }
    }

    /// Limits every token to the atoms of tasks `<= open` (i64, broadcastable to the next passes'
    /// leading dimensions) until the guard is dropped.
    pub(super) fn limit_atoms(&self, open: &Tensor) -> OpenTasks<'_> {
        self.set_open_tasks(Some(open));
        OpenTasks { model: self }
    }

    /// The task `(B,)` i64 the gate recognises for each sequence, from the hidden states entering
    /// the first adapted block (`(B, L, d)`, or one packed row `(1, L, d)`) and the prompt tokens
    /// `select` `(B, L)` marks for each sequence.
    pub(super) fn recognise(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        let gate = self.task_gate.as_ref().ok_or_else(|| Error::Input("the model has no task gate".into()))?;
        Ok(gate.recognise(&pooled_features(hidden, select))?)
    }

    /// The gate's feature `(B, d)` f32 of each prompt: its tokens (after a BOS the caller adds, if
    /// any) through the frozen leading blocks, then the RMS-normalised mean over all of them but
    /// the first. What the runner fits the gate on, and what evaluation recognises prompts by.
    pub fn prompt_features(&self, prompts: &[Vec<i64>]) -> Result<Tensor> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Input("every prompt needs at least one token".into()));
        }
        let device = self.device();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let b = prompts.len() as i64;
        let (mut ids, mut pos, mut valid, mut select) = (vec![], vec![], vec![], vec![]);
        for p in prompts {
            let pad = width - p.len();
            ids.extend(std::iter::repeat_n(p[0], pad).chain(p.iter().copied()));
            pos.extend(std::iter::repeat_n(1, pad).chain(0..p.len() as i64));
            valid.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1, p.len())));
            // A one-token prompt keeps its token.
            let skip = usize::from(p.len() > 1);
            select.extend(std::iter::repeat_n(0f32, pad + skip).chain(std::iter::repeat_n(1.0, p.len() - skip)));
        }
        let w = width as i64;
        let t = |v: &[i64]| Tensor::from_slice(v).view([b, w]).to_device(device);
        let valid = Tensor::from_slice(&valid).view([b, w]).to_device(device).to_kind(Kind::Bool);
        let prefix = self.frozen_prefix(&t(&ids), &t(&pos), Some(&valid), false)?;
        let select = Tensor::from_slice(&select).view([b, w]).to_device(device);
        Ok(pooled_features(&prefix.hidden, &select))
    }
}

/// The prompt tokens each sequence is recognised by, `(B, L)` f32: the real positions but the first
/// of each row, from `keys_valid` `(B, L)` (1 on real tokens of a left-padded batch).
pub(super) fn padded_prompt_tokens(keys_valid: &Tensor) -> Tensor {
    let real = keys_valid.to_kind(Kind::Int64);
    // The first real token of each row has a running count of 1.
    real.cumsum(1, Kind::Int64).gt(1).logical_and(&real.gt(0)).to_kind(Kind::Float)
}

/// The same for `lengths.len()` sequences packed end to end in one row of `sum(lengths)` tokens:
/// `(B, sum)` f32, row `i` marking sequence `i`'s tokens but its first.
pub(super) fn packed_prompt_tokens(lengths: &[i64], device: tch::Device) -> Tensor {
    let total: i64 = lengths.iter().sum();
    let mut m = vec![0f32; lengths.len() * total as usize];
    let mut start = 0i64;
    for (i, &n) in lengths.iter().enumerate() {
        let skip = i64::from(n > 1);
        for j in start + skip..start + n {
            m[i * total as usize + j as usize] = 1.0;
        }
        start += n;
    }
    Tensor::from_slice(&m).view([lengths.len() as i64, total]).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_token_masks_skip_each_sequences_first_token() {
        let valid = Tensor::from_slice(&[0i64, 1, 1, 1, 1, 1]).view([2, 3]);
        let got = Vec::<f32>::try_from(padded_prompt_tokens(&valid).flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
        let got = Vec::<f32>::try_from(packed_prompt_tokens(&[2, 1, 3], tch::Device::Cpu).flatten(0, -1)).unwrap();
        let want = [[0., 1., 0., 0., 0., 0.], [0., 0., 1., 0., 0., 0.], [0., 0., 0., 0., 1., 1.]];
        assert_eq!(got, want.concat());
    }
}
