//! Learning-rate schedules, evaluated per optimiser step.

use crate::config::ScheduleKind;

/// The learning rate at step `step` (0-based) of `total` steps.
///
/// Cosine follows X-TAIL's `cosine_lr`: `base * (step + 1) / warmup` during warm-up, then
/// `0.5 * (1 + cos(pi * e / (total - warmup))) * base` with `e = step - warmup`, so the first step
/// after warm-up uses the base rate and the rate never reaches exactly 0.
pub fn learning_rate(kind: ScheduleKind, base: f64, step: usize, total: usize, warmup: usize) -> f64 {
    match kind {
        ScheduleKind::Constant => base,
        ScheduleKind::Cosine => {
            if step < warmup {
                base * (step + 1) as f64 / warmup as f64
            } else {
                let e = (step - warmup) as f64;
                let span = total.saturating_sub(warmup).max(1) as f64;
                0.5 * (1.0 + (std::f64::consts::PI * e / span).cos()) * base
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_matches_the_xtail_schedule() {
        // Protocol 3.8: first step 5e-4, last about 4.9e-9 over 500 steps without warm-up.
        let lr = |s| learning_rate(ScheduleKind::Cosine, 5e-4, s, 500, 0);
        assert_eq!(lr(0), 5e-4);
        assert!((lr(499) - 4.934e-9).abs() < 1e-11, "{}", lr(499));
        assert!((lr(250) - 2.5e-4).abs() < 1e-12);
        // Warm-up is linear from base/W.
        let w = |s| learning_rate(ScheduleKind::Cosine, 1.0, s, 110, 10);
        assert_eq!(w(0), 0.1);
        assert_eq!(w(9), 1.0);
        assert_eq!(w(10), 1.0);
        assert!((w(60) - 0.5).abs() < 1e-12);
        assert_eq!(learning_rate(ScheduleKind::Constant, 3e-4, 77, 100, 0), 3e-4);
    }
}
