//! Activation statistics per atom, gathered over any stream of inputs (paper C.5, D.1, D.3).
//!
//! Definitions (ours: the paper does not define them precisely and the official code has none,
//! protocol section 2):
//! - **activation mass** of atom `i`: the sum over tokens of its final weight `w_i` (after top-k and
//!   softmax; with or without the eval-only threshold gate, see [`StatsMode`]);
//! - **selection count**: the number of tokens with `w_i > 0`;
//! - **activation ratio**: selection count / tokens seen (paper Fig. 5);
//! - **top-1 count**: the number of tokens for which the atom has the largest weight (tokens whose
//!   weights are all 0, e.g. gated away, count for no atom);
//! - **open count**: the number of tokens a gate (novelty, task) left the atom open to (every
//!   token when no gate runs); how much of its data a task's new atoms can act on at all.

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Which weights are accumulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatsMode {
    /// The weights the forward pass used: gated in eval mode, ungated in training mode.
    #[default]
    AsUsed,
    /// The weights before the threshold gate, in either mode.
    BeforeGate,
}

/// Per-atom activation statistics of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationStats {
    /// Which weights were recorded.
    pub mode: StatsMode,
    /// Summed weight per atom.
    pub mass: Vec<f64>,
    /// Tokens with a non-zero weight, per atom.
    pub selected: Vec<u64>,
    /// Tokens for which the atom has the largest weight, per atom.
    pub top1: Vec<u64>,
    /// Tokens the atom was open to (not closed by a novelty or task gate), per atom.
    pub open: Vec<u64>,
    /// Tokens seen.
    pub tokens: u64,
}

impl ActivationStats {
    /// Empty statistics for `n_atoms` atoms.
    pub fn new(n_atoms: usize, mode: StatsMode) -> Self {
        ActivationStats {
            mode,
            mass: vec![0.0; n_atoms],
            selected: vec![0; n_atoms],
            top1: vec![0; n_atoms],
            open: vec![0; n_atoms],
            tokens: 0,
        }
    }

    /// Adds a batch of weights `(.., R)`. Atoms appended since the last call extend the vectors.
    pub fn record(&mut self, weights: &Tensor) -> Result<()> {
        self.record_gated(weights, None)
    }

    /// [`ActivationStats::record`] with where each atom was open to each token (`(.., R)` bool,
    /// broadcastable to the weights); `None`: open to every token.
    pub fn record_gated(&mut self, weights: &Tensor, open: Option<&Tensor>) -> Result<()> {
        let size = weights.size();
        let r = *size.last().ok_or_else(|| Error::Shape {
            what: "atom weights".into(),
            expected: "(.., R)".into(),
            found: size.clone(),
        })? as usize;
        if r < self.mass.len() {
            return Err(Error::State(format!(
                "statistics cover {} atoms but the weights have {r}: the bank shrank while recording",
                self.mass.len()
            )));
        }
        self.mass.resize(r, 0.0);
        self.selected.resize(r, 0);
        self.top1.resize(r, 0);
        self.open.resize(r, 0);
        let w = weights.detach().reshape([-1, r as i64]);
        let n = w.size()[0] as u64;
        let open = match open {
            Some(o) => Vec::<i64>::try_from(
                o.expand(weights.size(), false)
                    .reshape([-1, r as i64])
                    .sum_dim_intlist(0, false, Kind::Int64)
                    .to_device(Device::Cpu),
            )?
            .into_iter()
            .map(|c| c as u64)
            .collect(),
            None => vec![n; r],
        };
        let mass = Vec::<f64>::try_from(w.sum_dim_intlist(0, false, Kind::Double).to_device(Device::Cpu))?;
        let sel = Vec::<i64>::try_from(w.gt(0.0).sum_dim_intlist(0, false, Kind::Int64).to_device(Device::Cpu))?;
        let (best, arg) = w.max_dim(-1, false);
        let arg = arg.masked_select(&best.gt(0.0));
        let top = Vec::<i64>::try_from(arg.bincount::<Tensor>(None, r as i64).to_device(Device::Cpu))?;
        for i in 0..r {
            self.mass[i] += mass[i];
            self.selected[i] += sel[i] as u64;
            self.top1[i] += top.get(i).copied().unwrap_or(0) as u64;
            self.open[i] += open[i];
        }
        self.tokens += n;
        Ok(())
    }

    /// Selection count / tokens seen, per atom (0 when no token was seen).
    pub fn activation_ratio(&self) -> Vec<f64> {
        let t = self.tokens.max(1) as f64;
        self.selected.iter().map(|&s| s as f64 / t).collect()
    }

    /// Open count / tokens seen, per atom (0 when no token was seen).
    pub fn open_ratio(&self) -> Vec<f64> {
        let t = self.tokens.max(1) as f64;
        self.open.iter().map(|&o| o as f64 / t).collect()
    }

    /// Mass per token, per atom ("averaged activation", paper Fig. 8).
    pub fn mean_weight(&self) -> Vec<f64> {
        let t = self.tokens.max(1) as f64;
        self.mass.iter().map(|&m| m / t).collect()
    }

    /// Adds another batch of statistics of the same layer.
    pub fn merge(&mut self, other: &ActivationStats) -> Result<()> {
        if other.mode != self.mode {
            return Err(Error::State("cannot merge statistics recorded in different modes".into()));
        }
        let n = self.mass.len().max(other.mass.len());
        self.mass.resize(n, 0.0);
        self.selected.resize(n, 0);
        self.top1.resize(n, 0);
        self.open.resize(n, 0);
        for (i, (&m, &s)) in other.mass.iter().zip(&other.selected).enumerate() {
            self.mass[i] += m;
            self.selected[i] += s;
        }
        for (i, &o) in other.open.iter().enumerate() {
            self.open[i] += o;
        }
        for (i, &t) in other.top1.iter().enumerate() {
            self.top1[i] += t;
        }
        self.tokens += other.tokens;
        Ok(())
    }
}
