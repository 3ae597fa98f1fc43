//! [`TaskGate`]: which earlier task a whole sequence belongs to, recognised from a pooled feature
//! of the frozen base model (task-gated MoRAM, a variant not in the paper; `docs/method.md`,
//! "Task-gated atoms").
//!
//! Per-token gates (novelty gating) decide from a token alone whether later atoms may act on it,
//! so tokens a later task shares with earlier ones (the same instruction template, the same kind of
//! text) stay closed to the later task and it cannot learn. The task of a *sequence* is plain from
//! what differs (the question, the option list): the gate decides once per sequence and opens the
//! atoms of every task up to the recognised one, so an earlier task's prompts see exactly the
//! atoms they were evaluated with after their own task, and the current task trains on all of its
//! tokens with every atom, as the paper's layer does.
//!
//! Recognition is linear discriminant analysis on one feature per sequence: the mean over its
//! prompt tokens of the RMS-normalised hidden states entering the first adapted block (those
//! blocks are frozen, so the feature of a prompt never changes while atoms train). Each task adds
//! its mean `mu_t` and its within-task scatter to a shared covariance `Sigma`, shrunk towards its
//! diagonal for the few examples a task gives (`(1 - a) Sigma + a diag(Sigma)`, scale-free per
//! feature); a sequence goes to the task with the largest `f^T Sigma^-1 mu_t - mu_t^T Sigma^-1 mu_t / 2`.

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// Default shrinkage of the shared covariance towards its diagonal.
pub const DEFAULT_SHRINKAGE: f64 = 0.1;

/// Sequence-level task recognition: per-task feature means and a shared within-task covariance.
#[derive(Debug)]
pub struct TaskGate {
    dim: i64,
    shrinkage: f64,
    device: Device,
    /// The task of each class, ascending.
    tasks: Vec<u32>,
    /// Feature mean of each task `(d,)` f64.
    means: Vec<Tensor>,
    /// Sequences each task's mean and scatter came from.
    counts: Vec<u64>,
    /// Summed within-task scatter `sum_t sum_i (f_i - mu_t)(f_i - mu_t)^T` `(d, d)` f64.
    scatter: Tensor,
    /// The discriminant `(weights (d, T), biases (T,))` f32 of the tasks so far.
    classifier: Option<(Tensor, Tensor)>,
}

impl TaskGate {
    /// An empty gate for features of width `dim` on `device`; `shrinkage` in [0, 1].
    pub fn new(dim: usize, shrinkage: f64, device: Device) -> Result<Self> {
        if dim == 0 {
            return Err(Error::State("a task gate needs a feature width of at least 1".into()));
        }
        if !(0.0..=1.0).contains(&shrinkage) {
            return Err(Error::config("task_gate.shrinkage", format!("must lie in [0, 1], found {shrinkage}")));
        }
        let d = dim as i64;
        Ok(TaskGate {
            dim: d,
            shrinkage,
            device,
            tasks: Vec::new(),
            means: Vec::new(),
            counts: Vec::new(),
            scatter: Tensor::zeros([d, d], (Kind::Double, device)),
            classifier: None,
        })
    }

    /// Feature width `d`.
    pub fn dim(&self) -> usize {
        self.dim as usize
    }

    /// The shrinkage towards the diagonal.
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// The tasks the gate recognises, ascending.
    pub fn tasks(&self) -> &[u32] {
        &self.tasks
    }

