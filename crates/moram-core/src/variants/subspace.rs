//! Protected input subspaces (variants, not in the paper; `docs/method.md`, "Protected input
//! subspaces"): the orthonormal basis of the inputs earlier tasks occupy, grown by GPM's energy
//! rule after each task, and what it restricts: new keys (orthogonal keys) or the keys routing
//! scores with (novel routing, novelty gating).

use crate::bank::AtomBank;
use crate::config::SubspaceMode;
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

impl AtomBank {
    pub(crate) fn subspace_mode(&self) -> Option<SubspaceMode> {
        self.config.key_subspace.map(|k| k.mode)
    }

    /// `keys - (keys U) U^T` for keys `(n, d_in)` in [`SubspaceMode::Keys`]: the part outside the
    /// protected subspace. Other modes leave the keys as they are.
    pub(crate) fn project_out(&self, keys: &Tensor) -> Tensor {
        if self.key_basis.size()[1] == 0 || self.subspace_mode() != Some(SubspaceMode::Keys) {
            return keys.shallow_clone();
        }
        keys - keys.mm(&self.key_basis).mm(&self.key_basis.tr())
    }

    /// Orthogonal keys: moves the trainable keys back into the complement of the protected input
    /// subspace (call after every optimiser step; a no-op without a basis). Projecting the
    /// parameter after each step keeps it exactly where projected gradient descent would.
    pub fn project_trainable_keys(&mut self) {
        if self.key_basis.size()[1] == 0 || self.keys.numel() == 0 || self.subspace_mode() != Some(SubspaceMode::Keys) {
            return;
        }
        let _guard = tch::no_grad_guard();
        let projected = self.project_out(&self.keys.detach());
        self.keys.copy_(&projected);
    }

    /// [`SubspaceMode::Routing`]: every key `(R, d_in)` projected out of the subspace that existed
    /// when its atom was created (the keys Eq. 5 scores with); `None` in other modes or while no
    /// atom has a protected subspace.
    pub(crate) fn routing_keys(&self, keys: &Tensor) -> Option<Tensor> {
        let mode = self.subspace_mode();
        let routes = mode == Some(SubspaceMode::Routing) || mode == Some(SubspaceMode::NoveltyGated);
        if !routes || self.atom_basis.iter().all(|&m| m == 0) {
            return None;
        }
        let mut parts = Vec::new();
        let mut start = 0usize;
        while start < self.atom_basis.len() {
            let m = self.atom_basis[start];
            let len = self.atom_basis[start..].iter().take_while(|&&x| x == m).count();
            let rows = keys.narrow(0, start as i64, len as i64);
            parts.push(if m == 0 {
                rows
            } else {
                let u = self.key_basis.narrow(1, 0, m as i64);
                &rows - rows.mm(&u).mm(&u.tr())
            });
            start += len;
        }
        Some(Tensor::cat(&parts, 0))
    }

    /// The protected input subspace `(d_in, m)` (orthonormal columns; `m = 0` when unused).
    pub fn key_basis(&self) -> &Tensor {
        &self.key_basis
    }

    /// For each atom, the columns of [`AtomBank::key_basis`] that existed when it was created.
    pub fn atom_basis(&self) -> &[usize] {
        &self.atom_basis
    }

    /// Restores [`AtomBank::atom_basis`] (from a file): one value per atom, each at most the basis width.
    pub fn set_atom_basis(&mut self, cols: Vec<usize>) -> Result<()> {
        let m = self.key_basis.size()[1] as usize;
        if cols.len() != self.atom_task.len() || cols.iter().any(|&c| c > m) {
            return Err(Error::State(format!(
                "basis columns per atom: expected {} values of at most {m}, found {} (max {})",
                self.atom_task.len(),
                cols.len(),
                cols.iter().max().copied().unwrap_or(0)
            )));
        }
        self.atom_basis = cols;
        Ok(())
    }

    /// Sets the protected input subspace (restoring it from a file). `basis`: `(d_in, m)`, with
    /// orthonormal columns (checked to 1e-3).
    pub fn set_key_basis(&mut self, basis: &Tensor) -> Result<()> {
        let size = basis.size();
        if size.len() != 2 || size[0] != self.d_in || size[1] > self.d_in {
            return Err(Error::Shape {
                what: "key basis".into(),
                expected: format!("({}, m) with m <= {}", self.d_in, self.d_in),
                found: size,
            });
        }
        let basis = basis.detach().to_device(self.device).to_kind(Kind::Float).contiguous();
        let m = size[1];
        if m > 0 {
            let gram = basis.tr().mm(&basis) - Tensor::eye(m, (Kind::Float, self.device));
            let err = gram.abs().max().double_value(&[]);
            if err.is_nan() || err > 1e-3 {
                return Err(Error::State(format!("key basis columns are not orthonormal (|U^T U - I| = {err:.3e})")));
            }
        }
        self.key_basis = basis;
        Ok(())
    }

