//! `moram study`: runs a study file's grid (each run resumable), then writes its report and figure.

use crate::viz;
use crate::workers::{RunJob, Workers};
use anyhow::{Context, Result};
use moram_cl::study::{aggregate, run_grid, StudyConfig, StudyProgress, StudyReport, StudyRun};
use moram_cl::RunOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// A study file, and the methods or seeds that replace its own (`--methods`, `--seeds`).
pub struct Source<'a> {
    /// The study file.
    pub file: &'a Path,
    /// Config names of the methods to study instead of the file's.
    pub methods: Option<Vec<String>>,
    /// Seeds to study instead of the file's.
    pub seeds: Option<Vec<u64>>,
}

/// Runs (or continues) the study in `source` and writes `study.md`, `study.json` and `study.png`.
pub fn run(
    source: Source<'_>,
    out: Option<PathBuf>,
    sets: &[String],
    max_minutes: Option<f64>,
    report_only: bool,
    model: Option<(&crate::demo::RealModel, PathBuf)>,
    workers: Option<Workers>,
) -> Result<()> {
    let file = source.file;
    let overridden = source.methods.is_some() || source.seeds.is_some();
    let study = StudyConfig::from_file(file)
        .and_then(|s| s.with_grid(source.methods.as_deref(), source.seeds))
        .with_context(|| format!("reading the study {}", file.display()))?;
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(format!("study-{}", study.name)));
    // The model's overrides come first, so `--set` can still change them.
    let sets: Vec<String> = match model {
        Some((m, assets)) => crate::demo::overrides(m, &assets).into_iter().chain(sets.iter().cloned()).collect(),
        None => sets.to_vec(),
    };
    let runs = study.runs(&out, &sets)?;
    if let Some(m) = max_minutes {
        anyhow::ensure!(m.is_finite() && m > 0.0, "--max-minutes must be > 0, found {m}");
    }
    if !report_only {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        if overridden {
            // The grid this call studies, not the file's; its base as an absolute path, so that
            // the copy still finds it from the output folder.
            let mut written = study.clone();
            written.base = std::fs::canonicalize(&study.base)
                .with_context(|| format!("finding the study's base config {}", study.base.display()))?;
            let text = format!(
                "# {} with --methods/--seeds applied\n{}",
                file.display(),
                toml::to_string(&written).context("writing the study as TOML")?
            );
            std::fs::write(out.join("study.toml"), text).with_context(|| format!("writing {}", out.display()))?;
        } else {
            std::fs::copy(file, out.join("study.toml")).with_context(|| format!("copying {}", file.display()))?;
        }
        let stop = crate::ctrl_c_flag()?;
        let options =
            RunOptions { stop: Some(stop.clone()), progress: crate::progress_bars(), ..RunOptions::default() };
        let budget = max_minutes.map(|m| Duration::from_secs_f64(m * 60.0));
        let progress = match workers {
            Some(w) if w.jobs > 1 => run_workers(&study, &runs, &out, budget, w, stop.clone()),
            _ => run_grid(&runs, budget, |run, resume| {
                let state = crate::execute(&run.config, &run.dir, resume, &options)?;
                // Each finished run updates the report, so a stopped study still reports what it has.
                let report = aggregate(&study, &runs)?;
                write(&report, &out)?;
                Ok(state)
            }),
        };
        let progress = match progress {
            Ok(p) => p,
            Err(e) if stop.load(Ordering::SeqCst) => {
                write(&aggregate(&study, &runs)?, &out)?;
                return Err(e).context("study interrupted; the same command continues it");
            }
            Err(e) => return Err(e),
        };
        eprintln!(
            "study {}: {} run(s) finished now, {} already done, {} left",
            study.name, progress.finished, progress.skipped, progress.left
        );
    }
    let report = aggregate(&study, &runs)?;
    write(&report, &out)?;
    println!("{}", report.markdown());
    println!("study folder: {}", out.display());
    Ok(())
}

/// The unfinished runs of the grid as worker processes, `workers.jobs` at a time
/// ([`crate::workers`]): a run with finished tasks is resumed (its saved config must equal the
/// study's), others start from a config written into their folder. No run starts once `budget`
/// has passed; the report is rewritten as each run ends.
fn run_workers(
    study: &StudyConfig,
    runs: &[StudyRun],
    out: &Path,
    budget: Option<Duration>,
    workers: Workers,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<StudyProgress> {
    let mut jobs = Vec::new();
    let mut skipped = 0;
    for run in runs {
        let state = moram_cl::RunState::load(&run.dir).ok();
        if state.as_ref().is_some_and(moram_cl::RunState::is_complete) {
            skipped += 1;
            continue;
        }
        let label = format!("{}/{}/seed-{}", run.setting, run.method.name(), run.seed);
        jobs.push(RunJob::prepare(label, &run.dir, &run.config, state.is_some())?);
    }
    eprintln!(
        "{} run(s) to train, {} at a time ({} thread(s) each; logs in each run's train.log)",
        jobs.len(),
        workers.jobs,
        workers.threads
    );
    let pool = crate::workers::Pool::new(jobs, workers.threads, stop.clone(), crate::progress_bars())?;
    let deadline = budget.map(|b| std::time::Instant::now() + b);
    // Each finished run updates the report, so a stopped study still reports what it has.
    let (finished, left) = pool.finish(workers.jobs, deadline, |_| write(&aggregate(study, runs)?, out))?;
    if stop.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    crate::workers::check(&finished)?;
    if left > 0 {
        tracing::warn!(left, "study time budget spent; run the same command again to continue");
    }
    Ok(StudyProgress { skipped, finished: finished.len(), left })
}

/// `study.json`, `study.md` and `study.png` (per setting: OP then BWT bars per method, 95% whiskers).
fn write(report: &StudyReport, out: &Path) -> Result<()> {
    report.write(out)?;
    let mut settings: Vec<&str> = report.cells.iter().map(|c| c.setting.as_str()).collect();
    settings.dedup();
    let mut methods: Vec<String> = Vec::new();
    for c in &report.cells {
        if !methods.contains(&c.method) {
            methods.push(c.method.clone());
        }
    }
    let (mut groups, mut names) = (Vec::new(), Vec::new());
    for s in &settings {
        // One bar position per method in every group, empty where a method has no finished run.
        let cell = |m: &String| report.cells.iter().find(|c| c.setting == *s && c.method == *m && c.finished > 0);
        let op = methods.iter().map(|m| cell(m).map_or((0.0, None), |c| (c.op.mean, c.op.ci95))).collect::<Vec<_>>();
        let bwt = methods.iter().map(|m| cell(m).map_or((0.0, None), |c| (c.bwt.mean.max(0.0), c.bwt.ci95)));
        groups.push(op);
        groups.push(bwt.collect::<Vec<_>>());
        let prefix = if settings.len() > 1 { format!("{s} ") } else { String::new() };
        names.extend([format!("{prefix}OP"), format!("{prefix}BWT")]);
    }
    if report.cells.iter().any(|c| c.finished > 0) {
        let title = format!(
            "study {}: OP (higher is better) and BWT (lower is better), mean and 95% interval over seeds",
            report.name
        );
        viz::interval_bars(&groups, &names, &methods, 100.0, &title, &out.join("study.png"))?;
    }
    Ok(())
}
