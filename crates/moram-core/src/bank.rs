//! [`AtomBank`]: the growing set of rank-1 atoms of one adapted layer.
//!
//! Atom `i` is a key `a_i` (row `i` of `A`, length `d_in`) and a value `b_i` (column `i` of `B`,
//! length `d_out`). Atoms are stored frozen first, then the current task's trainable atoms, in the
//! order both official code bases use. Only the trainable part is ever handed to an optimizer;
//! frozen tensors are plain tensors without gradient, so no optimizer can move them.

use crate::config::{KeyInit, MoramConfig, Routing, ScoreInput, SubspaceMode, ValuePath};
use crate::error::{Error, Result};
use crate::routing;
use tch::{Device, Kind, Tensor};

/// The atoms (and, for router-based variants, the router keys) of one adapted layer.
#[derive(Debug)]
pub struct AtomBank {
    d_in: i64,
    d_out: i64,
    config: MoramConfig,
    device: Device,
    /// Frozen keys `(R_f, d_in)` and values `(d_out, R_f)`, f32, no gradient.
    frozen_keys: Tensor,
    frozen_values: Tensor,
    /// Trainable keys `(R_c, d_in)` and values `(d_out, R_c)`, f32 leaves with gradient.
    keys: Tensor,
    values: Tensor,
    /// Router keys (external router: one per atom; MoE-LoRA: one per expert), frozen then
    /// trainable, `(n, d_in)`. Empty for self-activated routing and LoRA.
    frozen_router: Tensor,
    router: Tensor,
    /// Task that created each atom, length `R` (frozen first).
    atom_task: Vec<u32>,
    /// MoE-LoRA: task of each expert (router row), frozen first.
    expert_task: Vec<u32>,
    /// Task whose atoms are trainable now.
    current_task: Option<u32>,
    /// The trainable atoms were appended early by [`AtomBank::end_task`] (compat flag B3) for this task.
    pending_task: Option<u32>,
    /// Orthonormal basis `(d_in, m)` of the input subspace earlier tasks occupy (orthogonal-keys
    /// variant, [`crate::config::KeySubspace`]); `m = 0` when unused.
    key_basis: Tensor,
    /// Columns of `key_basis` that existed when each atom was created (length `R`): the subspace
    /// that atom is kept out of.
    atom_basis: Vec<usize>,
    /// Per-feature mean and standard deviation `(d_in,)` f32 of the inputs the scores are
    /// normalised with ([`ScoreInput`]); `None` until set.
    score_stats: Option<(Tensor, Tensor)>,
    /// Novelty-gated routing: for a basis width `m`, the outside share `rho` a token needs for
    /// atoms created with that basis to act on it, ascending by width.
    novelty_thresholds: Vec<(usize, f64)>,
}

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

fn empty(rows: i64, cols: i64, device: Device) -> Tensor {
    Tensor::zeros([rows, cols], (Kind::Float, device))
}

/// Concatenates frozen and trainable parts along `dim`, without copying when one part is empty.
fn join(frozen: &Tensor, trainable: &Tensor, dim: i64) -> Tensor {
    let len = |t: &Tensor| t.size()[dim as usize];
    match (len(frozen), len(trainable)) {
        (0, _) => trainable.shallow_clone(),
        (_, 0) => frozen.shallow_clone(),
        _ => Tensor::cat(&[frozen, trainable], dim),
    }
}

/// Shallow clones of the parts that hold at least one element.
fn non_empty<const N: usize>(parts: [&Tensor; N]) -> Vec<Tensor> {
    parts.into_iter().filter(|t| t.numel() > 0).map(Tensor::shallow_clone).collect()
}

