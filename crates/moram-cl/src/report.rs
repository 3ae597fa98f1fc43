//! Run outputs: `metrics.jsonl` (one line per optimiser step), and after every task
//! `results.json`, `results.csv` and `results.md` (matrix, summaries, per-task records).

use crate::checkpoint::{versions, write_atomic, RunState};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::metrics::{self, TraceSummary, XtailSummary};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Per-step log file name.
pub const STEP_LOG: &str = "metrics.jsonl";

/// Appends one JSON line per optimiser step.
#[derive(Debug)]
pub struct StepLog {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl StepLog {
    /// Opens `metrics.jsonl` in `dir` for appending.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(STEP_LOG);
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(StepLog { file, path })
    }

    /// Logs one step.
    pub fn write(&mut self, task: usize, step: usize, loss: f64, lr: f64, grad_norm: f64, seconds: f64) -> Result<()> {
        let line = serde_json::json!({"task": task, "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "seconds": seconds});
        writeln!(self.file, "{line}").map_err(|e| Error::io(&self.path, e))
    }
}

/// Drops the step lines of unfinished tasks (`task >= done`) before a resume.
pub fn truncate_step_log(dir: &Path, done: usize) -> Result<()> {
    let path = dir.join(STEP_LOG);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v.get("task").and_then(serde_json::Value::as_u64))
                .is_some_and(|t| (t as usize) < done)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    write_atomic(&path, kept.as_bytes())
}

/// The summaries of a (possibly partial) matrix. Only defined once every task is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summaries {
    /// X-TAIL Transfer/Average/Last as the official code computes them.
    pub xtail_official: XtailSummary,
    /// The same without dropping exact zeros.
    pub xtail_clean: XtailSummary,
    /// TRACE OP and both BWT conventions.
    pub trace: TraceSummary,
    /// Average forgetting.
    pub forgetting: f64,
    /// Mean routing leakage onto earlier tasks after the last task (0-1), when diagnosed.
    #[serde(default)]
    pub leakage: Option<f64>,
}

/// `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Run name.
    pub name: String,
    /// Method name.
    pub method: String,
    /// The run state (matrix, records, adapters).
    pub state: RunState,
    /// Summaries, once the sequence is complete.
    pub summary: Option<Summaries>,
    /// The config as flat keys.
    pub config: std::collections::BTreeMap<String, String>,
    /// Versions.
    pub versions: std::collections::BTreeMap<String, String>,
}

impl Results {
    /// The results of `state` run with `config` (summaries once every task is finished).
    pub fn of_run(state: &RunState, config: &RunConfig) -> Result<Self> {
        let summary = if state.is_complete() { Some(summarize_run(state)?) } else { None };
        Ok(Results {
            name: config.name.clone(),
            method: config.method.name.to_string(),
            state: state.clone(),
            summary,
            config: config.flatten(),
            versions: versions(),
        })
    }

    /// Parses a `results.json` and checks its run state (see [`RunState::check`]); `path` names
    /// the file in errors.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self> {
        let results: Results = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint { path: path.into(), message: format!("not a moram results file: {e}") })?;
        results.state.check(path)?;
        Ok(results)
    }
}

/// Summaries of a complete square matrix.
pub fn summarize(matrix: &[Vec<f64>]) -> Result<Summaries> {
    Ok(Summaries {
        xtail_official: metrics::xtail_official(matrix)?,
        xtail_clean: metrics::xtail_clean(matrix)?,
        trace: metrics::trace_summary(matrix)?,
        forgetting: metrics::forgetting(matrix)?,
        leakage: None,
    })
}

/// [`summarize`] plus the run's final routing leakage.
pub fn summarize_run(state: &RunState) -> Result<Summaries> {
    let mut s = summarize(&state.matrix)?;
    s.leakage = state.tasks.last().and_then(|t| t.routing.as_ref()).map(|d| d.mean_leakage());
    Ok(s)
}

