//! Eqs. 4-8 on a bank: the per-token weights of every atom (self-activated, a learned router, or
//! all ones for the LoRA baselines), with the gates that close atoms to tokens (novelty gating,
//! task-gated atoms), and the weighted projections the values multiply.

use super::AtomBank;
use crate::config::{Routing, ValuePath};
use crate::routing;
use tch::{Kind, Tensor};

/// What [`AtomBank::route`] computes for a batch of tokens. The adapter's contribution is
/// `mixed values^T` ([`Routed::delta`]); it is kept factored so the caller can fuse it with the base
/// product.
#[derive(Debug)]
pub struct Routed {
    /// Weighted projections `w * z * value_scale` `(.., R')`, f32.
    pub mixed: Tensor,
    /// The values they multiply `(d_out, R')`: every atom, or (sparse path) the atoms some token used.
    pub values: Tensor,
    /// The weights used for the values `(.., R)` (gated in eval).
    pub weights: Tensor,
    /// The weights before the eval-only threshold gate `(.., R)` (the same tensor when no gate ran).
    pub weights_before_gate: Tensor,
    /// Where each atom may act on each token `(.., R)` bool, when a gate (novelty, task) closed
    /// any; `None`: every atom was open.
    pub open: Option<Tensor>,
}

impl Routed {
    /// The adapter's contribution `(.., d_out)` in f32 (Eq. 4 applied to the tokens).
    pub fn delta(&self) -> Tensor {
        routing::apply_values(&self.mixed, &self.values)
    }
}

impl AtomBank {
    /// Computes the adapter's contribution for `x` `(.., d_in)` f32 (dropout already applied).
    /// `train` selects training behaviour (no threshold gate). Returns `None` while the bank is empty.
    pub fn route(&self, x: &Tensor, train: bool) -> Option<Routed> {
        self.route_for(x, train, None)
    }

