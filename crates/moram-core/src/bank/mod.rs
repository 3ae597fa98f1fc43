//! [`AtomBank`]: the growing set of rank-1 atoms of one adapted layer.
//!
//! Atom `i` is a key `a_i` (row `i` of `A`, length `d_in`) and a value `b_i` (column `i` of `B`,
//! length `d_out`). Atoms are stored frozen first, then the current task's trainable atoms, in the
//! order both official code bases use. Only the trainable part is ever handed to an optimizer;
//! frozen tensors are plain tensors without gradient, so no optimizer can move them.

use crate::config::{KeyInit, MoramConfig, Routing};
use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

mod parts;
mod route;

pub use route::Routed;

/// The atoms (and, for router-based variants, the router keys) of one adapted layer.
#[derive(Debug)]
pub struct AtomBank {
    pub(crate) d_in: i64,
    pub(crate) d_out: i64,
    pub(crate) config: MoramConfig,
    pub(crate) device: Device,
    /// Frozen keys `(R_f, d_in)` and values `(d_out, R_f)`, f32, no gradient.
    pub(crate) frozen_keys: Tensor,
    pub(crate) frozen_values: Tensor,
    /// Trainable keys `(R_c, d_in)` and values `(d_out, R_c)`, f32 leaves with gradient.
    pub(crate) keys: Tensor,
    pub(crate) values: Tensor,
    /// Router keys (external router: one per atom; MoE-LoRA: one per expert), frozen then
    /// trainable, `(n, d_in)`. Empty for self-activated routing and LoRA.
    pub(crate) frozen_router: Tensor,
    pub(crate) router: Tensor,
    /// Task that created each atom, length `R` (frozen first).
    pub(crate) atom_task: Vec<u32>,
    /// MoE-LoRA: task of each expert (router row), frozen first.
    pub(crate) expert_task: Vec<u32>,
    /// Task whose atoms are trainable now.
    pub(crate) current_task: Option<u32>,
    /// The trainable atoms were appended early by [`AtomBank::end_task`] (compat flag B3) for this task.
    pub(crate) pending_task: Option<u32>,
    /// Orthonormal basis `(d_in, m)` of the input subspace earlier tasks occupy (orthogonal-keys
    /// variant, [`crate::config::KeySubspace`]); `m = 0` when unused.
    pub(crate) key_basis: Tensor,
    /// Columns of `key_basis` that existed when each atom was created (length `R`): the subspace
    /// that atom is kept out of.
    pub(crate) atom_basis: Vec<usize>,
    /// Per-feature mean and standard deviation `(d_in,)` f32 of the inputs the scores are
    /// normalised with ([`ScoreInput`]); `None` until set.
    pub(crate) score_stats: Option<(Tensor, Tensor)>,
    /// Novelty-gated routing: for a basis width `m`, the outside share `rho` a token needs for
    /// atoms created with that basis to act on it, ascending by width.
    pub(crate) novelty_thresholds: Vec<(usize, f64)>,
}

pub(crate) fn empty(rows: i64, cols: i64, device: Device) -> Tensor {
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
pub(crate) fn leaf(t: Tensor) -> Tensor {
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

    /// Replaces the current task's keys with `keys` `(r, d_in)` (e.g. designed from the task's
    /// inputs, InfLoRA), trained further when `train` and fixed otherwise (no gradient: an
    /// optimiser skips them, and they freeze with the task as any key does).
    pub fn set_current_keys(&mut self, keys: &Tensor, train: bool) -> Result<()> {
        if keys.size() != self.keys.size() || self.keys.numel() == 0 {
            return Err(Error::Shape {
                what: "current keys".into(),
                expected: format!("{:?} (the current task's keys)", self.keys.size()),
                found: keys.size(),
            });
        }
        let k = keys.detach().to_device(self.device).to_kind(self.keys.kind()).copy();
        self.keys = if train { leaf(k) } else { k };
        Ok(())
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
}

impl AtomBank {
    /// Marks the trainable atoms as appended early for `task` (restoring compat-B3 state from a file).
    pub(crate) fn set_pending_task(&mut self, task: u32) {
        if self.n_trainable() > 0 {
            self.pending_task = Some(task);
        }
    }
}
