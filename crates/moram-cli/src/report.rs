//! `moram report DIR [DIR...]`: one or several runs side by side (Markdown to stdout, optional CSV).

use anyhow::{Context, Result};
use moram_cl::metrics::bootstrap::ExampleScores;
use moram_cl::report::{markdown, summarize_run, Comparison, Results};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn load(dir: &Path) -> Result<Results> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} has no results.json (is it a moram run folder with a finished task?)", dir.display())
    })?;
    Ok(Results::from_json_str(&text, &path)?)
}

const ROWS: [&str; 10] = [
    "tasks finished",
    "OP (mean of last row)",
    "BWT, paper Eq. 10",
    "BWT, official TRACE code",
    "forgetting",
    "X-TAIL Transfer (official)",
    "X-TAIL Average",
    "X-TAIL Last",
    "routing leakage onto earlier tasks (%)",
    "new atoms open on their task's tokens (%, mean over tasks)",
];

fn values(r: &Results) -> Vec<String> {
    let done = format!("{}/{}", r.state.tasks_done(), r.state.task_names.len());
    match summarize_run(&r.state).ok().filter(|_| r.state.is_complete()) {
        Some(s) => {
            let f = |v: f64| format!("{v:.2}");
            vec![
                done,
                f(s.trace.op),
                f(s.trace.bwt_paper),
                f(s.trace.bwt_official),
                f(s.forgetting),
                f(s.xtail_official.transfer),
                f(s.xtail_official.average),
                f(s.xtail_official.last),
                s.leakage.map(|l| f(100.0 * l)).unwrap_or_else(|| "-".into()),
                mean_open_share(r).map(|v| f(100.0 * v)).unwrap_or_else(|| "-".into()),
            ]
        }
        None => std::iter::once(done).chain(std::iter::repeat_n("-".to_string(), ROWS.len() - 1)).collect(),
    }
}

/// The mean over tasks of the share of its tokens each task's new atoms were open to (plasticity
/// diagnostics), when every task recorded it.
fn mean_open_share(r: &Results) -> Option<f64> {
    let shares: Option<Vec<f64>> =
        r.state.tasks.iter().enumerate().map(|(t, rec)| moram_cl::plasticity::of_task(rec, t).open_share).collect();
    shares.filter(|s| !s.is_empty()).map(|s| s.iter().sum::<f64>() / s.len() as f64)
}

/// Prints the comparison; writes the summary as CSV when `csv` is given.
pub fn run(dirs: &[PathBuf], csv: Option<&Path>) -> Result<()> {
    let runs = dirs.iter().map(|d| load(d)).collect::<Result<Vec<_>>>()?;
    let mut s = String::from("# moram report\n\n");
    let heads: Vec<String> =
        runs.iter().zip(dirs).map(|(r, d)| format!("{} ({}, {})", r.name, r.method, d.display())).collect();
    let _ = writeln!(s, "| | {} |\n|---|{}", heads.join(" | "), "---:|".repeat(runs.len()));
    let cols: Vec<Vec<String>> = runs.iter().map(values).collect();
    for (i, row) in ROWS.iter().enumerate() {
        let cells: Vec<&str> = cols.iter().map(|c| c[i].as_str()).collect();
        let _ = writeln!(s, "| {row} | {} |", cells.join(" | "));
    }
    s.push_str(&comparison(&runs, dirs));
    for r in &runs {
        s.push('\n');
        s.push_str(&markdown(r).replacen("# ", "## ", 1));
    }
    println!("{s}");
    if let Some(path) = csv {
        let mut rows = vec![std::iter::once("metric".to_string()).chain(heads.iter().cloned()).collect::<Vec<_>>()];
        for (i, row) in ROWS.iter().enumerate() {
            rows.push(std::iter::once(row.to_string()).chain(cols.iter().map(|c| c[i].clone())).collect());
        }
        let text = moram_cl::report::csv_text(&rows)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// With two or more finished runs of the same tasks whose outputs carry per-example scores (LLM
/// runs), their paired bootstrap comparison against the first run; otherwise nothing, or a line
/// that says why not.
fn comparison(runs: &[Results], dirs: &[PathBuf]) -> String {
    if runs.len() < 2 || runs.iter().any(|r| !r.state.is_complete()) {
        return String::new();
    }
    if runs.iter().any(|r| r.state.task_names != runs[0].state.task_names) {
        return "\n(no paired comparison: the runs learned different task sequences)\n".into();
    }
    let scores: Vec<Option<ExampleScores>> =
        runs.iter().zip(dirs).map(|(r, d)| moram_cl::report::example_scores(d, &r.state)).collect();
    if scores.iter().any(Option::is_none) {
        return "\n(no paired comparison: not every run kept per-example scores under outputs/)\n".into();
    }
    match Comparison::of(&scores.iter().map(Option::as_ref).collect::<Vec<_>>()) {
        Ok(cmp) => {
            let names: Vec<String> =
                runs.iter().zip(dirs).map(|(r, d)| format!("{} ({})", r.method, d.display())).collect();
            let matrices: Vec<&[Vec<f64>]> = runs.iter().map(|r| r.state.matrix.as_slice()).collect();
            format!(
                "\n{}\nThe intervals cover which evaluation examples were drawn, for each training run; seeds are \
                 what `moram study` varies.\n",
                cmp.markdown(&names, &matrices)
            )
        }
        Err(e) => format!("\n(no paired comparison: {e})\n"),
    }
}
