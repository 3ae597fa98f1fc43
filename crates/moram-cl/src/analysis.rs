//! What the atoms do: per-layer activation statistics of every task's data under the current
//! adapter (the data behind paper Figs. 5, 8 and 10).

use crate::error::Result;
use crate::learner::Learner;
use moram_core::{ActivationStats, StatsMode};
use serde::{Deserialize, Serialize};

/// Statistics of one layer on one task's data.
#[derive(Debug, Clone)]
pub struct LayerStats {
    /// Module path.
    pub layer: String,
    /// Task that created each atom of the layer.
    pub atom_task: Vec<u32>,
    /// The recorded statistics (weights as inference uses them: eval mode, gate on).
    pub stats: ActivationStats,
}

/// For each task, the statistics of every MoRAM layer over (up to `max_examples`) of its training
/// examples, in eval mode, in micro-batches of `micro`. Outer index: task; inner: layer.
pub fn activation_stats(
    learner: &mut (impl Learner + ?Sized),
    max_examples: usize,
    micro: usize,
) -> Result<Vec<Vec<LayerStats>>> {
    let n_tasks = learner.task_names().len();
    activation_stats_of(learner, n_tasks, max_examples, micro)
}

/// [`activation_stats`] on the first `tasks` tasks only.
pub fn activation_stats_of(
    learner: &mut (impl Learner + ?Sized),
    tasks: usize,
    max_examples: usize,
    micro: usize,
) -> Result<Vec<Vec<LayerStats>>> {
    for (_, m) in learner.moram_layers_mut() {
        m.set_training(false);
    }
    let mut out = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let n = learner.train_len(task).min(max_examples);
        out.push(task_stats(learner, task, n, micro, || {})?);
    }
    Ok(out)
}

/// Every layer's statistics (weights as used) on the first `n` training examples of `task`, in
/// passes of `micro`; `done` is called after each pass.
pub fn task_stats(
    learner: &mut (impl Learner + ?Sized),
    task: usize,
    n: usize,
    micro: usize,
    done: impl FnMut(),
) -> Result<Vec<LayerStats>> {
    for (_, m) in learner.moram_layers() {
        m.start_stats(StatsMode::AsUsed);
    }
    forward_examples(learner, task, n, micro, done)?;
    let mut layers = Vec::new();
    for (path, m) in learner.moram_layers() {
        if let Some(stats) = m.take_stats() {
            layers.push(LayerStats { layer: path, atom_task: m.bank().atom_task().to_vec(), stats });
        }
    }
    Ok(layers)
}

/// Runs the first `n` training examples of `task` through the learner's loss without gradients,
/// `micro` per forward pass (1: no padding), for what the layers record on the way; `done` is
/// called after each pass (progress bars).
pub fn forward_examples(
    learner: &mut (impl Learner + ?Sized),
    task: usize,
    n: usize,
    micro: usize,
    mut done: impl FnMut(),
) -> Result<()> {
    let _guard = tch::no_grad_guard();
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(micro.max(1)) {
        let _ = learner.loss(task, chunk)?;
        done();
    }
    Ok(())
}

/// Routing diagnostics of one adapted layer after a task (`docs/method.md`, "Routing leakage").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRouting {
    /// Module path.
    pub layer: String,
    /// `weight_share[i][j]`: mean, over the tokens of task `i`'s data, of the summed inference
    /// weight of the atoms task `j` created (rows sum to at most 1: the gate may drop weight).
    pub weight_share: Vec<Vec<f64>>,
    /// `own_top1[i]`: share of task `i`'s tokens whose largest weight is on an atom of task `i`.
    pub own_top1: Vec<f64>,
    /// `key_norm[j]`: mean L2 norm of task `j`'s keys (`None` when pruning removed them all).
    pub key_norm: Vec<Option<f64>>,
    /// `open_share[i]`: share of task `i`'s tokens its own atoms are open to (not closed by a
    /// novelty or task gate; 1 without a gate), mean over its atoms: how much of its data task `i`
    /// could change at all (`docs/method.md`, "Plasticity diagnostics"). Empty in files written
    /// before it existed.
    #[serde(default)]
    pub open_share: Vec<f64>,
}

