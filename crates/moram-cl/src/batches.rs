//! Which training examples each optimiser step of a task uses: the task's own examples in seeded
//! shuffled batches, or, for multi-task training (`mtl`), every task's examples at once.

use crate::config::RunConfig;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Optimiser steps of task `task` over its `n_train` examples, and the examples of each step, in
/// order.
pub fn batch_schedule(config: &RunConfig, task: usize, n_train: usize) -> Vec<Vec<usize>> {
    let t = &config.training;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(task as u64 + 1)));
    let mut epoch = || {
        let mut order: Vec<usize> = (0..n_train).collect();
        order.shuffle(&mut rng);
        order.chunks(t.batch_size).map(<[usize]>::to_vec).collect::<Vec<_>>()
    };
    let mut steps = Vec::new();
    if n_train == 0 {
        return steps;
    }
    match (t.iterations, t.epochs_for(task)) {
        (Some(iters), _) => {
            // X-TAIL: the loader is re-created every epoch (reshuffled, last batch partial).
            while steps.len() < iters {
                steps.extend(epoch());
            }
            steps.truncate(iters);
        }
        (None, Some(epochs)) => {
            for _ in 0..epochs {
                steps.extend(epoch());
            }
        }
        (None, None) => {}
    }
    steps
}

/// Task `task`'s own [`batch_schedule`] as `(task, example)` pairs: what every method but a
/// multi-task one trains on.
pub fn own_schedule(config: &RunConfig, task: usize, n_train: usize) -> Vec<Vec<(usize, usize)>> {
    batch_schedule(config, task, n_train).into_iter().map(|b| b.into_iter().map(|i| (task, i)).collect()).collect()
}

/// Multi-task training (`mtl`, paper Table 10's MTL row): every task's examples (`lens[t]` of
/// task `t`) shuffled together, epoch after epoch, in batches, for as many steps as the tasks'
/// own schedules take together.
pub fn joint_schedule(config: &RunConfig, lens: &[usize]) -> Vec<Vec<(usize, usize)>> {
    let total: usize = (0..lens.len()).map(|t| batch_schedule(config, t, lens[t]).len()).sum();
    let union: Vec<(usize, usize)> = lens.iter().enumerate().flat_map(|(t, &n)| (0..n).map(move |i| (t, i))).collect();
    if union.is_empty() {
        return Vec::new();
    }
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x4D54_4C00_4D54_4C00);
    let mut steps = Vec::with_capacity(total);
    while steps.len() < total {
        let mut order = union.clone();
        order.shuffle(&mut rng);
        steps.extend(order.chunks(config.training.batch_size).map(<[(usize, usize)]>::to_vec));
    }
    steps.truncate(total);
    steps
}

/// The examples of a micro-batch grouped by task, in order of first appearance (one forward pass
/// per task: a learner's loss reads one task's data).
pub fn by_task(chunk: &[(usize, usize)]) -> Vec<(usize, Vec<usize>)> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for &(t, i) in chunk {
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, v)) => v.push(i),
            None => groups.push((t, vec![i])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(method: &str) -> RunConfig {
        let text = format!("seed = 9\n[method]\nname = \"{method}\"\n[training]\niterations = 5\nbatch_size = 4\n");
        RunConfig::from_toml_str(&text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_task_trains_on_its_own_shuffled_examples() {
        let c = config("moram");
        let steps = own_schedule(&c, 1, 6);
        assert_eq!(steps.len(), 5);
        assert!(steps.iter().flatten().all(|&(t, i)| t == 1 && i < 6));
        let plain: Vec<Vec<usize>> = steps.iter().map(|s| s.iter().map(|p| p.1).collect()).collect();
        assert_eq!(plain, batch_schedule(&c, 1, 6));
    }

    #[test]
    fn mtl_trains_once_on_every_task_for_the_whole_budget() {
        let c = config("mtl");
        let steps = joint_schedule(&c, &[10, 6, 3]);
        assert_eq!(steps.len(), 15, "three tasks of 5 steps");
        assert!(steps.iter().all(|s| s.len() == 4 || s.len() == 19 % 4));
        // Each epoch of the union holds every example once.
        let mut first: Vec<(usize, usize)> = steps[..5].iter().flatten().copied().collect();
        first.sort();
        let union: Vec<(usize, usize)> =
            [(0, 10), (1, 6), (2, 3)].iter().flat_map(|&(t, n)| (0..n).map(move |i| (t, i))).collect();
        assert_eq!(first, union);
    }

    #[test]
    fn micro_batches_split_by_task_in_order() {
        let groups = by_task(&[(2, 5), (0, 1), (2, 7), (0, 3), (1, 0)]);
        assert_eq!(groups, vec![(2, vec![5, 7]), (0, vec![1, 3]), (1, vec![0])]);
    }
}
