//! TreeLoRA (Qian et al., ICML 2025) as the official TRACE code computes it
//! (`model/Regular/Tree_LoRA.py` with `utils/kd_lora_tree.py`): IncLoRA's adapter (a LoRA per
//! task, earlier ones frozen, outputs summed) and, from the second task on, a term that pulls each
//! layer's new down-projection `A` towards the one of an earlier task, chosen per layer and step
//! by a bandit over a gradient-similarity tree.
//!
//! Per step `s` of `S` (in the task's current epoch): every layer's running mean `G_cur[l]` of its
//! `A` (flattened) grows by `L * A_l / S` (the official `insert_grad` adds the whole stack once per
//! layer, so the mean is scaled by the layer count `L`; kept). Each earlier task `j` has its mean
//! `G_j` from its last epoch. A similarity table `sim[j, l]` (summed negative L1 distances of the
//! choices so far, divided by how often each was chosen, minus the exploration bonus
//! `sqrt(ln(2 S (s + 1) (s + 2))) / sqrt(2 n[j, l] + 1e-5)`, negated, then shifted by its minimum as
//! the official code does) picks a first task from `softmax(sum_l sim)`; the tree's root child
//! holding it scales those tasks' rows by `min(median similarity, 1.5)`; the table is rescaled by
//! its range, and each layer draws its earlier task `p_l` from `softmax(sim[:, l])`. The chosen
//! distances update the table. The loss becomes `loss - r / (r.detach() + 1e-5) * loss.detach() *
//! reg * s / S` with `r = -sum_l <A_l, G_{p_l}[l]>`, `reg` = `method.tree_reg` (0.5, the official
//! scripts'). Its gradient is that of `-loss * reg * s / S * ln|r|`: it grows the magnitude of the
//! new keys' inner product with the chosen earlier means, in the direction it already has (the
//! paper describes a pull towards similar tasks; this is what the code computes). After the task, `G_t = G_cur` joins the earlier means and the tree is rebuilt: a
//! KD-tree over the tasks' mean differences (`G_i - G_{i-1}`), split at each depth `l` (layer) by
//! the median of the tasks' projections on their mean.
//!
//! Where moram departs (`docs/method.md`): the term and the draws happen once per optimiser step
//! with the step's loss, not once per micro-batch; the draws use the run's seeded generator
//! instead of torch's global one; layers of different shapes keep vectors of their own lengths
//! (the official code stacks them and needs equal shapes).

use super::{optional_variants, LayerHooks, MethodDef, RunHooks, TaskRun};
use crate::config::{MethodConfig, RunConfig};
use crate::error::{Error, Result};
use crate::learner::Learner;
use moram_core::{MoramConfig, Routing};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::{Kind, Tensor};

/// The official scripts' `--reg`.
pub const DEFAULT_REG: f64 = 0.5;

/// TreeLoRA.
#[derive(Debug, Clone, Copy)]
pub struct TreeLora;

impl MethodDef for TreeLora {
    fn name(&self) -> &'static str {
        "tree-lora"
    }
    fn summary(&self) -> &'static str {
        "TreeLoRA: IncLoRA with each layer's new keys pulled towards an earlier task's, chosen by a bandit over a gradient-similarity tree"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Sum {};
        let plain = MethodConfig { tree_reg: None, ..method.clone() };
        optional_variants(&plain, layer)
    }
    /// Each finished task's mean key gradient.
    fn memory(&self) -> super::MethodMemory {
        use super::MethodMemory;
        MethodMemory { per_task_copies: 1, ..MethodMemory::default() }
    }
    fn start(&self, config: &RunConfig) -> Result<Box<dyn RunHooks>> {
        let reg = config.method.tree_reg.unwrap_or(DEFAULT_REG);
        if !(reg.is_finite() && reg >= 0.0) {
            return Err(Error::config("method.tree_reg", format!("must be finite and >= 0, found {reg}")));
        }
        Ok(Box::new(TreeLoraHooks::new(reg, config.seed)))
    }
}

/// The current task's keys of every layer, flattened, with graph (the official `loranew_A`).
fn current_keys(learner: &dyn Learner) -> Vec<Tensor> {
    learner
        .moram_layers()
        .iter()
        .filter_map(|(_, m)| m.bank().trainable_tensors().into_iter().next())
        .map(|k| k.reshape([-1]))
        .collect()
}

/// The root of the official `KDTreeNode`, as the search reads it: each child's tasks and median
/// similarity (`None` for a leaf).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeRoot {
    /// Tasks of the left child (projections at or above the median) and its median.
    pub left: (Vec<usize>, Option<f64>),
    /// Tasks of the right child and its median.
    pub right: (Vec<usize>, Option<f64>),
}

