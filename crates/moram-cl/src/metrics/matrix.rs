//! Sequence-level metrics from the accuracy matrix.
//!
//! Convention everywhere in moram: `a[i][j]` is the score on task `j` after training task `i`
//! (rows: training progress; columns: evaluated task). Every entry is filled, future tasks
//! included, so Transfer can be computed. Scores are on a 0-100 scale.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Reads a number that JSON wrote as `null` (serde_json writes NaN so) back as NaN.
pub fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// X-TAIL summary (protocol 3.10).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct XtailSummary {
    /// Mean over columns `j >= 1` of the mean of the entries above the diagonal (NaN when no
    /// column keeps an entry).
    #[serde(deserialize_with = "nan_if_null")]
    pub transfer: f64,
    /// Mean over columns of the column means (all rows).
    pub average: f64,
    /// Mean of the last row.
    pub last: f64,
}

/// TRACE summary (protocol 4.8).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// Overall performance: mean of the last row (paper Eq. 9).
    pub op: f64,
    /// Paper Eq. 10: `(1/(N-1)) sum_{j<N-1} (a[j][j] - a[N-1][j])`, positive when forgetting.
    pub bwt_paper: f64,
    /// Official `collect_results.py`: `(1/N) sum_j min(a[N-1][j] - a[j][j], 0)`, <= 0.
    pub bwt_official: f64,
}

fn check(a: &[Vec<f64>], metric: &str) -> Result<usize> {
    let n = a.len();
    if n == 0 {
        return Err(Error::metric(metric, "the accuracy matrix is empty"));
    }
    if let Some((i, row)) = a.iter().enumerate().find(|(_, r)| r.len() != n) {
        return Err(Error::metric(metric, format!("row {i} has {} entries, expected {n} (square matrix)", row.len())));
    }
    Ok(n)
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, c) = v.into_iter().fold((0.0, 0usize), |(s, c), x| (s + x, c + 1));
    (c > 0).then(|| s / c as f64)
}

/// Transfer, Average and Last exactly as the official X-TAIL code computes them: the strict upper
/// triangle with entries equal to 0 masked out (`np.ma.masked_equal`), per-column means over what is
/// left, then the mean over the columns that kept at least one entry. An exact 0% accuracy above the
/// diagonal is therefore silently dropped.
pub fn xtail_official(a: &[Vec<f64>]) -> Result<XtailSummary> {
    let n = check(a, "xtail_official")?;
    let transfer = mean((1..n).filter_map(|j| mean((0..j).map(|i| a[i][j]).filter(|&x| x != 0.0)))).unwrap_or(f64::NAN);
    Ok(XtailSummary { transfer, average: column_average(a, n), last: mean(a[n - 1].iter().copied()).unwrap_or(0.0) })
}

/// The same summary without the zero masking: Transfer averages every entry above the diagonal.
/// Differs from [`xtail_official`] only when some pre-learning accuracy is exactly 0.
pub fn xtail_clean(a: &[Vec<f64>]) -> Result<XtailSummary> {
    let n = check(a, "xtail_clean")?;
    let transfer = mean((1..n).filter_map(|j| mean((0..j).map(|i| a[i][j])))).unwrap_or(f64::NAN);
    Ok(XtailSummary { transfer, average: column_average(a, n), last: mean(a[n - 1].iter().copied()).unwrap_or(0.0) })
}

fn column_average(a: &[Vec<f64>], n: usize) -> f64 {
    mean((0..n).map(|j| mean((0..n).map(|i| a[i][j])).unwrap_or(0.0))).unwrap_or(0.0)
}

