//! O-LoRA's regularisers of the current task's atoms (`crate::config::Penalty`): the L1 norm of
//! the products of new and frozen keys, and the squared L2 norm of the new atoms.

use crate::bank::AtomBank;
use tch::{Kind, Tensor};

impl AtomBank {
    /// The current task's regularisers ([`crate::config::Penalty`]) as a scalar with graph, or
    /// `None` when they are off or there is nothing to regularise.
    pub fn penalty(&self) -> Option<Tensor> {
        let p = self.config.penalty;
        if !p.is_active() || self.keys.numel() == 0 {
            return None;
        }
        let mut terms = Vec::new();
        if p.orthogonality != 0.0 && self.frozen_keys.numel() > 0 {
            terms.push(self.keys.mm(&self.frozen_keys.tr()).abs().sum(Kind::Float) * p.orthogonality);
        }
        if p.l2 != 0.0 {
            terms.push((self.keys.square().sum(Kind::Float) + self.values.square().sum(Kind::Float)) * p.l2);
        }
        // The first task has no frozen keys to be orthogonal to: no term, no graph.
        terms.into_iter().reduce(|a, b| a + b)
    }
}