/// One node's split of `tasks` at depth `depth` (`grads[i][depth]`: task `i`'s vector for layer
/// `depth`), as `KDTreeNode.build_node`: `None` for a leaf (depth past the layers, one task).
fn split(tasks: &[usize], depth: usize, grads: &[Vec<Tensor>]) -> Option<(Vec<usize>, Vec<usize>, f64)> {
    if tasks.len() <= 1 || depth >= grads.first().map_or(0, Vec::len) {
        return None;
    }
    let rows = Tensor::stack(&tasks.iter().map(|&t| grads[t][depth].shallow_clone()).collect::<Vec<_>>(), 0);
    let mean = rows.mean_dim(0, false, Kind::Float);
    let sims = Vec::<f64>::try_from(rows.mv(&mean).to_kind(Kind::Double)).unwrap_or_default();
    // torch.median: the lower of the two middle values for an even count.
    let mut sorted = sims.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[(sorted.len() - 1) / 2];
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (&t, &s) in tasks.iter().zip(&sims) {
        if s >= median {
            left.push(t);
        } else {
            right.push(t);
        }
    }
    if left.is_empty() || right.is_empty() {
        let half = tasks.len() / 2;
        left = tasks[..half].to_vec();
        right = tasks[half..].to_vec();
    }
    Some((left, right, median))
}

/// The tree's root over the tasks' mean differences `G_i - G_{i-1}` (`end_task`).
pub fn build_root(means: &[Vec<Tensor>]) -> Option<TreeRoot> {
    let diffs: Vec<Vec<Tensor>> = (0..means.len())
        .map(|i| {
            means[i]
                .iter()
                .enumerate()
                .map(|(l, g)| if i == 0 { g.shallow_clone() } else { g - &means[i - 1][l] })
                .collect()
        })
        .collect();
    let tasks: Vec<usize> = (0..means.len()).collect();
    let (left, right, _) = split(&tasks, 0, &diffs)?;
    let child = |t: &[usize]| split(t, 1, &diffs).map(|(_, _, m)| m);
    let (lm, rm) = (child(&left), child(&right));
    Some(TreeRoot { left: (left, lm), right: (right, rm) })
}

/// The term TreeLoRA adds to the loss (with `keys`' graph): `-r / (r.detach() + 1e-5) * loss *
/// tmp_reg`, `r = -sum_l <keys[l], chosen[l]>` (the official `tree_lora_loss` then `get_loss`,
/// subtracted from the loss). `None` without layers.
pub fn term(keys: &[Tensor], chosen: &[Tensor], loss: f64, tmp_reg: f64) -> Option<Tensor> {
    let r = keys.iter().zip(chosen).map(|(k, g)| -(k * g).sum(Kind::Float)).reduce(|a, b| a + b)?;
    let scale = loss * tmp_reg / (r.detach().double_value(&[]) + 1e-5);
    Some(-(r * scale))
}

/// TreeLoRA's state across steps and tasks.
pub struct TreeLoraHooks {
    reg: f64,
    rng: ChaCha8Rng,
    /// Earlier tasks' mean keys per layer (`all_accumulate_grads`).
    means: Vec<Vec<Tensor>>,
    root: Option<TreeRoot>,
    /// This epoch's running mean per layer (`current_grad`).
    current: Vec<Tensor>,
    /// `sim[j][l]` and `chosen[j][l]` over the earlier tasks, this epoch.
    sim: Vec<Vec<f64>>,
    chosen: Vec<Vec<f64>>,
    /// Steps per epoch of this task and the step within it.
    epoch_steps: usize,
    step: usize,
}

