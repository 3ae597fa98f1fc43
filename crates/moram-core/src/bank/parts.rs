//! Banks rebuilt from stored tensors (adapter files, tests) and banks that keep some atoms
//! (pruning).

use super::{leaf, AtomBank};
use crate::config::{MoramConfig, Routing};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

impl AtomBank {
    /// Rebuilds a bank from stored tensors (adapter files, tests, pruning).
    ///
    /// `keys`: `(R, d_in)`, `values`: `(d_out, R)`, `atom_task`: length `R`; the first `n_frozen`
    /// atoms are frozen, the rest trainable. `router`: router keys `(n, d_in)` with their count of
    /// frozen rows; `expert_task`: MoE-LoRA's task per router row. Tensors are copied to f32 on `device`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        config: &MoramConfig,
        keys: &Tensor,
        values: &Tensor,
        atom_task: Vec<u32>,
        n_frozen: usize,
        router: Option<(&Tensor, usize)>,
        expert_task: Vec<u32>,
        device: Device,
    ) -> Result<Self> {
        config.validate()?;
        let ks = keys.size();
        let vs = values.size();
        if ks.len() != 2 || vs.len() != 2 || ks[0] != vs[1] {
            return Err(Error::Shape {
                what: "atom values".into(),
                expected: format!("(d_out, R) with R = {} keys", ks.first().copied().unwrap_or(-1)),
                found: vs,
            });
        }
        let (r, d_in, d_out) = (ks[0], ks[1], vs[0]);
        if atom_task.len() as i64 != r || n_frozen as i64 > r {
            return Err(Error::State(format!(
                "{r} atoms need {r} task ids (found {}) and at most {r} frozen (found {n_frozen})",
                atom_task.len()
            )));
        }
        if atom_task.windows(2).any(|w| w[0] > w[1]) {
            return Err(Error::State("atom task ids must be non-decreasing (atoms are stored in task order)".into()));
        }
        let to_f32 = |t: &Tensor| t.detach().to_device(device).to_kind(Kind::Float).contiguous();
        let nf = n_frozen as i64;
        let mut bank = AtomBank::new(d_in as usize, d_out as usize, config, device)?;
        bank.frozen_keys = to_f32(&keys.narrow(0, 0, nf));
        bank.keys = leaf(to_f32(&keys.narrow(0, nf, r - nf)));
        bank.frozen_values = to_f32(&values.narrow(1, 0, nf));
        bank.values = leaf(to_f32(&values.narrow(1, nf, r - nf)));
        let n_router = match config.routing {
            Routing::ExternalRouter { .. } => r,
            Routing::MoeLora { .. } => expert_task.len() as i64,
            _ => 0,
        };
        match (router, n_router > 0) {
            (Some((rk, frozen_rows)), true) => {
                if rk.size() != [n_router, d_in] || frozen_rows as i64 > n_router {
                    return Err(Error::Shape {
                        what: "router keys".into(),
                        expected: format!("({n_router}, {d_in}) with at most {n_router} frozen rows"),
                        found: rk.size(),
                    });
                }
                let fr = frozen_rows as i64;
                bank.frozen_router = to_f32(&rk.narrow(0, 0, fr));
                bank.router = leaf(to_f32(&rk.narrow(0, fr, n_router - fr)));
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(Error::State(format!(
                    "routing {:?} has no router, but router keys were given",
                    config.routing
                )))
            }
            (None, true) => return Err(Error::State(format!("routing {:?} needs router keys", config.routing))),
        }
        if matches!(config.routing, Routing::MoeLora { .. }) && atom_task.iter().any(|t| !expert_task.contains(t)) {
            return Err(Error::State("every atom's task must have a MoE-LoRA expert (router row)".into()));
        }
        bank.current_task = atom_task.get(n_frozen).copied();
        bank.atom_basis = vec![0; atom_task.len()];
        bank.atom_task = atom_task;
        bank.expert_task = expert_task;
        Ok(bank)
    }

    /// A new bank holding only the atoms at `keep` (ascending indices), with the same frozen and
    /// trainable status, task ids and values. Router keys of kept atoms are kept (external router);
    /// MoE-LoRA keeps every expert's router key.
    pub fn retain(&self, keep: &[usize]) -> Result<AtomBank> {
        if keep.windows(2).any(|w| w[0] >= w[1]) || keep.last().is_some_and(|&i| i >= self.len()) {
            return Err(Error::State(format!("atoms to keep must be ascending indices below {}", self.len())));
        }
        let index = Tensor::from_slice(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(self.device);
        let keys = self.keys_tensor().detach().index_select(0, &index);
        let values = self.values_tensor().detach().index_select(1, &index);
        let n_frozen = keep.iter().filter(|&&i| i < self.n_frozen()).count();
        let atom_task = keep.iter().map(|&i| self.atom_task[i]).collect();
        let router_all = self.router_tensor().detach();
        let router = match self.config.routing {
            Routing::ExternalRouter { .. } => Some((router_all.index_select(0, &index), n_frozen)),
            Routing::MoeLora { .. } => Some((router_all, self.n_frozen_router())),
            _ => None,
        };
        let mut bank = AtomBank::from_parts(
            &self.config,
            &keys,
            &values,
            atom_task,
            n_frozen,
            router.as_ref().map(|(t, n)| (t, *n)),
            self.expert_task.clone(),
            self.device,
        )?;
        bank.current_task = self.current_task;
        bank.pending_task = self.pending_task;
        bank.key_basis = self.key_basis.shallow_clone();
        bank.atom_basis = keep.iter().map(|&i| self.atom_basis[i]).collect();
        bank.score_stats = self.score_stats.as_ref().map(|(m, s)| (m.shallow_clone(), s.shallow_clone()));
        bank.novelty_thresholds = self.novelty_thresholds.clone();
        Ok(bank)
    }
}
