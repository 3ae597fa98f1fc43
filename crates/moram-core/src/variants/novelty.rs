//! Novelty-gated routing (a variant, not in the paper; `docs/method.md`, "Protected input
//! subspaces"): a later atom acts only on tokens whose share outside its predecessors' subspace
//! reaches the threshold fitted on the earlier tasks' tokens, and there scores at full scale.

use crate::bank::AtomBank;
use crate::config::SubspaceMode;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

impl AtomBank {
    /// [`SubspaceMode::NoveltyGated`]: for tokens `x` `(.., d_in)` and all keys `(R, d_in)`, the
    /// factor `(.., R)` each atom's routing projection `(P a) . x` is multiplied by, and where an
    /// atom is closed to the token (`rho` below its threshold). The factor `1 / (||P a|| rho)` turns
    /// the projection into `||x|| cos(P a, P x)` (for atoms without a protected subspace, `P = I`
    /// and `rho = 1`: `||x|| cos(a, x)`): every atom is scored by the direction of its key against
    /// the part of the token it may read, so a fresh key competes with trained ones as soon as it
    /// points the right way, whatever the norms. `None` in other modes or while no atom has a
    /// protected subspace.
    pub(crate) fn novelty_gate(&self, x: &Tensor, keys: &Tensor) -> Option<(Tensor, Tensor)> {
        if self.subspace_mode() != Some(SubspaceMode::NoveltyGated) || self.atom_basis.iter().all(|&m| m == 0) {
            return None;
        }
        // A routing decision, like the top-k selection: no gradient flows through rho (its square
        // root has none at 0, e.g. on padding).
        let rho = self.outside_share(&x.detach());
        let eps = 1e-6;
        let routing_keys = self.routing_keys(keys).unwrap_or_else(|| keys.shallow_clone());
        let inverse_norm = routing_keys.norm_scalaropt_dim(2, [-1].as_slice(), false).clamp_min(eps).reciprocal();
        // Per atom (a few tensors of length R, not R small operations per layer and token batch):
        // its basis width, whether it has one, and its threshold. No fitted threshold means
        // nothing was recorded for that width: the atom stays closed (threshold +inf); an atom
        // without a basis is never closed (-inf).
        let widths: Vec<i64> = self.atom_basis.iter().map(|&m| m as i64).collect();
        let thresholds: Vec<f32> = self
            .atom_basis
            .iter()
            .map(
                |&m| if m == 0 { f32::NEG_INFINITY } else { self.novelty_threshold(m).unwrap_or(f64::INFINITY) as f32 },
            )
            .collect();
        let device = x.device();
        let widths = Tensor::from_slice(&widths).to_device(device);
        let has_basis = widths.gt(0);
        let thresholds = Tensor::from_slice(&thresholds).to_device(device);
        let r = rho.index_select(-1, &widths);
        let scales = r.clamp_min(eps).reciprocal().where_self(&has_basis, &r.ones_like()) * inverse_norm;
        let closed = r.lt_tensor(&thresholds);
        Some((scales, closed))
    }

    /// For tokens `x` `(.., d_in)`: `rho[.., m] = ||x - U_m U_m^T x|| / ||x||` for every basis width
    /// `m = 0..=M` (`(.., M + 1)`, f32), where `U_m` is the first `m` basis columns.
    pub fn outside_share(&self, x: &Tensor) -> Tensor {
        let m = self.key_basis.size()[1];
        let total = x.square().sum_dim_intlist([-1].as_slice(), true, Kind::Float);
        let captured = if m == 0 {
            total.zeros_like()
        } else {
            let inside = x.matmul(&self.key_basis).square().cumsum(-1, Kind::Float);
            Tensor::cat(&[total.zeros_like(), inside], -1)
        };
        ((&total - captured).clamp_min(0.0) / total.clamp_min(1e-30)).sqrt()
    }

    /// The novelty threshold fitted for basis width `m` ([`AtomBank::set_novelty_threshold`]).
    pub fn novelty_threshold(&self, m: usize) -> Option<f64> {
        self.novelty_thresholds.iter().find(|(w, _)| *w == m).map(|(_, t)| *t)
    }

    /// Every fitted `(basis width, threshold)`, ascending by width.
    pub fn novelty_thresholds(&self) -> &[(usize, f64)] {
        &self.novelty_thresholds
    }

    /// Sets the threshold on `rho` for atoms created with basis width `m` (1..=the basis width), in
    /// [0, 1]. Thresholds only grow: a width keeps the largest value it was given, so tokens an
    /// earlier fit closed stay closed.
    pub fn set_novelty_threshold(&mut self, m: usize, threshold: f64) -> Result<()> {
        let width = self.key_basis.size()[1] as usize;
        if m == 0 || m > width || !(0.0..=1.0).contains(&threshold) {
            return Err(Error::State(format!(
                "a novelty threshold needs a basis width in 1..={width} and a value in [0, 1], found {m} and {threshold}"
            )));
        }
        // Stored as f32 in adapter files: keep exactly what a reload gives.
        let threshold = threshold as f32 as f64;
        match self.novelty_thresholds.iter_mut().find(|(w, _)| *w == m) {
            Some((_, t)) => *t = t.max(threshold),
            None => {
                self.novelty_thresholds.push((m, threshold));
                self.novelty_thresholds.sort_by_key(|(w, _)| *w);
            }
        }
        Ok(())
    }
}