    /// Sequences each task was fitted on.
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// Adds task `task` from the features `(n, d)` of `n >= 1` of its sequences. Task ids must
    /// increase; features must be finite.
    pub fn add_task(&mut self, task: u32, features: &Tensor) -> Result<()> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dim || size[0] == 0 {
            return Err(Error::Shape {
                what: "task gate features".into(),
                expected: format!("(n >= 1, {})", self.dim),
                found: size,
            });
        }
        if let Some(&last) = self.tasks.last() {
            if task <= last {
                return Err(Error::State(format!("task gate: task ids must increase, task {task} after {last}")));
            }
        }
        let _guard = tch::no_grad_guard();
        let f = features.detach().to_device(self.device).to_kind(Kind::Double);
        if f.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::State(format!("task gate: the features of task {task} are not finite")));
        }
        let mean = f.mean_dim([0].as_slice(), false, Kind::Double);
        let centred = &f - &mean;
        self.scatter += centred.tr().mm(&centred);
        self.tasks.push(task);
        self.means.push(mean);
        self.counts.push(size[0] as u64);
        self.refit()
    }

    /// Recomputes the discriminant from the means and the shared scatter.
    fn refit(&mut self) -> Result<()> {
        let t = self.tasks.len();
        if t == 0 {
            self.classifier = None;
            return Ok(());
        }
        let n: u64 = self.counts.iter().sum();
        // Unbiased pooled covariance; with one sequence per task the scatter is 0 and only the ridge
        // below keeps it invertible (nearest mean under the diagonal's scale).
        let sigma = &self.scatter / (n.saturating_sub(t as u64).max(1) as f64);
        let diag = sigma.diagonal(0, 0, 1);
        // A ridge of 1e-6 of the mean variance keeps constant features from making it singular.
        let ridge = (diag.mean(Kind::Double).double_value(&[]) * 1e-6).max(1e-12);
        let shrunk = &sigma * (1.0 - self.shrinkage) + (diag * self.shrinkage + ridge).diag(0);
        let means = Tensor::stack(&self.means, 0);
        let weights = Tensor::f_linalg_solve(&shrunk, &means.tr(), true)?;
        let biases = (&means * weights.tr()).sum_dim_intlist([1].as_slice(), false, Kind::Double) * -0.5;
        if weights.isfinite().all().int64_value(&[]) == 0 {
            return Err(Error::State("task gate: the discriminant is not finite (degenerate features?)".into()));
        }
        self.classifier = Some((weights.to_kind(Kind::Float), biases.to_kind(Kind::Float)));
        Ok(())
    }

    /// Discriminant scores `(n, T)` f32 of features `(n, d)` against every task (columns in the
    /// order of [`TaskGate::tasks`]). An error while the gate knows no task.
    pub fn scores(&self, features: &Tensor) -> Result<Tensor> {
        let size = features.size();
        if size.len() != 2 || size[1] != self.dim {
            return Err(Error::Shape {
                what: "task gate features".into(),
                expected: format!("(n, {})", self.dim),
                found: size,
            });
        }
        let (w, b) =
            self.classifier.as_ref().ok_or_else(|| Error::State("the task gate has not seen any task yet".into()))?;
        let f = features.detach().to_device(self.device).to_kind(Kind::Float);
        Ok(f.mm(w) + b)
    }

    /// The task `(n,)` i64 each sequence is recognised as, from its features `(n, d)`.
    pub fn recognise(&self, features: &Tensor) -> Result<Tensor> {
        let best = self.scores(features)?.argmax(1, false);
        let ids: Vec<i64> = self.tasks.iter().map(|&t| t as i64).collect();
        Ok(Tensor::from_slice(&ids).to_device(self.device).index_select(0, &best))
    }

    /// The per-task means `(T, d)`, the shared scatter `(d, d)` (both f32) and the counts, for
    /// adapter files.
    pub fn parts(&self) -> (Tensor, Tensor, Vec<u64>) {
        let means = if self.means.is_empty() {
            Tensor::zeros([0, self.dim], (Kind::Float, self.device))
        } else {
            Tensor::stack(&self.means, 0).to_kind(Kind::Float)
        };
        (means, self.scatter.to_kind(Kind::Float), self.counts.clone())
    }

    /// Rebuilds a gate from [`TaskGate::parts`]: `tasks` ascending, `means` `(T, d)`, `scatter`
    /// `(d, d)` (finite, symmetric to 1e-3 of its largest entry), `counts` one per task, each >= 1.
    pub fn from_parts(
        tasks: Vec<u32>,
        means: &Tensor,
        scatter: &Tensor,
        counts: Vec<u64>,
        shrinkage: f64,
        device: Device,
    ) -> Result<Self> {
        let d = scatter.size().first().copied().unwrap_or(0);
        let mut gate = TaskGate::new(d.max(0) as usize, shrinkage, device)?;
        let t = tasks.len() as i64;
        if scatter.size() != [d, d] || means.size() != [t, d] || counts.len() != tasks.len() {
            return Err(Error::Shape {
                what: "task gate".into(),
                expected: format!("means ({t}, d), scatter (d, d), {t} counts"),
                found: [means.size(), scatter.size()].concat(),
            });
        }
        if tasks.windows(2).any(|w| w[0] >= w[1]) || counts.contains(&0) {
            return Err(Error::State("task gate: tasks must be ascending and every count at least 1".into()));
        }
        let scatter = scatter.detach().to_device(device).to_kind(Kind::Double);
        let means = means.detach().to_device(device).to_kind(Kind::Double);
        let finite = |x: &Tensor| x.isfinite().all().int64_value(&[]) == 1;
        let asym = (&scatter - scatter.tr()).abs().max().double_value(&[]);
        let scale = scatter.abs().max().double_value(&[]).max(1e-30);
        if !finite(&scatter) || !finite(&means) || asym > 1e-3 * scale {
            return Err(Error::State("task gate: means and scatter must be finite, the scatter symmetric".into()));
        }
        gate.scatter = scatter;
        gate.means = (0..t).map(|i| means.get(i)).collect();
        gate.tasks = tasks;
        gate.counts = counts;
        gate.refit()?;
        Ok(gate)
    }
}