/// What the atoms of each task do on each task's data, after training the first `tasks` tasks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingDiagnostics {
    /// Tasks trained so far (data and atoms of tasks `0..tasks`).
    pub tasks: usize,
    /// Training examples of each task the statistics were gathered on.
    pub examples: Vec<usize>,
    /// `leakage[i]`: weight that atoms of tasks after `i` take on task `i`'s tokens, averaged over
    /// layers (`sum_{j > i} weight_share[i][j]`); 0 for the last task.
    pub leakage: Vec<f64>,
    /// Layer mean of [`LayerRouting::weight_share`].
    pub weight_share: Vec<Vec<f64>>,
    /// Layer mean of [`LayerRouting::own_top1`].
    pub own_top1: Vec<f64>,
    /// Layer mean of [`LayerRouting::key_norm`] (over layers that have atoms of the task).
    pub key_norm: Vec<Option<f64>>,
    /// Layer mean of [`LayerRouting::open_share`] (empty in older files).
    #[serde(default)]
    pub open_share: Vec<f64>,
    /// Every layer.
    pub layers: Vec<LayerRouting>,
}

impl RoutingDiagnostics {
    /// Checks that every per-task vector has `tasks` entries and every matrix `tasks x tasks`
    /// (what readers index by), for diagnostics read from a file; `max_tasks` is the length of
    /// the run's task list. The message names the first field that is off.
    pub fn check_shapes(&self, max_tasks: usize) -> std::result::Result<(), String> {
        let n = self.tasks;
        if n > max_tasks {
            return Err(format!("routing covers {n} tasks, the run has {max_tasks}"));
        }
        let square = |name: &str, m: &[Vec<f64>]| {
            if m.len() != n || m.iter().any(|r| r.len() != n) {
                Err(format!("routing `{name}` is not {n} x {n}"))
            } else {
                Ok(())
            }
        };
        let len = |name: &str, l: usize| {
            if l == n {
                Ok(())
            } else {
                Err(format!("routing `{name}` has {l} entries, not {n}"))
            }
        };
        len("examples", self.examples.len())?;
        len("leakage", self.leakage.len())?;
        len("own_top1", self.own_top1.len())?;
        len("key_norm", self.key_norm.len())?;
        if !self.open_share.is_empty() {
            len("open_share", self.open_share.len())?;
        }
        square("weight_share", &self.weight_share)?;
        for l in &self.layers {
            square(&format!("layers[{}].weight_share", l.layer), &l.weight_share)?;
            len(&format!("layers[{}].own_top1", l.layer), l.own_top1.len())?;
            len(&format!("layers[{}].key_norm", l.layer), l.key_norm.len())?;
            if !l.open_share.is_empty() {
                len(&format!("layers[{}].open_share", l.layer), l.open_share.len())?;
            }
        }
        Ok(())
    }

    /// Mean leakage over the earlier tasks (`0..tasks-1`); 0 after the first task.
    pub fn mean_leakage(&self) -> f64 {
        let earlier = &self.leakage[..self.tasks.saturating_sub(1)];
        if earlier.is_empty() {
            0.0
        } else {
            earlier.iter().fold(0.0, |a, b| a + b) / earlier.len() as f64
        }
    }
}

/// Whether routing diagnostics mean anything for this layer config: the weights form a
/// distribution over atoms (self-activated, external router, MoE-LoRA), not all ones (LoRA, O-LoRA).
pub fn has_routing(config: &moram_core::MoramConfig) -> bool {
    !matches!(config.routing, moram_core::Routing::Lora {} | moram_core::Routing::Sum {})
}