/// Writes `results.json`, `results.csv` and `results.md`.
pub fn write_all(dir: &Path, state: &RunState, config: &RunConfig) -> Result<()> {
    let results = Results::of_run(state, config)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| Error::Checkpoint { path: dir.join("results.json"), message: e.to_string() })?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    write_atomic(&dir.join("results.csv"), matrix_csv(state)?.as_bytes())?;
    write_atomic(&dir.join("results.md"), markdown(&results).as_bytes())
}

fn matrix_csv(state: &RunState) -> Result<String> {
    let mut rows = vec![std::iter::once("after_task".to_string()).chain(state.task_names.iter().cloned()).collect()];
    for (i, row) in state.matrix.iter().enumerate() {
        rows.push(std::iter::once(state.task_names[i].clone()).chain(row.iter().map(|v| format!("{v:.4}"))).collect());
    }
    csv_text(&rows)
}

/// `rows` as CSV text (RFC 4180: fields with commas, quotes or line breaks quoted).
pub fn csv_text(rows: &[Vec<String>]) -> Result<String> {
    let mut w = csv::WriterBuilder::new().flexible(true).from_writer(Vec::new());
    let bad = |e: String| Error::Checkpoint { path: "results.csv".into(), message: format!("writing CSV: {e}") };
    for row in rows {
        w.write_record(row).map_err(|e| bad(e.to_string()))?;
    }
    let bytes = w.into_inner().map_err(|e| bad(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| bad(e.to_string()))
}

/// The recorded score of every evaluation example of a finished run, `scores[row][task][example]`,
/// from `outputs/after-task{row}/{task}.json` (written for learners whose outputs carry a `score`,
/// such as the LLM learner). `None` when a file is missing or holds no scores.
pub fn example_scores(dir: &Path, state: &RunState) -> Option<crate::metrics::bootstrap::ExampleScores> {
    (0..state.tasks_done())
        .map(|row| {
            state
                .task_names
                .iter()
                .map(|name| {
                    let file = dir
                        .join("outputs")
                        .join(format!("after-task{row}"))
                        .join(format!("{}.json", name.replace(['/', '\\'], "_")));
                    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file).ok()?).ok()?;
                    v.as_array()?.iter().map(|e| e.get("score")?.as_f64()).collect::<Option<Vec<f64>>>()
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect()
}

/// A score matrix as a Markdown table: row `i` = after task `i`, column `j` = task `j`.
pub fn matrix_markdown(names: &[String], matrix: &[Vec<f64>]) -> String {
    let mut s = String::from("| after \\ on |");
    for n in names {
        s.push_str(&format!(" {n} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---:|".repeat(names.len()));
    s.push('\n');
    for (i, row) in matrix.iter().enumerate() {
        s.push_str(&format!("| {} |", names.get(i).map_or("?", String::as_str)));
        for v in row {
            s.push_str(&format!(" {v:.2} |"));
        }
        s.push('\n');
    }
    s
}

/// The Markdown report of one run: matrix, summaries, per-task records.
pub fn markdown(r: &Results) -> String {
    let st = &r.state;
    let mut s = format!("# {} ({})\n\n", r.name, r.method);
    s.push_str(&format!("{} of {} tasks finished.\n\n", st.tasks_done(), st.task_names.len()));
    s.push_str("Score on each task (columns) after training each task (rows), 0-100:\n\n");
    s.push_str(&matrix_markdown(&st.task_names, &st.matrix));
    if let Some(sum) = &r.summary {
        s.push_str("\n| metric | value |\n|---|---:|\n");
        let rows = [
            ("OP (mean of last row)", sum.trace.op),
            ("BWT, paper Eq. 10 (positive = forgetting)", sum.trace.bwt_paper),
            ("BWT, official TRACE code (<= 0)", sum.trace.bwt_official),
            ("Forgetting (mean max drop)", sum.forgetting),
            ("X-TAIL Transfer (official, zeros dropped)", sum.xtail_official.transfer),
            ("X-TAIL Transfer (clean)", sum.xtail_clean.transfer),
            ("X-TAIL Average", sum.xtail_official.average),
            ("X-TAIL Last", sum.xtail_official.last),
        ];
        let rows = rows.into_iter().chain(sum.leakage.map(|l| ("Routing leakage onto earlier tasks (%)", 100.0 * l)));
        for (k, v) in rows {
            s.push_str(&format!("| {k} | {v:.2} |\n"));
        }
    }
    s.push_str("\n| task | steps | final loss | trainable params | atoms | seconds | peak RSS MiB | pruning |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---|\n");
    for t in &st.tasks {
        let prune = t
            .prune
            .as_ref()
            .map(|p| {
                format!(
                    "atoms {} -> {}, params {} -> {}, own score {:.2} -> {:.2}",
                    p.atoms_before,
                    p.atoms_after,
                    p.parameters_before,
                    p.parameters_after,
                    p.metric_before,
                    p.metric_after
                )
            })
            .unwrap_or_else(|| "-".into());
        s.push_str(&format!(
            "| {} | {} | {:.4} | {} | {} | {:.1} | {} | {} |\n",
            t.name,
            t.steps,
            t.final_loss,
            t.trainable_parameters,
            t.atoms,
            t.seconds,
            t.peak_rss_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
            prune
        ));
    }
    if let Some(diag) = st.tasks.last().and_then(|t| t.routing.as_ref()) {
        s.push('\n');
        s.push_str(&routing_markdown(diag, &st.task_names));
    }
    let plasticity = crate::plasticity::markdown(&st.tasks, &st.task_names);
    if !plasticity.is_empty() {
        s.push('\n');
        s.push_str(&plasticity);
    }
    s
}

/// The routing diagnostics as Markdown: weight share of each task's atoms on each task's data
/// (layer means, percent), own-task top-1 share, leakage and key norms.
pub fn routing_markdown(d: &crate::analysis::RoutingDiagnostics, names: &[String]) -> String {
    let n = d.tasks;
    let mut s = format!(
        "Routing after task {n} (mean over layers; {} training examples per task): share of the \
         inference weight (%) that each task's atoms (columns) take on each task's tokens (rows).\n\n| data \\ atoms of |",
        d.examples.first().copied().unwrap_or(0)
    );
    for name in &names[..n] {
        s.push_str(&format!(" {name} |"));
    }
    s.push_str(" own top-1 % | leakage % |\n|---|");
    s.push_str(&"---:|".repeat(n + 2));
    s.push('\n');
    for (i, name) in names.iter().enumerate().take(n) {
        s.push_str(&format!("| {name} |"));
        for v in &d.weight_share[i] {
            s.push_str(&format!(" {:.1} |", 100.0 * v));
        }
        s.push_str(&format!(" {:.1} | {:.1} |\n", 100.0 * d.own_top1[i], 100.0 * d.leakage[i]));
    }
    s.push_str("| key norm |");
    for k in &d.key_norm {
        s.push_str(&k.map(|v| format!(" {v:.3} |")).unwrap_or_else(|| " - |".into()));
    }
    s.push_str(" | |\n");
    s.push_str(&format!("\nMean leakage onto earlier tasks: {:.1}%.\n", 100.0 * d.mean_leakage()));
    s
}

/// Bootstrap draws behind every [`Comparison`] interval.
pub const BOOTSTRAP_DRAWS: usize = 2000;

type Statistic = fn(&[Vec<f64>]) -> Result<f64>;

fn op(a: &[Vec<f64>]) -> Result<f64> {
    Ok(metrics::trace_summary(a)?.op)
}

fn bwt(a: &[Vec<f64>]) -> Result<f64> {
    Ok(metrics::trace_summary(a)?.bwt_paper)
}

/// The statistics a [`Comparison`] reports, with their labels.
const STATISTICS: [(&str, Statistic); 3] = [
    ("OP (mean of the last row)", op),
    ("BWT, paper Eq. 10 (forgetting, lower is better)", bwt),
    ("learning (mean of the diagonal)", metrics::learning),
];

/// One row of a [`Comparison`]: a statistic of each run with its interval, and its difference
/// from the first run with the paired interval.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonRow {
    /// The statistic's label.
    pub statistic: &'static str,
    /// Per run: its value and 95% interval (`None`: no per-example scores).
    pub values: Vec<Option<metrics::bootstrap::Interval>>,
    /// Per run: the difference from the first run and its paired 95% interval.
    pub vs_first: Vec<Option<metrics::bootstrap::Interval>>,
}

/// Runs scored on the same evaluation examples, compared by a paired bootstrap over those examples
/// (`metrics::bootstrap`): OP, BWT and learning with 95% intervals, and differences from the first
/// run. The intervals cover which evaluation examples were drawn for each training run, not the
/// variation between training seeds (`moram study` measures that).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// One row per statistic.
    pub rows: Vec<ComparisonRow>,
    /// Evaluation examples per task (of the first run with scores).
    pub examples: usize,
}

impl Comparison {
    /// Compares runs by their per-example scores ([`example_scores`]); runs without scores get
    /// `None` cells. The seeds are fixed, so a comparison is reproducible.
    pub fn of(scores: &[Option<&metrics::bootstrap::ExampleScores>]) -> Result<Self> {
        use metrics::bootstrap::{interval, paired_difference};
        let first = scores.first().copied().flatten();
        let mut rows = Vec::new();
        for (k, (statistic, stat)) in STATISTICS.into_iter().enumerate() {
            let mut values = Vec::new();
            let mut vs_first = Vec::new();
            for s in scores {
                values.push(s.map(|s| interval(s, stat, BOOTSTRAP_DRAWS, 7 + k as u64)).transpose()?);
                vs_first.push(match (first, s) {
                    (Some(a), Some(b)) => Some(paired_difference(a, b, stat, BOOTSTRAP_DRAWS, 11 + k as u64)?),
                    _ => None,
                });
            }
            rows.push(ComparisonRow { statistic, values, vs_first });
        }
        let examples =
            scores.iter().flatten().next().and_then(|s| s.first()).and_then(|r| r.first()).map_or(0, Vec::len);
        Ok(Comparison { rows, examples })
    }

    /// The comparison as Markdown: a table of every run's statistics (plus the worst next-task
    /// retention of each matrix in `matrices`), then the differences from the first run (`*`: the
    /// interval excludes 0). `names` label the runs.
    pub fn markdown(&self, names: &[String], matrices: &[&[Vec<f64>]]) -> String {
        use std::fmt::Write as _;
        let show = |i: &Option<metrics::bootstrap::Interval>| match i {
            Some(i) => format!("{:.1} [{:.1}, {:.1}]", i.value, i.low, i.high),
            None => "-".into(),
        };
        let mut s = format!(
            "## Comparison (95% intervals over the {} evaluation examples per task, paired bootstrap)\n\n",
            self.examples
        );
        let _ = writeln!(s, "| | {} |\n|---|{}", names.join(" | "), "---:|".repeat(names.len()));
        for row in &self.rows {
            let cells: Vec<String> = row.values.iter().map(show).collect();
            let _ = writeln!(s, "| {} | {} |", row.statistic, cells.join(" | "));
        }
        let worst: Vec<String> = matrices
            .iter()
            .map(|m| match metrics::worst_next_task_retention(m) {
                Ok(Some(r)) => format!("{:.0}%", 100.0 * r),
                _ => "-".into(),
            })
            .collect();
        let _ = writeln!(s, "| worst share of a task's score kept after the next task | {} |", worst.join(" | "));
        let first = names.first().map_or("the first run", String::as_str);
        let _ = writeln!(s, "\nDifferences from {first} (* = the interval excludes 0):\n");
        let rest = names.get(1..).unwrap_or_default();
        let _ = writeln!(s, "| | {} |\n|---|{}", rest.join(" | "), "---:|".repeat(rest.len()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .vs_first
                .iter()
                .skip(1)
                .map(|d| match d {
                    Some(d) => format!("{}{}", show(&Some(*d)), if d.excludes_zero() { " *" } else { "" }),
                    None => "-".into(),
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", row.statistic, cells.join(" | "));
        }
        s
    }
}