/// A fresh leaf tensor that requires grad.
fn leaf(t: Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

impl AtomBank {
    /// An empty bank for a `d_in -> d_out` layer on `device`. Atoms arrive with [`AtomBank::begin_task`].
    pub fn new(d_in: usize, d_out: usize, config: &MoramConfig, device: Device) -> Result<Self> {
        config.validate()?;
        if d_in == 0 || d_out == 0 {
            return Err(Error::State(format!("an atom bank needs d_in, d_out >= 1, found {d_in} x {d_out}")));
        }
        let (d_in, d_out) = (d_in as i64, d_out as i64);
        Ok(AtomBank {
            d_in,
            d_out,
            config: config.clone(),
            device,
            frozen_keys: empty(0, d_in, device),
            frozen_values: empty(d_out, 0, device),
            keys: empty(0, d_in, device),
            values: empty(d_out, 0, device),
            frozen_router: empty(0, d_in, device),
            router: empty(0, d_in, device),
            atom_task: Vec::new(),
            expert_task: Vec::new(),
            current_task: None,
            pending_task: None,
            key_basis: empty(d_in, 0, device),
            atom_basis: Vec::new(),
            score_stats: None,
            novelty_thresholds: Vec::new(),
        })
    }

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

    /// Starts task `task`: freezes every atom so far and appends `r` fresh atoms (keys from
    /// [`KeyInit`], values 0) that are the only trainable ones. Plain LoRA creates its `r` atoms on
    /// the first task and keeps training them. Task ids must increase.
    pub fn begin_task(&mut self, task: u32) -> Result<()> {
        if let Some(current) = self.current_task.or(self.atom_task.last().copied()) {
            if task <= current && self.pending_task != Some(task) {
                return Err(Error::State(format!("task ids must increase: task {task} after task {current}")));
            }
        }
        let _guard = tch::no_grad_guard();
        if !self.config.routing.grows() {
            if self.atom_task.is_empty() {
                self.append_fresh(task);
            }
            self.current_task = Some(task);
            return Ok(());
        }
        if self.pending_task.take() == Some(task) {
            // B3 timing: the atoms appended at the end of the previous task are this task's; the
            // official code re-initialises them in place before training.
            let r = self.keys.size()[0];
            self.keys = leaf(self.project_out(&self.init_keys(r)));
            let m = self.key_basis.size()[1] as usize;
            let n = self.atom_basis.len();
            self.atom_basis[n - r as usize..].fill(m);
            self.values = leaf(empty(self.d_out, r, self.device));
            if self.config.routing.has_router() {
                self.router = leaf(self.router.zeros_like());
            }
        } else {
            self.freeze_current();
            self.append_fresh(task);
        }
        self.current_task = Some(task);
        Ok(())
    }

    /// Ends the current task. By default nothing changes (the next [`AtomBank::begin_task`] freezes).
    /// With `compat.untrained_atoms_in_eval` (official TRACE timing, bug B3) the trained atoms are
    /// frozen now and the next task's fresh atoms are appended at once, so evaluation sees them.
    pub fn end_task(&mut self) -> Result<()> {
        let Some(task) = self.current_task else {
            return Err(Error::State("end_task called before any begin_task".into()));
        };
        if self.config.compat.untrained_atoms_in_eval && self.pending_task.is_none() {
            let _guard = tch::no_grad_guard();
            self.freeze_current();
            self.append_fresh(task + 1);
            self.pending_task = Some(task + 1);
        }
        Ok(())
    }

    /// Freezes the trainable atoms (and router keys) in place: they move to the frozen part.
    pub fn freeze_current(&mut self) {
        let _guard = tch::no_grad_guard();
        let d = self.device;
        self.frozen_keys = join(&self.frozen_keys, &self.keys.detach(), 0);
        self.frozen_values = join(&self.frozen_values, &self.values.detach(), 1);
        self.frozen_router = join(&self.frozen_router, &self.router.detach(), 0);
        self.keys = empty(0, self.d_in, d);
        self.values = empty(self.d_out, 0, d);
        self.router = empty(0, self.d_in, d);
    }

    fn append_fresh(&mut self, task: u32) {
        let r = self.config.r as i64;
        self.keys = leaf(self.project_out(&self.init_keys(r)));
        self.values = leaf(empty(self.d_out, r, self.device));
        self.atom_task.extend(std::iter::repeat_n(task, r as usize));
        self.atom_basis.extend(std::iter::repeat_n(self.key_basis.size()[1] as usize, r as usize));
        match self.config.routing {
            // Zero-initialised router keys (as the sparse-MoE gate of MoE-Adapters): a new router
            // row starts at logit 0 for every input.
            Routing::ExternalRouter { .. } => self.router = leaf(empty(r, self.d_in, self.device)),
            Routing::MoeLora { .. } => {
                self.router = leaf(empty(1, self.d_in, self.device));
                self.expert_task.push(task);
            }
            _ => {}
        }
    }

    fn init_keys(&self, rows: i64) -> Tensor {
        let bound = 1.0 / (self.d_in as f64).sqrt();
        let mut t = Tensor::empty([rows, self.d_in], (Kind::Float, self.device));
        let _ = match self.config.key_init {
            KeyInit::KaimingUniform => t.uniform_(-bound, bound),
            KeyInit::Normal => t.normal_(0.0, bound),
        };
        t
    }

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

    /// All keys `(R, d_in)` (frozen first); differentiable with respect to the trainable rows.
    pub fn keys_tensor(&self) -> Tensor {
        join(&self.frozen_keys, &self.keys, 0)
    }

    /// All values `(d_out, R)` (frozen first); differentiable with respect to the trainable columns.
    pub fn values_tensor(&self) -> Tensor {
        join(&self.frozen_values, &self.values, 1)
    }

    /// All router keys `(n, d_in)` (frozen first); empty without a router.
    pub fn router_tensor(&self) -> Tensor {
        join(&self.frozen_router, &self.router, 0)
    }

    /// The tensors an optimizer may update: the current task's keys, values and router keys
    /// (leaves with `requires_grad`). Frozen atoms are never in this list.
    pub fn trainable_tensors(&self) -> Vec<Tensor> {
        non_empty([&self.keys, &self.values, &self.router])
    }

    /// The frozen keys `(R_f, d_in)`, values `(d_out, R_f)` and router keys (when present): plain
    /// tensors without gradient.
    pub fn frozen_tensors(&self) -> Vec<Tensor> {
        non_empty([&self.frozen_keys, &self.frozen_values, &self.frozen_router])
    }

    /// Named trainable tensors (`keys`, `values`, `router`), in the order of [`AtomBank::trainable_tensors`].
    pub fn named_trainable_tensors(&self) -> Vec<(&'static str, Tensor)> {
        let names = ["keys", "values", "router"].into_iter();
        let parts = [&self.keys, &self.values, &self.router];
        names.zip(parts).filter(|(_, t)| t.numel() > 0).map(|(n, t)| (n, t.shallow_clone())).collect()
    }

    /// Number of trainable scalars (`r (d_in + d_out)` per task for MoRAM, plus router keys).
    pub fn trainable_parameter_count(&self) -> usize {
        self.trainable_tensors().iter().map(|t| t.numel()).sum()
    }

    /// Number of stored scalars, frozen and trainable.
    pub fn parameter_count(&self) -> usize {
        let n = self.atom_task.len() as i64;
        let router = self.frozen_router.numel() + self.router.numel();
        (n * (self.d_in + self.d_out)) as usize + router
    }

    /// A 64-bit FNV-1a checksum of every frozen tensor's bytes, to prove they never change.
    pub fn frozen_checksum(&self) -> Result<u64> {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for t in [&self.frozen_keys, &self.frozen_values, &self.frozen_router] {
            let flat: Vec<f32> = Vec::try_from(t.detach().to_device(Device::Cpu).flatten(0, -1))?;
            for v in flat {
                for byte in v.to_bits().to_le_bytes() {
                    hash = (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
        }
        Ok(hash)
    }

    /// Input width `d_in`.
    pub fn d_in(&self) -> usize {
        self.d_in as usize
    }
    /// Output width `d_out`.
    pub fn d_out(&self) -> usize {
        self.d_out as usize
    }
    /// Total number of atoms `R`.
    pub fn len(&self) -> usize {
        self.atom_task.len()
    }
    /// Whether the bank holds no atom.
    pub fn is_empty(&self) -> bool {
        self.atom_task.is_empty()
    }
    /// Number of frozen atoms (they come first).
    pub fn n_frozen(&self) -> usize {
        self.frozen_keys.size()[0] as usize
    }
    /// Number of trainable atoms (the current task's).
    pub fn n_trainable(&self) -> usize {
        self.keys.size()[0] as usize
    }
    /// The task that created each atom.
    pub fn atom_task(&self) -> &[u32] {
        &self.atom_task
    }
    /// Whether each atom is frozen.
    pub fn frozen_flags(&self) -> Vec<bool> {
        (0..self.len()).map(|i| i < self.n_frozen()).collect()
    }
    /// MoE-LoRA: the task of each expert (router row).
    pub fn expert_task(&self) -> &[u32] {
        &self.expert_task
    }
    /// Number of frozen router rows.
    pub fn n_frozen_router(&self) -> usize {
        self.frozen_router.size()[0] as usize
    }
    /// The task whose atoms are trainable, if any.
    pub fn current_task(&self) -> Option<u32> {
        self.current_task
    }
    /// The task the bank was prepared for early by [`AtomBank::end_task`] (compat B3).
    pub fn pending_task(&self) -> Option<u32> {
        self.pending_task
    }
    /// The bank's config.
    pub fn config(&self) -> &MoramConfig {
        &self.config
    }
    /// The device the atoms live on.
    pub fn device(&self) -> Device {
        self.device
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

    /// What Eq. 5 scores for inputs `x` `(.., d_in)`: `None` for the raw input (the paper), else
    /// the centred or standardised copy ([`ScoreInput`]). Without statistics the raw input is used;
    /// [`AtomBank::needs_score_statistics`] tells the layer to refuse that.
    fn score_input(&self, x: &Tensor) -> Option<Tensor> {
        let (mean, std) = self.score_stats.as_ref()?;
        match self.config.score_input {
            ScoreInput::Raw => None,
            ScoreInput::Centred => Some(x - mean),
            ScoreInput::Standardised => Some((x - mean) / std),
        }
    }

    /// Whether the config scores normalised inputs but no statistics were set yet
    /// ([`AtomBank::set_score_statistics`]).
    pub fn needs_score_statistics(&self) -> bool {
        self.config.score_input != ScoreInput::Raw && self.score_stats.is_none()
    }

    /// The per-feature `(mean, std)` `(d_in,)` the scores are normalised with, when set.
    pub fn score_statistics(&self) -> Option<(&Tensor, &Tensor)> {
        self.score_stats.as_ref().map(|(m, s)| (m, s))
    }

    /// Sets the per-feature `mean` and `std` `(d_in,)` of the inputs ([`ScoreInput`]); both must be
    /// finite, `std` non-negative. Standard deviations below `1e-6` times the largest are raised to
    /// it, so a constant feature cannot blow a score up.
    pub fn set_score_statistics(&mut self, mean: &Tensor, std: &Tensor) -> Result<()> {
        for (what, t) in [("score mean", mean), ("score std", std)] {
            if t.size() != [self.d_in] {
                return Err(Error::Shape { what: what.into(), expected: format!("[{}]", self.d_in), found: t.size() });
            }
        }
        let to_f32 = |t: &Tensor| t.detach().to_device(self.device).to_kind(Kind::Float).contiguous();
        let (mean, std) = (to_f32(mean), to_f32(std));
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
        if !finite(&mean) || !finite(&std) || std.lt(0.0).any().int64_value(&[]) == 1 {
            return Err(Error::State("score statistics must be finite with std >= 0".into()));
        }
        // Relative to the largest deviation, which raising the small ones leaves unchanged: setting
        // what a file stored gives the same values again.
        let floor = (std.max().double_value(&[]) * 1e-6).max(f64::MIN_POSITIVE);
        self.score_stats = Some((mean, std.clamp_min(floor)));
        Ok(())
    }

    fn subspace_mode(&self) -> Option<SubspaceMode> {
        self.config.key_subspace.map(|k| k.mode)
    }

    /// `keys - (keys U) U^T` for keys `(n, d_in)` in [`SubspaceMode::Keys`]: the part outside the
    /// protected subspace. Other modes leave the keys as they are.
    fn project_out(&self, keys: &Tensor) -> Tensor {
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
    fn routing_keys(&self, keys: &Tensor) -> Option<Tensor> {
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

    /// [`SubspaceMode::NoveltyGated`]: for tokens `x` `(.., d_in)` and all keys `(R, d_in)`, the
    /// factor `(.., R)` each atom's routing projection `(P a) . x` is multiplied by, and where an
    /// atom is closed to the token (`rho` below its threshold). The factor `1 / (||P a|| rho)` turns
    /// the projection into `||x|| cos(P a, P x)` (for atoms without a protected subspace, `P = I`
    /// and `rho = 1`: `||x|| cos(a, x)`): every atom is scored by the direction of its key against
    /// the part of the token it may read, so a fresh key competes with trained ones as soon as it
    /// points the right way, whatever the norms. `None` in other modes or while no atom has a
    /// protected subspace.
    fn novelty_gate(&self, x: &Tensor, keys: &Tensor) -> Option<(Tensor, Tensor)> {
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

    /// Grows the protected subspace with one task's inputs (GPM's rule): `moments` is the uncentred
    /// second-moment matrix `sum x x^T` `(d_in, d_in)` of the layer's inputs on that task. The
    /// leading eigenvectors of `P C P` (`P = I - U U^T`) are appended until `U` captures `energy`
    /// of `trace(C)`; none when it already does. Returns the number of directions added.
    pub fn extend_key_basis(&mut self, moments: &Tensor, energy: f64) -> Result<usize> {
        let d = self.d_in;
        if moments.size() != [d, d] {
            return Err(Error::Shape {
                what: "input moments".into(),
                expected: format!("({d}, {d})"),
                found: moments.size(),
            });
        }
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

impl AtomBank {
    /// Marks the trainable atoms as appended early for `task` (restoring compat-B3 state from a file).
    pub(crate) fn set_pending_task(&mut self, task: u32) {
        if self.n_trainable() > 0 {
            self.pending_task = Some(task);
        }
    }
}