/// Routing diagnostics on up to `max_examples` training examples of each of the first `tasks`
/// tasks, one example per forward pass (no padding tokens enter the statistics), in eval mode
/// with the inference weights (gate on). `None` when the layers have no routing
/// ([`has_routing`]) or no atoms.
pub fn routing_diagnostics(
    learner: &mut (impl Learner + ?Sized),
    tasks: usize,
    max_examples: usize,
) -> Result<Option<RoutingDiagnostics>> {
    let routed =
        learner.moram_layers().first().is_some_and(|(_, m)| has_routing(m.bank().config()) && !m.bank().is_empty());
    if !routed || tasks == 0 || max_examples == 0 {
        return Ok(None);
    }
    let key_norm =
        learner.moram_layers().iter().map(|(_, m)| key_norms(m.bank(), tasks)).collect::<Result<Vec<_>>>()?;
    // One example per forward pass: no padding tokens enter the statistics.
    let per_task = activation_stats_of(learner, tasks, max_examples, 1)?;
    let examples = (0..tasks).map(|t| learner.train_len(t).min(max_examples)).collect();
    let mut layers = Vec::new();
    for (l, norms) in key_norm.into_iter().enumerate() {
        let mut weight_share = vec![vec![0.0; tasks]; tasks];
        let mut own_top1 = vec![0.0; tasks];
        let mut open_share = vec![0.0; tasks];
        for (i, layers_i) in per_task.iter().enumerate() {
            let LayerStats { atom_task, stats, .. } = &layers_i[l];
            let tokens = stats.tokens.max(1) as f64;
            let mut own = 0usize;
            for (a, &t) in atom_task.iter().enumerate() {
                let t = t as usize;
                if t < tasks {
                    weight_share[i][t] += stats.mass.get(a).copied().unwrap_or(0.0) / tokens;
                    if t == i {
                        own_top1[i] += stats.top1.get(a).copied().unwrap_or(0) as f64 / tokens;
                        open_share[i] += stats.open.get(a).copied().unwrap_or(0) as f64 / tokens;
                        own += 1;
                    }
                }
            }
            open_share[i] /= own.max(1) as f64;
        }
        let layer = per_task[0][l].layer.clone();
        layers.push(LayerRouting { layer, weight_share, own_top1, key_norm: norms, open_share });
    }
    let n_layers = layers.len().max(1) as f64;
    let mut weight_share = vec![vec![0.0; tasks]; tasks];
    let mut own_top1 = vec![0.0; tasks];
    let mut open_share = vec![0.0; tasks];
    let mut norm_sum = vec![(0.0, 0usize); tasks];
    for layer in &layers {
        for i in 0..tasks {
            for (acc, v) in weight_share[i].iter_mut().zip(&layer.weight_share[i]) {
                *acc += v / n_layers;
            }
            own_top1[i] += layer.own_top1[i] / n_layers;
            open_share[i] += layer.open_share[i] / n_layers;
            if let Some(n) = layer.key_norm[i] {
                norm_sum[i].0 += n;
                norm_sum[i].1 += 1;
            }
        }
    }
    let key_norm = norm_sum.iter().map(|&(s, c)| (c > 0).then(|| s / c as f64)).collect();
    let leakage = (0..tasks).map(|i| weight_share[i][i + 1..].iter().fold(0.0, |a, b| a + b)).collect();
    Ok(Some(RoutingDiagnostics { tasks, examples, leakage, weight_share, own_top1, key_norm, open_share, layers }))
}

/// Mean key norm of each task's atoms `0..tasks` in `bank`.
fn key_norms(bank: &moram_core::AtomBank, tasks: usize) -> Result<Vec<Option<f64>>> {
    let keys = bank.keys_tensor().detach();
    if keys.numel() == 0 {
        return Ok(vec![None; tasks]);
    }
    let norms = Vec::<f64>::try_from(
        keys.norm_scalaropt_dim(2, [1].as_slice(), false).to_kind(tch::Kind::Double).to_device(tch::Device::Cpu),
    )?;
    let mut sums = vec![(0.0, 0usize); tasks];
    for (&t, n) in bank.atom_task().iter().zip(norms) {
        if let Some(s) = sums.get_mut(t as usize) {
            s.0 += n;
            s.1 += 1;
        }
    }
    Ok(sums.into_iter().map(|(s, c)| (c > 0).then(|| s / c as f64)).collect())
}

/// Atom and parameter counts around a pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCounts {
    /// Atoms before.
    pub atoms_before: usize,
    /// Atoms after.
    pub atoms_after: usize,
    /// Adapter parameters before.
    pub parameters_before: usize,
    /// Adapter parameters after.
    pub parameters_after: usize,
}