impl TreeLoraHooks {
    /// No earlier task yet; draws from a generator seeded with the run's seed.
    pub fn new(reg: f64, seed: u64) -> Self {
        TreeLoraHooks {
            reg,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x7472_6565_6c6f_7261),
            means: Vec::new(),
            root: None,
            current: Vec::new(),
            sim: Vec::new(),
            chosen: Vec::new(),
            epoch_steps: 1,
            step: 0,
        }
    }

    /// The tree's root after the last finished task.
    pub fn root(&self) -> Option<&TreeRoot> {
        self.root.as_ref()
    }

    /// The earlier tasks' mean keys (per task, per layer).
    pub fn means(&self) -> &[Vec<Tensor>] {
        &self.means
    }

    fn file(dir: &Path, task: usize) -> std::path::PathBuf {
        dir.join(format!("tree-lora-task{task}.safetensors"))
    }

    fn new_epoch(&mut self) {
        self.current.clear();
        self.sim = vec![Vec::new(); self.means.len()];
        self.chosen = vec![Vec::new(); self.means.len()];
        self.step = 0;
    }

    /// A draw from `softmax(logits)`.
    fn draw(&mut self, logits: &[f64]) -> usize {
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let weights: Vec<f64> = logits.iter().map(|v| (v - max).exp()).collect();
        let total: f64 = weights.iter().sum();
        let mut u = self.rng.random::<f64>() * total;
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i;
            }
            u -= w;
        }
        weights.len() - 1
    }

    /// `tree_search`: one earlier task per layer.
    fn search(&mut self, layers: usize) -> Vec<usize> {
        let n = self.means.len();
        let rounds = self.epoch_steps as f64;
        let s = self.step as f64;
        let bonus = (2.0 * rounds * (s + 1.0) * (s + 2.0)).ln().max(0.0).sqrt();
        let mut sim: Vec<Vec<f64>> = self
            .sim
            .iter()
            .zip(&self.chosen)
            .map(|(row, counts)| {
                row.iter()
                    .zip(counts)
                    .map(|(&total, &count)| {
                        let mean = if count > 0.0 { total / count } else { total };
                        -(mean - bonus / (2.0 * count + 1e-5).sqrt())
                    })
                    .collect()
            })
            .collect();
        let min = sim.iter().flatten().copied().fold(f64::INFINITY, f64::min);
        for v in sim.iter_mut().flatten() {
            *v += min;
        }
        let totals: Vec<f64> = sim.iter().map(|row| row.iter().sum()).collect();
        let first = self.draw(&totals);
        if let Some(root) = &self.root {
            let (tasks, median) = if root.left.0.contains(&first) { &root.left } else { &root.right };
            let scale = median.unwrap_or(1.0).min(1.5);
            for &t in tasks.iter().filter(|&&t| t < n) {
                sim[t].iter_mut().for_each(|v| *v *= scale);
            }
        }
        let (lo, hi) = sim.iter().flatten().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let range = hi - lo + 1e-5;
        (0..layers)
            .map(|l| {
                let column: Vec<f64> = (0..n).map(|j| sim[j][l] / range).collect();
                let p = self.draw(&column);
                self.chosen[p][l] += 1.0;
                p
            })
            .collect()
    }
}

impl RunHooks for TreeLoraHooks {
    fn before_task(&mut self, run: &mut TaskRun<'_>) -> Result<()> {
        let steps = self.schedule(run).len().max(1);
        let epochs = run.config.training.epochs_for(run.task).unwrap_or(1).max(1);
        self.epoch_steps = (steps / epochs).max(1);
        self.new_epoch();
        LayerHooks.before_task(run)
    }

    fn penalty(&mut self, learner: &dyn Learner, loss: f64) -> Result<Option<Tensor>> {
        if self.step == self.epoch_steps {
            self.new_epoch();
        }
        let keys = current_keys(learner);
        let layers = keys.len();
        // insert_grad: the stack added once per layer (see the module doc).
        {
            let _guard = tch::no_grad_guard();
            let add: Vec<Tensor> =
                keys.iter().map(|k| k.detach() * (layers as f64 / self.epoch_steps as f64)).collect();
            if self.current.is_empty() {
                self.current = add;
            } else {
                for (c, a) in self.current.iter_mut().zip(add) {
                    *c += a;
                }
            }
        }
        let s = self.step as f64;
        self.step += 1;
        if self.means.is_empty() || layers == 0 || self.reg == 0.0 {
            return Ok(None);
        }
        for row in self.sim.iter_mut().chain(self.chosen.iter_mut()) {
            row.resize(layers, 0.0);
        }
        let picks = self.search(layers);
        // update_similarity: the chosen task's L1 distance from this epoch's running mean.
        for (l, &p) in picks.iter().enumerate() {
            let g = self.means[p][l].to_device(self.current[l].device());
            self.sim[p][l] -= (&self.current[l] - g).abs().sum(Kind::Double).double_value(&[]);
        }
        let chosen: Vec<Tensor> =
            picks.iter().zip(&keys).enumerate().map(|(l, (&p, k))| self.means[p][l].to_device(k.device())).collect();
        let tmp_reg = self.reg * s / self.epoch_steps as f64;
        Ok(term(&keys, &chosen, loss, tmp_reg))
    }