    /// `d_in` when `moments` is `(d_in, d_in)`, else a shape error.
    fn check_moments(&self, moments: &Tensor) -> Result<i64> {
        let d = self.d_in;
        if moments.size() != [d, d] {
            return Err(Error::Shape {
                what: "input moments".into(),
                expected: format!("({d}, {d})"),
                found: moments.size(),
            });
        }
        Ok(d)
    }

    /// InfLoRA's down-projection for a new task (Liang and Li, CVPR 2024; `docs/method.md`): the
    /// first `rows` left singular vectors of `(I - U U^T) C`, `C` being the new task's input
    /// moments `(d_in, d_in)` and `U` the protected basis, as rows `(rows, d_in)` scaled by
    /// `1 / sqrt(3)` (the reference code's scale). They lie outside the earlier tasks' subspace,
    /// along the directions the new task's inputs use most.
    pub fn designed_keys(&self, moments: &Tensor, rows: usize) -> Result<Tensor> {
        let d = self.check_moments(moments)?;
        if rows as i64 > d {
            return Err(Error::config("r", format!("{rows} keys cannot be orthonormal in {d} dimensions")));
        }
        let _guard = tch::no_grad_guard();
        let c = moments.detach().to_device(self.device).to_kind(Kind::Double);
        let projected = match self.key_basis.size()[1] {
            0 => c,
            _ => {
                let u = self.key_basis.to_kind(Kind::Double);
                &c - u.mm(&u.tr().mm(&c))
            }
        };
        let (left, _, _) = projected.svd(true, true);
        Ok((left.narrow(1, 0, rows as i64).tr() / 3f64.sqrt()).to_kind(Kind::Float).contiguous())
    }

    /// Grows the protected subspace with one task's inputs (GPM's rule): `moments` is the uncentred
    /// second-moment matrix `sum x x^T` `(d_in, d_in)` of the layer's inputs on that task. The
    /// leading eigenvectors of `P C P` (`P = I - U U^T`) are appended until `U` captures `energy`
    /// of `trace(C)`; none when it already does. Returns the number of directions added.
    pub fn extend_key_basis(&mut self, moments: &Tensor, energy: f64) -> Result<usize> {
        let d = self.check_moments(moments)?;
        if !(energy > 0.0 && energy < 1.0) {
            return Err(Error::config("key_subspace.energy", format!("must lie in (0, 1), found {energy}")));
        }
        let _guard = tch::no_grad_guard();
        let c = moments.detach().to_device(self.device).to_kind(Kind::Double);
        let c = (&c + c.tr()) / 2.0;
        let total = c.trace().double_value(&[]);
        if !total.is_finite() {
            return Err(Error::State(format!("input moments are not finite (trace {total})")));
        }
        if total <= 0.0 {
            return Ok(0);
        }
        let u = self.key_basis.to_kind(Kind::Double);
        let m = u.size()[1];
        let residual = if m == 0 {
            c.shallow_clone()
        } else {
            let p = Tensor::eye(d, (Kind::Double, self.device)) - u.mm(&u.tr());
            p.mm(&c).mm(&p)
        };
        let residual = (&residual + residual.tr()) / 2.0;
        let captured = total - residual.trace().double_value(&[]);
        // The spectrum in f32 (LAPACK ssyevd, about twice as fast as f64 at d = 1536): a subspace
        // needs no more precision; the energy bookkeeping stays in f64.
        let (eigenvalues, eigenvectors) = residual.to_kind(Kind::Float).linalg_eigh("L");
        let eigenvalues = eigenvalues.to_kind(Kind::Double);
        let values = Vec::<f64>::try_from(eigenvalues.flip([0]).to_device(Device::Cpu))?;
        let mut sum = captured;
        let mut add = 0i64;
        for v in values.iter().take((d - m).max(0) as usize) {
            if sum / total >= energy {
                break;
            }
            sum += v.max(0.0);
            add += 1;
        }
        if add == 0 {
            return Ok(0);
        }
        let new = eigenvectors.flip([1]).narrow(1, 0, add).to_kind(Kind::Float);
        self.key_basis = if m == 0 { new } else { Tensor::cat(&[&self.key_basis, &new], 1) };
        Ok(add as usize)
    }
}