    /// [`AtomBank::route`] where each token may use only the atoms of tasks up to `open_tasks`
    /// (i64, broadcastable to `x`'s leading dimensions: `(B, 1)` per sequence, `(1, N)` per packed
    /// token): the other atoms are closed to it (task-gated atoms, [`crate::variants::task_gate`]),
    /// as novelty gating closes atoms, before top-k. `None`: every atom is open.
    pub fn route_for(&self, x: &Tensor, train: bool, open_tasks: Option<&Tensor>) -> Option<Routed> {
        if self.atom_task.is_empty() {
            return None;
        }
        let cfg = &self.config;
        let keys = self.keys_tensor();
        let z = x.matmul(&keys.tr());
        let score_x = self.score_input(x);
        let routing_z = match (self.routing_keys(&keys), score_x) {
            (None, None) => z.shallow_clone(),
            (rk, sx) => sx.as_ref().unwrap_or(x).matmul(&rk.as_ref().unwrap_or(&keys).tr()),
        };
        // Novelty gating: which atoms may act on each token, and their rescaled scores.
        let (routing_z, closed) = match self.novelty_gate(x, &keys) {
            Some((scale, closed)) => ((routing_z * scale).masked_fill(&closed, 0.0), Some(closed)),
            None => (routing_z, None),
        };
        // Task-gated atoms: later tasks' atoms are out of the scores' normalisation too (Eq. 5
        // divides by the norm over every atom), so a limited token routes exactly as the bank did
        // when its last open task ended.
        let (routing_z, closed) = match (closed, open_tasks.map(|t| self.closed_by_task(t))) {
            (Some(a), Some(b)) => (routing_z.masked_fill(&b, 0.0), Some(a.logical_or(&b))),
            (None, Some(b)) => (routing_z.masked_fill(&b, 0.0), Some(b)),
            (a, None) => (routing_z, a),
        };
        let n_atoms = self.atom_task.len();
        let tau = |on: bool| if on { cfg.temperature } else { 1.0 };
        let (weights_before_gate, weights) = match cfg.routing {
            Routing::SelfActivated { use_top_k: top_k, use_temperature: temperature, use_threshold: threshold } => {
                let s = routing::relevance_scores(&routing_z, cfg.eps);
                let open = match &closed {
                    Some(c) => s.masked_fill(c, f64::NEG_INFINITY),
                    None => s.shallow_clone(),
                };
                let masked = if top_k { routing::top_k_mask(&open, cfg.effective_top_k(n_atoms)) } else { open };
                let w = routing::mixture_weights(&masked, tau(temperature));
                // A token no atom is open to (all -inf) gets no weight rather than NaN.
                let w = if closed.is_some() { w.nan_to_num(0.0, 0.0, 0.0) } else { w };
                if !train && threshold && cfg.threshold > 0.0 {
                    let gated = routing::threshold_gate(&w, &s, cfg.threshold);
                    (w, gated)
                } else {
                    (w.shallow_clone(), w)
                }
            }
            Routing::ExternalRouter { use_top_k: top_k, use_temperature: temperature } => {
                let logits = x.matmul(&self.router_tensor().tr());
                let logits = match &closed {
                    Some(c) => logits.masked_fill(c, f64::NEG_INFINITY),
                    None => logits,
                };
                let masked = if top_k { routing::top_k_mask(&logits, cfg.effective_top_k(n_atoms)) } else { logits };
                let w = routing::mixture_weights(&masked, tau(temperature));
                let w = if closed.is_some() { w.nan_to_num(0.0, 0.0, 0.0) } else { w };
                (w.shallow_clone(), w)
            }
            Routing::MoeLora { use_top_k: top_k, use_temperature: temperature } => {
                let n_experts = self.expert_task.len();
                let logits = x.matmul(&self.router_tensor().tr());
                let masked = if top_k { routing::top_k_mask(&logits, cfg.effective_top_k(n_experts)) } else { logits };
                let w = routing::mixture_weights(&masked, tau(temperature)).index_select(-1, &self.atom_expert_index());
                // An expert is closed with its atoms (they share a task).
                let w = match &closed {
                    Some(c) => w.masked_fill(c, 0.0),
                    None => w,
                };
                (w.shallow_clone(), w)
            }
            Routing::Lora {} | Routing::Sum {} => {
                let w = match &closed {
                    Some(c) => z.ones_like().masked_fill(c, 0.0),
                    None => z.ones_like(),
                };
                (w.shallow_clone(), w)
            }
        };
        let values = self.values_tensor();
        let mixed = match (cfg.routing, closed.is_some()) {
            (Routing::Lora {} | Routing::Sum {}, false) => &z * cfg.value_scale,
            (Routing::Lora {} | Routing::Sum {}, true) => &z * &weights * cfg.value_scale,
            _ => routing::mixed_projection(&z, &self.scaled_weights(&weights)),
        };
        let open = closed.as_ref().map(|c| c.logical_not());
        let sparse = !train
            && match cfg.value_path {
                ValuePath::Sparse => true,
                // `cargo xtask bench core` (benchmarks/results/core.json) found no CPU case where the
                // sparse path wins (whole batches use nearly every atom; one token is dominated by
                // per-op overhead), so Auto stays dense until a measurement says otherwise.
                ValuePath::Auto | ValuePath::Dense => false,
            };
        let (mixed, values) = if sparse { routing::compact_used_atoms(&mixed, &values) } else { (mixed, values) };
        Some(Routed { mixed, values, weights, weights_before_gate, open })
    }

    /// Where each atom `(.., R)` is closed to tokens limited to the tasks `<= open_tasks` (i64, the
    /// tokens' leading shape or broadcastable to it).
    fn closed_by_task(&self, open_tasks: &Tensor) -> Tensor {
        let tasks: Vec<i64> = self.atom_task.iter().map(|&t| t as i64).collect();
        let atom_task = Tensor::from_slice(&tasks).to_device(open_tasks.device());
        atom_task.gt_tensor(&open_tasks.unsqueeze(-1))
    }

    /// Applies `value_scale` to the weights: uniformly, or (compat B1) only to trainable atoms.
    fn scaled_weights(&self, weights: &Tensor) -> Tensor {
        let scale = self.config.value_scale;
        let n_frozen = self.n_frozen() as i64;
        if self.config.compat.unscaled_frozen_values && n_frozen > 0 && scale != 1.0 {
            let per_atom = Tensor::cat(
                &[
                    Tensor::ones([n_frozen], (Kind::Float, self.device)),
                    Tensor::full([self.n_trainable() as i64], scale, (Kind::Float, self.device)),
                ],
                0,
            );
            weights * per_atom
        } else if scale != 1.0 {
            weights * scale
        } else {
            weights.shallow_clone()
        }
    }

    /// MoE-LoRA: expert index of every atom `(R,)` i64.
    fn atom_expert_index(&self) -> Tensor {
        let idx: Vec<i64> =
            self.atom_task.iter().map(|t| self.expert_task.iter().position(|e| e == t).unwrap_or(0) as i64).collect();
        Tensor::from_slice(&idx).to_device(self.device)
    }
}