    fn after_task(&mut self, run: &mut TaskRun<'_>) -> Result<Option<Vec<(usize, f64)>>> {
        if !self.current.is_empty() {
            self.means.push(self.current.iter().map(|c| c.to_device(tch::Device::Cpu)).collect());
        }
        self.root = build_root(&self.means);
        LayerHooks.after_task(run)
    }

    fn save(&self, dir: &Path, task: usize) -> Result<()> {
        let named: Vec<(String, Tensor)> = self
            .means
            .iter()
            .enumerate()
            .flat_map(|(t, layers)| {
                layers.iter().enumerate().map(move |(l, g)| (format!("mean.{t}.{l}"), g.shallow_clone()))
            })
            .collect();
        super::hooks::save_state(&Self::file(dir, task), &named)
    }

    fn resume(&mut self, dir: &Path, done: usize) -> Result<()> {
        let path = Self::file(dir, done - 1);
        let tensors = super::hooks::load_state(&path, "TreeLoRA")?;
        let mut means: Vec<Vec<(usize, Tensor)>> = (0..done).map(|_| Vec::new()).collect();
        for (name, t) in tensors {
            let mut parts = name.strip_prefix("mean.").unwrap_or("").split('.');
            let (Some(Ok(task)), Some(Ok(layer))) =
                (parts.next().map(str::parse::<usize>), parts.next().map(str::parse::<usize>))
            else {
                return Err(Error::Checkpoint { path: path.clone(), message: format!("unexpected tensor `{name}`") });
            };
            if task >= done {
                return Err(Error::Checkpoint { path: path.clone(), message: format!("`{name}` is past task {done}") });
            }
            means[task].push((layer, t));
        }
        self.means = means
            .into_iter()
            .map(|mut layers| {
                layers.sort_by_key(|(l, _)| *l);
                layers.into_iter().map(|(_, t)| t).collect()
            })
            .collect();
        self.root = build_root(&self.means);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The root splits the tasks' mean differences by their projection on the mean; when every
    /// projection reaches the median (ties), the official fallback halves the list; a child of one
    /// task, or past the last layer, is a leaf without a median.
    #[test]
    fn the_root_splits_as_the_official_kd_tree() {
        let v = |a: f32, b: f32| vec![Tensor::from_slice(&[a, b])];
        // Differences [1, 0], [1, 0], [0, 5]: projections 2/3, 2/3, 25/3; median 2/3 keeps all
        // three on the left, so the halves are taken.
        let root = build_root(&[v(1.0, 0.0), v(2.0, 0.0), v(2.0, 5.0)]).unwrap();
        assert_eq!(root, TreeRoot { left: (vec![0], None), right: (vec![1, 2], None) });
        // Differences [1, 0], [-3, 0]: projections -1 and 3 on the mean [-1, 0]; the lower median
        // -1 again keeps both left, so the halves are taken.
        let root = build_root(&[v(1.0, 0.0), v(-2.0, 0.0)]).unwrap();
        assert_eq!(root, TreeRoot { left: (vec![0], None), right: (vec![1], None) });
        // Two layers of differences 1, 1, 8 (first axis): projections 3.3, 3.3, 26.7, the lower
        // median 3.3 keeps all left, so the halves again; the right child (two tasks, one layer
        // left) splits in turn and records its median.
        let w = |a: f32| vec![Tensor::from_slice(&[a, 0.0]), Tensor::from_slice(&[a, 0.0])];
        let root = build_root(&[w(1.0), w(2.0), w(10.0)]).unwrap();
        assert_eq!(root.left.0, vec![0]);
        assert_eq!(root.right.0, vec![1, 2]);
        assert!(root.right.1.is_some(), "a child of two tasks with a layer left splits again");
        assert!(build_root(&[v(1.0, 0.0)]).is_none(), "one task is a leaf");
    }

    /// Every draw names an earlier task, for every layer, and counts it.
    #[test]
    fn the_search_draws_an_earlier_task_per_layer() {
        let mut hooks = TreeLoraHooks::new(0.5, 1);
        hooks.means =
            (0..3).map(|_| (0..2).map(|_| Tensor::ones([4], (Kind::Float, tch::Device::Cpu))).collect()).collect();
        hooks.epoch_steps = 10;
        hooks.new_epoch();
        for row in hooks.sim.iter_mut().chain(hooks.chosen.iter_mut()) {
            row.resize(2, 0.0);
        }
        for _ in 0..20 {
            let picks = hooks.search(2);
            assert!(picks.len() == 2 && picks.iter().all(|&p| p < 3), "{picks:?}");
        }
        let counted: f64 = hooks.chosen.iter().flatten().sum();
        assert_eq!(counted, 40.0);
    }
}
