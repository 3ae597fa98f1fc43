//! How much of a difference between two runs the choice of evaluation examples can explain: a
//! paired bootstrap over the examples behind an accuracy matrix.
//!
//! A run's matrix entry `a[i][j]` is the mean over task `j`'s evaluation examples of their scores
//! after task `i`. One bootstrap draw resamples, for every task `j`, its examples with replacement
//! (the same draw for every row and for both runs, since they score the same examples), recomputes
//! both matrices and the statistic of each. The percentile interval of the differences covers the
//! evaluation-sampling noise of one training run; the variation between training seeds is what
//! `moram study` measures.

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Per-example scores of one run: `scores[row][task][example]`, row `i` = after task `i`.
pub type ExampleScores = Vec<Vec<Vec<f64>>>;

/// A statistic and its 95% percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// The statistic on the examples as they are.
    pub value: f64,
    /// 2.5th percentile of the bootstrap draws.
    pub low: f64,
    /// 97.5th percentile of the bootstrap draws.
    pub high: f64,
}

impl Interval {
    /// Whether the interval excludes 0.
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }
}

/// The matrix of example means (`a[row][task]`).
pub fn matrix(scores: &ExampleScores) -> Vec<Vec<f64>> {
    scores.iter().map(|row| row.iter().map(|e| e.iter().sum::<f64>() / e.len().max(1) as f64).collect()).collect()
}

fn check(scores: &ExampleScores, what: &str) -> Result<Vec<usize>> {
    let n = scores.len();
    let first = scores.first().ok_or_else(|| Error::metric("bootstrap", format!("{what}: no row")))?;
    if scores.iter().any(|r| r.len() != n) {
        return Err(Error::metric("bootstrap", format!("{what}: rows of {n} tasks expected")));
    }
    let sizes: Vec<usize> = first.iter().map(Vec::len).collect();
    if sizes.contains(&0) || scores.iter().any(|r| r.iter().map(Vec::len).ne(sizes.iter().copied())) {
        return Err(Error::metric(
            "bootstrap",
            format!("{what}: every row must score the same, non-empty examples of each task"),
        ));
    }
    Ok(sizes)
}

/// `stat(b) - stat(a)` with its 95% interval over `draws` paired resamples of the examples
/// (seeded, so a report is reproducible). `a` and `b` must score the same examples.
pub fn paired_difference(
    a: &ExampleScores,
    b: &ExampleScores,
    stat: impl Fn(&[Vec<f64>]) -> Result<f64>,
    draws: usize,
    seed: u64,
) -> Result<Interval> {
    let sizes = check(a, "first run")?;
    if check(b, "second run")? != sizes {
        return Err(Error::metric("bootstrap", "the two runs scored different numbers of examples".to_string()));
    }
    let value = stat(&matrix(b))? - stat(&matrix(a))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut diffs = Vec::with_capacity(draws);
    for _ in 0..draws {
        let picks: Vec<Vec<usize>> = sizes.iter().map(|&n| (0..n).map(|_| rng.random_range(0..n)).collect()).collect();
        let resample = |s: &ExampleScores| -> Vec<Vec<f64>> {
            s.iter()
                .map(|row| {
                    row.iter().zip(&picks).map(|(e, p)| p.iter().map(|&k| e[k]).sum::<f64>() / p.len() as f64).collect()
                })
                .collect()
        };
        diffs.push(stat(&resample(b))? - stat(&resample(a))?);
    }
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((q * (diffs.len() - 1) as f64).round() as usize).min(diffs.len() - 1)];
    Ok(Interval { value, low: at(0.025), high: at(0.975) })
}

/// One run's statistic with its 95% interval (the difference from a run that scores 0 everywhere).
pub fn interval(
    a: &ExampleScores,
    stat: impl Fn(&[Vec<f64>]) -> Result<f64>,
    draws: usize,
    seed: u64,
) -> Result<Interval> {
    let zero: ExampleScores = a.iter().map(|r| r.iter().map(|e| vec![0.0; e.len()]).collect()).collect();
    let zero_stat = stat(&matrix(&zero))?;
    let d = paired_difference(&zero, a, &stat, draws, seed)?;
    Ok(Interval { value: d.value + zero_stat, low: d.low + zero_stat, high: d.high + zero_stat })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[&[&[f64]]]) -> ExampleScores {
        values.iter().map(|r| r.iter().map(|e| e.to_vec()).collect()).collect()
    }

    fn op(a: &[Vec<f64>]) -> Result<f64> {
        Ok(crate::metrics::trace_summary(a)?.op)
    }

    #[test]
    fn identical_runs_differ_by_exactly_zero_and_a_clear_gap_excludes_it() {
        let a = run(&[&[&[100.0, 0.0, 100.0, 100.0], &[0.0, 0.0]], &[&[0.0, 100.0, 0.0, 0.0], &[100.0, 100.0]]]);
        let d = paired_difference(&a, &a, op, 500, 1).unwrap();
        assert_eq!((d.value, d.low, d.high), (0.0, 0.0, 0.0), "paired: the same draw for both runs");
        // b scores every example of every task 100 after the last task: OP 100 against a's 62.5.
        let b = run(&[&[&[100.0; 4], &[100.0; 2]], &[&[100.0; 4], &[100.0; 2]]]);
        let d = paired_difference(&a, &b, op, 500, 1).unwrap();
        assert!((d.value - 37.5).abs() < 1e-9 && d.excludes_zero() && d.low <= d.value && d.value <= d.high, "{d:?}");
        // The interval of one run's OP contains its value and stays within the score range.
        let i = interval(&a, op, 500, 2).unwrap();
        assert!((i.value - 62.5).abs() < 1e-9 && i.low >= 0.0 && i.high <= 100.0 && i.low < i.high, "{i:?}");
        assert_eq!(interval(&a, op, 500, 2).unwrap(), i, "seeded");
    }

    #[test]
    fn mismatched_examples_are_refused() {
        let a = run(&[&[&[1.0, 2.0]]]);
        let b = run(&[&[&[1.0]]]);
        assert!(paired_difference(&a, &b, op, 10, 1).unwrap_err().to_string().contains("different numbers"));
        let ragged = run(&[&[&[1.0], &[]], &[&[1.0], &[2.0]]]);
        assert!(interval(&ragged, op, 10, 1).is_err());
    }
}
