//! What the atoms do: per-layer activation statistics of every task's data under the current
//! adapter (the data behind paper Figs. 5, 8 and 10).

use crate::error::Result;
use crate::learner::Learner;
use moram_core::{ActivationStats, StatsMode};

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
pub fn activation_stats(learner: &mut impl Learner, max_examples: usize, micro: usize) -> Result<Vec<Vec<LayerStats>>> {
    for (_, m) in learner.moram_layers_mut() {
        m.set_training(false);
    }
    let _guard = tch::no_grad_guard();
    let n_tasks = learner.task_names().len();
    let mut out = Vec::with_capacity(n_tasks);
    for task in 0..n_tasks {
        for (_, m) in learner.moram_layers() {
            m.start_stats(StatsMode::AsUsed);
        }
        let n = learner.train_len(task).min(max_examples);
        let idx: Vec<usize> = (0..n).collect();
        for chunk in idx.chunks(micro.max(1)) {
            let _ = learner.loss(task, chunk)?;
        }
        let mut layers = Vec::new();
        for (path, m) in learner.moram_layers() {
            if let Some(stats) = m.take_stats() {
                layers.push(LayerStats { layer: path, atom_task: m.bank().atom_task().to_vec(), stats });
            }
        }
        out.push(layers);
    }
    Ok(out)
}
