//! O-LoRA's regularisers of the current task's atoms (`crate::config::Penalty`): the L1 norm of
//! the products of new and frozen keys, and the L2 norms of the new keys and values (the official
//! O-LoRA code's `torch.norm(param, p=2)` per new tensor, not squared).

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
            // `norm` (not sqrt of a sum): its gradient at an all-zero tensor (new values start at
            // zero) is 0, as torch.norm's, where sqrt's would be NaN.
            terms.push((self.keys.norm() + self.values.norm()) * p.l2);
        }
        // The first task has no frozen keys to be orthogonal to: no term, no graph.
        terms.into_iter().reduce(|a, b| a + b)
    }
}