/// OP and both BWT conventions. Only the diagonal and the last row are read (TRACE fills `j <= i`).
pub fn trace_summary(a: &[Vec<f64>]) -> Result<TraceSummary> {
    let n = check(a, "trace_summary")?;
    let last = &a[n - 1];
    let op = mean(last.iter().copied()).unwrap_or(0.0);
    let bwt_paper = if n > 1 { (0..n - 1).map(|j| a[j][j] - last[j]).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    let bwt_official = (0..n).map(|j| (last[j] - a[j][j]).min(0.0)).sum::<f64>() / n as f64;
    Ok(TraceSummary { op, bwt_paper, bwt_official })
}

/// Forward transfer (Lopez-Paz & Ranzato): `(1/(N-1)) sum_{j>=1} (a[j-1][j] - baseline[j])`, where
/// `baseline[j]` is the score on task `j` before any training (e.g. the zero-shot model).
pub fn fwt(a: &[Vec<f64>], baseline: &[f64]) -> Result<f64> {
    let n = check(a, "fwt")?;
    if baseline.len() != n {
        return Err(Error::metric("fwt", format!("baseline has {} entries, expected {n}", baseline.len())));
    }
    Ok(mean((1..n).map(|j| a[j - 1][j] - baseline[j])).unwrap_or(0.0))
}

/// Average forgetting (Chaudhry et al.): for each task `j < N-1`, the best score it ever had after
/// being learned (`max_{j <= l < N-1} a[l][j]`) minus its final score; averaged over those tasks.
pub fn forgetting(a: &[Vec<f64>]) -> Result<f64> {
    let n = check(a, "forgetting")?;
    Ok(mean((0..n.saturating_sub(1)).map(|j| {
        let best = (j..n - 1).map(|l| a[l][j]).fold(f64::NEG_INFINITY, f64::max);
        best - a[n - 1][j]
    }))
    .unwrap_or(0.0))
}

/// Tasks learned to fewer points than this do not count for [`worst_next_task_retention`]: a task
/// learned to 3 points that loses them says nothing about forgetting.
pub const RETENTION_MIN_SCORE: f64 = 10.0;

/// The smallest share of its score any task keeps right after the next task is trained,
/// `a[j+1][j] / a[j][j]` over tasks `j < N-1` learned to at least [`RETENTION_MIN_SCORE`]; `None`
/// when no task qualifies.
pub fn worst_next_task_retention(a: &[Vec<f64>]) -> Result<Option<f64>> {
    let n = check(a, "worst_next_task_retention")?;
    Ok((0..n.saturating_sub(1))
        .filter(|&j| a[j][j] >= RETENTION_MIN_SCORE)
        .map(|j| a[j + 1][j] / a[j][j])
        .min_by(f64::total_cmp))
}

/// Mean of the diagonal: each task's score right after it was trained (how well the sequence is
/// learned, before any forgetting).
pub fn learning(a: &[Vec<f64>]) -> Result<f64> {
    let n = check(a, "learning")?;
    Ok(mean((0..n).map(|j| a[j][j])).unwrap_or(0.0))
}

/// Order robustness: the population standard deviation (ddof 0) of the final average score over
/// runs with different task orders. Each matrix's tasks are in its own training order.
pub fn order_robustness(runs: &[Vec<Vec<f64>>]) -> Result<f64> {
    if runs.len() < 2 {
        return Err(Error::metric("order_robustness", "needs at least two runs"));
    }
    let finals = runs
        .iter()
        .map(|a| {
            let n = check(a, "order_robustness")?;
            Ok(mean(a[n - 1].iter().copied()).unwrap_or(0.0))
        })
        .collect::<Result<Vec<f64>>>()?;
    let m = mean(finals.iter().copied()).unwrap_or(0.0);
    Ok((finals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / finals.len() as f64).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn retention_after_the_next_task_and_learning() {
        let a = vec![vec![80.0, 0.0, 0.0], vec![60.0, 5.0, 0.0], vec![0.0, 50.0, 40.0]];
        // Task 0 keeps 60/80 after task 1; task 1 (5 points) is too weakly learned to count.
        close(worst_next_task_retention(&a).unwrap().unwrap(), 0.75);
        assert_eq!(worst_next_task_retention(&[vec![50.0]]).unwrap(), None, "no next task");
        close(learning(&a).unwrap(), 125.0 / 3.0);
        assert!(worst_next_task_retention(&[vec![1.0, 2.0]]).is_err(), "not square");
    }

    #[test]
    fn trace_conventions_differ_in_sign_clamp_and_denominator() {
        // Task 0 forgets 10, task 1 improves by 4 afterwards, task 2 is last.
        let a = vec![vec![50.0, 1.0, 2.0], vec![45.0, 60.0, 3.0], vec![40.0, 64.0, 70.0]];
        let s = trace_summary(&a).unwrap();
        close(s.op, (40.0 + 64.0 + 70.0) / 3.0);
        close(s.bwt_paper, ((50.0 - 40.0) + (60.0 - 64.0)) / 2.0);
        close(s.bwt_official, (-10.0 + 0.0 + 0.0) / 3.0);
        close(forgetting(&a).unwrap(), (10.0 - 4.0) / 2.0);
        close(fwt(&a, &[0.0, 0.5, 1.0]).unwrap(), ((1.0 - 0.5) + (3.0 - 1.0)) / 2.0);
    }

    #[test]
    fn xtail_official_drops_exact_zeros_but_clean_does_not() {
        let a = vec![vec![80.0, 0.0, 30.0], vec![70.0, 90.0, 20.0], vec![60.0, 85.0, 95.0]];
        let off = xtail_official(&a).unwrap();
        let clean = xtail_clean(&a).unwrap();
        // Column 1 has only the masked 0, so it is dropped; column 2 averages 30 and 20.
        close(off.transfer, 25.0);
        close(clean.transfer, (0.0 + 25.0) / 2.0);
        close(off.average, ((80.0 + 70.0 + 60.0) / 3.0 + (0.0 + 90.0 + 85.0) / 3.0 + (30.0 + 20.0 + 95.0) / 3.0) / 3.0);
        close(off.average, clean.average);
        close(off.last, 80.0);
    }

    #[test]
    fn paper_table1_moram_columns_reproduce_its_summary() {
        // Protocol 3.10: Transfer = mean of the nine published column values.
        let cols = [74.5, 38.1, 46.9, 65.3, 82.9, 45.8, 88.2, 65.1, 62.9];
        let n = 10;
        let mut a = vec![vec![50.0; n]; n];
        for (j, &c) in cols.iter().enumerate() {
            for row in a.iter_mut().take(j + 1) {
                row[j + 1] = c;
            }
        }
        close((xtail_official(&a).unwrap().transfer * 10.0).round() / 10.0, 63.3);
    }

    #[test]
    fn robustness_and_bad_shapes() {
        let r1 = vec![vec![10.0, 0.0], vec![20.0, 40.0]];
        let r2 = vec![vec![10.0, 0.0], vec![30.0, 50.0]];
        close(order_robustness(&[r1.clone(), r2]).unwrap(), 5.0);
        assert!(order_robustness(&[r1]).is_err());
        let err = trace_summary(&[vec![1.0, 2.0], vec![3.0]]).unwrap_err().to_string();
        assert!(err.contains("row 1 has 1 entries, expected 2"), "{err}");
        assert!(xtail_official(&[]).is_err());
    }
}
