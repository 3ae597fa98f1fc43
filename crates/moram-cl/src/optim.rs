//! Adam / AdamW over the current task's atoms, with global-norm gradient clipping.
//!
//! Written here rather than taken from libtorch's optimiser so that the update rule is visible,
//! matches `torch.optim.Adam`/`AdamW` step for step (bias correction, eps outside the square root),
//! and works on the plain tensors an atom bank hands out.

use crate::config::{OptimizerConfig, OptimizerKind};
use crate::error::Result;
use tch::Tensor;

/// Adam or AdamW state for a fixed list of parameters.
#[derive(Debug)]
pub struct Adam {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: u64,
    config: OptimizerConfig,
}

impl Adam {
    /// A fresh optimiser over `params` (leaf tensors that require grad).
    pub fn new(params: Vec<Tensor>, config: &OptimizerConfig) -> Self {
        let zeros = |p: &Tensor| p.zeros_like().detach();
        Adam {
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            params,
            step: 0,
            config: config.clone(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &[Tensor] {
        &self.params
    }

    /// Parameter elements under optimisation.
    pub fn numel(&self) -> usize {
        self.params.iter().map(|p| p.numel()).sum()
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }

    /// Global L2 norm of all gradients; when `max_norm` is given and exceeded, scales them in place
    /// by `max_norm / (norm + 1e-6)` (`torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> Result<f64> {
        let _guard = tch::no_grad_guard();
        let mut total = 0.0f64;
        for p in &self.params {
            let g = p.grad();
            if g.defined() {
                total += g.to_kind(tch::Kind::Double).square().sum(tch::Kind::Double).double_value(&[]);
            }
        }
        let norm = total.sqrt();
        if let Some(max) = max_norm {
            let coef = max / (norm + 1e-6);
            if coef < 1.0 {
                for p in &self.params {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
        }
        Ok(norm)
    }

    /// One update with learning rate `lr`. Parameters without a gradient are left alone.
    pub fn step(&mut self, lr: f64) {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        let [b1, b2] = self.config.betas;
        let (eps, wd) = (self.config.eps, self.config.weight_decay);
        let bc1 = 1.0 - b1.powi(self.step as i32);
        let bc2 = 1.0 - b2.powi(self.step as i32);
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
            let mut g = p.grad();
            if !g.defined() {
                continue;
            }
            if wd != 0.0 {
                match self.config.kind {
                    OptimizerKind::Adamw => {
                        let _ = p.g_mul_scalar_(1.0 - lr * wd);
                    }
                    OptimizerKind::Adam => g = &g + &*p * wd,
                }
            }
            let _ = m.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
            let _ = v.g_mul_scalar_(b2).g_add_(&(g.square() * (1.0 - b2)));
            let denom = v.sqrt() / bc2.sqrt() + eps;
            let update = &*m / denom * (lr / bc1);
            let _ = p.g_sub_(&update);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleKind;
    use tch::{Device, Kind};

    fn config(kind: OptimizerKind, wd: f64) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            lr: 0.01,
            betas: [0.9, 0.99],
            eps: 1e-8,
            weight_decay: wd,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
        }
    }

    /// Three steps on a quadratic, against the closed-form Adam recurrences in f64.
    #[test]
    fn matches_the_adam_recurrences() {
        for kind in [OptimizerKind::Adamw, OptimizerKind::Adam] {
            let init = [0.5f64, -1.5, 2.0];
            let p = Tensor::from_slice(&init).to_kind(Kind::Double).set_requires_grad(true);
            let mut opt = Adam::new(vec![p.shallow_clone()], &config(kind, 0.1));
            let (mut x, mut m, mut v) = (init.to_vec(), [0.0; 3], [0.0; 3]);
            for t in 1..=3 {
                opt.zero_grad();
                (&p * &p * 1.5).sum(Kind::Double).backward();
                opt.step(0.01);
                for i in 0..3 {
                    let mut g = 3.0 * x[i];
                    if kind == OptimizerKind::Adam {
                        g += 0.1 * x[i];
                    } else {
                        x[i] *= 1.0 - 0.01 * 0.1;
                    }
                    m[i] = 0.9 * m[i] + 0.1 * g;
                    v[i] = 0.99 * v[i] + 0.01 * g * g;
                    let mh = m[i] / (1.0 - 0.9f64.powi(t));
                    let denom = v[i].sqrt() / (1.0 - 0.99f64.powi(t)).sqrt() + 1e-8;
                    x[i] -= 0.01 * mh / denom;
                }
            }
            let got = Vec::<f64>::try_from(&p).unwrap();
            for (a, b) in got.iter().zip(&x) {
                assert!((a - b).abs() < 1e-12, "{kind:?}: {got:?} vs {x:?}");
            }
        }
    }

    #[test]
    fn clipping_scales_to_the_max_norm_and_reports_the_norm() {
        let p = Tensor::zeros([2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Adam::new(vec![p.shallow_clone()], &config(OptimizerKind::Adamw, 0.0));
        (&p * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float).backward();
        let norm = opt.clip_grad_norm(Some(1.0)).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(p.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
        // Below the threshold nothing changes.
        assert!((opt.clip_grad_norm(Some(10.0)).unwrap() - 1.0).abs() < 1e-5);
        let g2 = Vec::<f32>::try_from(p.grad()).unwrap();
        assert_eq!(g, g2);
    }
}