/// Post-pruning (`docs/protocol.md` 2): in every layer, keeps the atoms of `scope` that carry
/// `share` of their activation mass in `stats` (one [`LayerStats`] list per task, each in the
/// learner's layer order; the tasks' statistics are merged), and replaces the banks. The one pruning
/// path of the runner (after each task) and of `moram prune` (after a run).
pub fn prune(
    learner: &mut (impl Learner + ?Sized),
    stats: &[Vec<LayerStats>],
    share: f64,
    scope: moram_core::PruneScope,
) -> Result<PruneCounts> {
    let mut counts = PruneCounts { atoms_before: 0, atoms_after: 0, parameters_before: 0, parameters_after: 0 };
    for (i, (path, m)) in learner.moram_layers_mut().into_iter().enumerate() {
        let mut recorded = stats.iter().filter_map(|task| task.get(i)).filter(|l| l.layer == path);
        let Some(first) = recorded.next() else {
            return Err(crate::error::Error::task(&path, "has no activation statistics to prune with"));
        };
        let mut merged = first.stats.clone();
        for l in recorded {
            merged.merge(&l.stats)?;
        }
        let plan = moram_core::plan_pruning(m.bank(), &merged, share, scope)
            .map_err(|e| crate::error::Error::layer(&path, e))?;
        counts.atoms_before += m.bank().len();
        counts.parameters_before += m.bank().parameter_count();
        let pruned = m.bank().prune(&plan)?;
        counts.atoms_after += pruned.len();
        counts.parameters_after += pruned.parameter_count();
        m.replace_bank(pruned)?;
    }
    Ok(counts)
}

/// What `moram viz` draws about the atoms (paper Figs. 5, 8, 9), from [`activation_stats`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtomSummary {
    /// `activation_ratio[task][atom]`: share of the task's tokens giving the atom a non-zero
    /// weight, averaged over layers (atoms in bank order; the smallest bank's count).
    pub activation_ratio: Vec<Vec<f64>>,
    /// Per layer: the cumulative share of the activation mass over all tasks' data, atoms sorted by
    /// descending mass.
    pub cumulative_mass: Vec<Vec<f64>>,
    /// Per layer: the atoms needed for `share` of the mass.
    pub atoms_for_share: Vec<f64>,
    /// The share used.
    pub share: f64,
    /// Layer names.
    pub layers: Vec<String>,
}

/// Summarises per-task, per-layer statistics into [`AtomSummary`].
pub fn atom_summary(stats: &[Vec<LayerStats>], share: f64) -> AtomSummary {
    let n_atoms = stats.iter().flatten().map(|l| l.stats.mass.len()).min().unwrap_or(0);
    let activation_ratio = stats
        .iter()
        .map(|layers| {
            (0..n_atoms)
                .map(|a| layers.iter().map(|l| l.stats.activation_ratio()[a]).sum::<f64>() / layers.len().max(1) as f64)
                .collect()
        })
        .collect();
    let n_layers = stats.first().map_or(0, Vec::len);
    let (mut cumulative_mass, mut atoms_for_share) = (Vec::new(), Vec::new());
    for l in 0..n_layers {
        let mut mass = vec![0.0; stats[0][l].stats.mass.len()];
        for task in stats {
            for (m, x) in mass.iter_mut().zip(&task[l].stats.mass) {
                *m += x;
            }
        }
        atoms_for_share.push(moram_core::atoms_for_share(&mass, share) as f64);
        let total: f64 = mass.iter().sum();
        mass.sort_by(|a, b| b.total_cmp(a));
        let mut acc = 0.0;
        cumulative_mass.push(
            mass.iter()
                .map(|m| {
                    acc += m;
                    if total > 0.0 {
                        acc / total
                    } else {
                        0.0
                    }
                })
                .collect(),
        );
    }
    let layers = stats.first().map(|l| l.iter().map(|s| s.layer.clone()).collect()).unwrap_or_default();
    AtomSummary { activation_ratio, cumulative_mass, atoms_for_share, share, layers }
}