/// The pooled feature of each sequence `(B, d)` f32: the mean over the tokens `select` marks
/// (`(B, L)`, bool or 0/1) of the hidden states `(B, L, d)`, each token first divided by its root
/// mean square (so no token, e.g. a massive-activation one, dominates the mean). `hidden` may also
/// be one packed row `(1, L, d)` that every row of `select` picks its own tokens from. A row with no
/// selected token gets zeros.
pub fn pooled_features(hidden: &Tensor, select: &Tensor) -> Tensor {
    let h = hidden.detach().to_kind(Kind::Float);
    let rms = h.square().mean_dim([-1].as_slice(), true, Kind::Float).sqrt().clamp_min(1e-12);
    let w = select.detach().to_kind(Kind::Float);
    let sum = w.unsqueeze(1).matmul(&(h / rms)).squeeze_dim(1);
    sum / w.sum_dim_intlist([1].as_slice(), true, Kind::Float).clamp_min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` points around `centre`, standard normal times `spread`, drawn from `seed` by a local
    /// generator (splitmix64 and Box-Muller): libtorch's global generator is shared by the tests
    /// running in parallel threads, so its draws would depend on their interleaving.
    fn cloud(centre: &[f32], n: i64, spread: f64, seed: i64) -> Tensor {
        let mut state = seed as u64;
        let mut uniform = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let d = centre.len();
        let values: Vec<f32> = (0..n as usize * d)
            .map(|i| {
                let (u, v) = (uniform().max(f64::MIN_POSITIVE), uniform());
                let normal = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
                (centre[i % d] as f64 + spread * normal) as f32
            })
            .collect();
        Tensor::from_slice(&values).view([n, d as i64])
    }

    #[test]
    fn recognises_tasks_that_differ_in_one_direction_amid_larger_shared_noise() {
        // Feature 0 carries a large shared variation, feature 3 the task: nearest mean in the raw
        // space would be fooled; the shared covariance discounts feature 0.
        let mut gate = TaskGate::new(4, DEFAULT_SHRINKAGE, Device::Cpu).unwrap();
        let scale = Tensor::from_slice(&[10.0f32, 1.0, 1.0, 0.2]);
        for (task, centre) in [(0u32, [0.0f32, 0.0, 0.0, 0.0]), (1, [0.0, 0.0, 0.0, 1.0]), (2, [0.0, 0.0, 0.0, 2.0])] {
            let f = cloud(&[0.0; 4], 200, 1.0, task as i64) * &scale + Tensor::from_slice(&centre);
            gate.add_task(task, &f).unwrap();
        }
        assert_eq!(gate.tasks(), &[0, 1, 2]);
        for task in 0..3u32 {
            let f = cloud(&[0.0; 4], 100, 1.0, 100 + task as i64) * &scale
                + Tensor::from_slice(&[0.0f32, 0.0, 0.0, task as f32]);
            let right = gate.recognise(&f).unwrap().eq(task as i64).sum(Kind::Int64).int64_value(&[]);
            assert!(right >= 97, "task {task}: {right} of 100 recognised");
        }
    }

    #[test]
    fn one_task_takes_every_sequence_and_bad_input_is_refused() {
        let mut gate = TaskGate::new(3, 0.5, Device::Cpu).unwrap();
        assert!(gate.recognise(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))).is_err());
        gate.add_task(4, &cloud(&[1.0, 2.0, 3.0], 1, 0.0, 1)).unwrap();
        let got = gate.recognise(&cloud(&[-5.0, 0.0, 9.0], 5, 3.0, 2)).unwrap();
        assert_eq!(Vec::<i64>::try_from(got).unwrap(), vec![4; 5]);
        assert!(gate.add_task(4, &cloud(&[0.0; 3], 3, 1.0, 3)).is_err(), "task ids must increase");
        assert!(gate.add_task(5, &cloud(&[0.0; 4], 3, 1.0, 3)).is_err(), "wrong width");
        let nan = Tensor::from_slice(&[f32::NAN, 0.0, 0.0]).unsqueeze(0);
        assert!(gate.add_task(5, &nan).is_err(), "non-finite features");
        assert!(TaskGate::new(3, 1.5, Device::Cpu).is_err());
    }

    #[test]
    fn parts_rebuild_the_same_gate() {
        let mut gate = TaskGate::new(5, 0.2, Device::Cpu).unwrap();
        for t in 0..3u32 {
            let mut centre = [0.0f32; 5];
            centre[t as usize] = 2.0;
            gate.add_task(t, &cloud(&centre, 20, 1.0, t as i64)).unwrap();
        }
        let (means, scatter, counts) = gate.parts();
        let back = TaskGate::from_parts(gate.tasks().to_vec(), &means, &scatter, counts, 0.2, Device::Cpu).unwrap();
        let probe = cloud(&[1.0, 1.0, 0.0, 0.0, 0.0], 50, 1.5, 9);
        let (a, b) = (gate.scores(&probe).unwrap(), back.scores(&probe).unwrap());
        assert!((a - &b).abs().max().double_value(&[]) < 1e-3);
        let bad = TaskGate::from_parts(vec![1, 0, 2], &means, &scatter, vec![20; 3], 0.2, Device::Cpu);
        assert!(bad.is_err(), "tasks out of order");
        let bad = TaskGate::from_parts(vec![0, 1, 2], &means, &scatter.narrow(0, 0, 4), vec![20; 3], 0.2, Device::Cpu);
        assert!(bad.is_err(), "scatter shape");
    }

    #[test]
    fn pooled_features_average_selected_normalised_tokens() {
        // Row 0: tokens of norms 2 and 100 in one direction pool to the unit-RMS direction.
        let h = Tensor::from_slice(&[2.0f32, 0.0, 100.0, 0.0, 0.0, 3.0, 0.0, 4.0]).view([2, 2, 2]);
        let select = Tensor::from_slice(&[1i64, 1, 0, 0]).view([2, 2]);
        let f = Vec::<f32>::try_from(pooled_features(&h, &select).flatten(0, -1)).unwrap();
        let s2 = 2f32.sqrt();
        assert!((f[0] - s2).abs() < 1e-5 && f[1].abs() < 1e-6, "{f:?}");
        assert_eq!(&f[2..], &[0.0, 0.0], "a row with nothing selected pools to zeros");
        // One packed row, two sequences picking their own tokens.
        let packed = h.view([1, 4, 2]);
        let select = Tensor::from_slice(&[1i64, 0, 0, 0, 0, 0, 1, 1]).view([2, 4]);
        let f = Vec::<f32>::try_from(pooled_features(&packed, &select).flatten(0, -1)).unwrap();
        assert!(
            (f[0] - s2).abs() < 1e-5 && f[1].abs() < 1e-6 && f[2].abs() < 1e-6 && (f[3] - s2).abs() < 1e-5,
            "{f:?}"
        );
    }
}
