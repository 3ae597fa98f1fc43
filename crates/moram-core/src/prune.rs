//! Post-pruning by cumulative activation mass (paper C.5, Table 21; not in the official code).
//!
//! Definition (ours, written down because the paper leaves it open): among the candidate atoms,
//! sort by activation mass (descending; ties by index), and keep the smallest prefix whose
//! cumulative mass reaches `share` of the candidates' total mass. Everything else among the
//! candidates is removed (its key row and value column are deleted). `share = 1.0` keeps every
//! atom: never-selected atoms still shape the L2 normalisation of Eq. 5, so removing them is not
//! free, and a full share promises no change. Candidates default to the atoms of one task
//! ([`PruneScope::Task`]): statistics gathered on task `t`'s data say nothing about the atoms other
//! tasks rely on.

use crate::bank::AtomBank;
use crate::error::{Error, Result};
use crate::stats::ActivationStats;

/// Which atoms may be removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneScope {
    /// Only atoms created by this task.
    Task(u32),
    /// Every atom of the bank.
    All,
}

/// The outcome of [`plan_pruning`]: which atoms stay.
#[derive(Debug, Clone, PartialEq)]
pub struct PrunePlan {
    /// Indices of the atoms kept, ascending.
    pub keep: Vec<usize>,
    /// Indices of the atoms removed, ascending.
    pub removed: Vec<usize>,
    /// Mass of the kept candidates / mass of all candidates (1 when there was none).
    pub kept_share: f64,
}

/// Number of atoms (largest mass first) whose cumulative mass reaches `share` of the total: the
/// quantity of paper Figs. 8-10. Returns 0 for an all-zero mass.
pub fn atoms_for_share(mass: &[f64], share: f64) -> usize {
    let mut sorted: Vec<f64> = mass.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let total: f64 = sorted.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    if share >= 1.0 {
        return sorted.iter().filter(|&&m| m > 0.0).count();
    }
    let mut cum = 0.0;
    for (i, m) in sorted.iter().enumerate() {
        cum += m;
        if cum >= share * total {
            return i + 1;
        }
    }
    sorted.len()
}

/// Chooses the atoms to keep in `bank` from `stats`, recorded on the same bank.
pub fn plan_pruning(bank: &AtomBank, stats: &ActivationStats, share: f64, scope: PruneScope) -> Result<PrunePlan> {
    if !(share > 0.0 && share <= 1.0) {
        return Err(Error::State(format!("pruning share must lie in (0, 1], found {share}")));
    }
    if stats.mass.len() != bank.len() {
        return Err(Error::State(format!(
            "statistics cover {} atoms, the bank holds {}: gather them on this bank",
            stats.mass.len(),
            bank.len()
        )));
    }
    if stats.tokens == 0 {
        return Err(Error::State("no activation statistics were recorded (0 tokens)".into()));
    }
    let mut candidates: Vec<usize> = (0..bank.len())
        .filter(|&i| match scope {
            PruneScope::All => true,
            PruneScope::Task(t) => bank.atom_task()[i] == t,
        })
        .collect();
    let total: f64 = candidates.iter().map(|&i| stats.mass[i]).sum();
    let mut removed = Vec::new();
    let mut kept_mass = total;
    if share < 1.0 {
        candidates.sort_by(|&a, &b| stats.mass[b].total_cmp(&stats.mass[a]).then(a.cmp(&b)));
        let mut cum = 0.0;
        let mut n_keep = 0;
        while n_keep < candidates.len() && cum < share * total {
            cum += stats.mass[candidates[n_keep]];
            n_keep += 1;
        }
        kept_mass = cum;
        removed = candidates.split_off(n_keep);
        removed.sort_unstable();
    }
    let keep: Vec<usize> = (0..bank.len()).filter(|i| removed.binary_search(i).is_err()).collect();
    let kept_share = if total > 0.0 { kept_mass / total } else { 1.0 };
    Ok(PrunePlan { keep, removed, kept_share })
}

impl AtomBank {
    /// Applies a [`PrunePlan`]: a smaller bank whose kept atoms are bit-identical to this bank's.
    pub fn prune(&self, plan: &PrunePlan) -> Result<AtomBank> {
        self.retain(&plan.keep)
    }
}
