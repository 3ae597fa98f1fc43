//! Studies: a grid of settings x methods x seeds over one task sequence, every run a resumable run
//! folder, aggregated into means with 95% intervals over seeds (`docs/study.md`).
//!
//! A study file (TOML) names a base run config and what varies:
//!
//! ```toml
//! name = "bbc-interference"
//! base = "../demo.toml"                 # a run config, relative to this file
//! methods = ["moram", "moram-orthogonal", "seq-lora", "o-lora"]
//! seeds = [1, 2, 3]
//! baseline = "seq-lora"                 # paired differences are taken against it
//!
//! [[settings]]
//! name = "lr-1e-2"
//! set = ["optimizer.lr=1e-2"]           # `--set` overrides applied to the base
//!
//! [method_set]                          # overrides for one method only
//! "seq-lora" = ["optimizer.lr=5e-3"]
//! ```
//!
//! Runs go seed by seed (every method on seed 1, then on seed 2, ...), so a study stopped early
//! still compares methods on the same seeds. Run `s/m/seed-k` lives in `<out>/<setting>/<method>/seed-<k>`. A finished run is never run
//! again, an unfinished one is resumed, so a study can be stopped and continued at any time.

use crate::checkpoint::RunState;
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::methods::Method;
use crate::metrics;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One setting of the grid: a name and the overrides that define it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Folder-safe name.
    pub name: String,
    /// `key=value` overrides on the base config.
    #[serde(default)]
    pub set: Vec<String>,
}

/// A study file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    /// Name shown in the report.
    pub name: String,
    /// The base run config (relative to the study file).
    pub base: PathBuf,
    /// Methods compared (config names, e.g. `moram`, `seq-lora`).
    pub methods: Vec<Method>,
    /// Seeds; every (setting, method) runs once per seed.
    pub seeds: Vec<u64>,
    /// Settings; one unnamed setting (`base`) when absent.
    #[serde(default)]
    pub settings: Vec<Setting>,
    /// Overrides applied to one method's runs only (by method name).
    #[serde(default)]
    pub method_set: BTreeMap<String, Vec<String>>,
    /// The method paired differences are taken against (default: `seq-lora` when studied).
    pub baseline: Option<Method>,
}

/// One run of the grid.
#[derive(Debug, Clone)]
pub struct StudyRun {
    /// Setting name.
    pub setting: String,
    /// Method.
    pub method: Method,
    /// Seed.
    pub seed: u64,
    /// The run's full config.
    pub config: RunConfig,
    /// Its folder.
    pub dir: PathBuf,
}

fn folder_safe(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) && name != ".."
}

impl StudyConfig {
    /// Reads and checks a study file; the base config is resolved against the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut s: StudyConfig = toml::from_str(&text)
            .map_err(|e| Error::ConfigFile { path: path.into(), message: e.to_string().trim_end().to_string() })?;
        if s.base.is_relative() {
            s.base = path.parent().unwrap_or(Path::new(".")).join(&s.base);
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks names, methods and seeds; errors name the key.
    pub fn validate(&self) -> Result<()> {
        if self.methods.is_empty() {
            return Err(Error::config("methods", "lists no method"));
        }
        if self.seeds.is_empty() {
            return Err(Error::config("seeds", "lists no seed"));
        }
        let mut methods = std::collections::BTreeSet::new();
        if let Some(m) = self.methods.iter().find(|m| !methods.insert(m.name())) {
            return Err(Error::config("methods", format!("`{}` appears twice", m.name())));
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(d) = self.seeds.iter().find(|s| !seen.insert(**s)) {
            return Err(Error::config("seeds", format!("seed {d} appears twice")));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.settings {
            if !folder_safe(&s.name) {
                return Err(Error::config(
                    "settings.name",
                    format!("`{}` must be letters, digits, - _ . only", s.name),
                ));
            }
            if !names.insert(&s.name) {
                return Err(Error::config("settings.name", format!("`{}` appears twice", s.name)));
            }
        }
        let method_names: Vec<String> = self.methods.iter().map(|m| m.name()).collect();
        if let Some(k) = self.method_set.keys().find(|k| !method_names.contains(k)) {
            return Err(Error::config(
                "method_set",
                format!("`{k}` is not one of the studied methods {method_names:?}"),
            ));
        }
        if let Some(b) = self.baseline {
            if !self.methods.contains(&b) {
                return Err(Error::config("baseline", format!("`{}` is not one of the studied methods", b.name())));
            }
        }
        Ok(())
    }

    /// The same study on other methods and/or seeds (`moram study --methods/--seeds`): to add
    /// seeds to a finished study (its finished runs are skipped, so naming old and new seeds
    /// reports them together), or to run part of its grid. `methods` are config names, any method
    /// moram runs. Per-method overrides of methods left out are dropped. A baseline the study
    /// file names must stay, since the differences are paired against it.
    pub fn with_grid(mut self, methods: Option<&[String]>, seeds: Option<Vec<u64>>) -> Result<Self> {
        if let Some(names) = methods {
            self.methods = names
                .iter()
                .map(|n| Method::from_name(n).map_err(|e| Error::config("methods", e)))
                .collect::<Result<_>>()?;
            let kept: Vec<String> = self.methods.iter().map(|m| m.name()).collect();
            self.method_set.retain(|k, _| kept.contains(k));
            if let Some(b) = self.baseline.filter(|b| !self.methods.contains(b)) {
                return Err(Error::config(
                    "methods",
                    format!("leaves out the study's baseline `{}`, against which differences are paired", b.name()),
                ));
            }
        }
        if let Some(seeds) = seeds {
            self.seeds = seeds;
        }
        self.validate()?;
        Ok(self)
    }

    /// The settings, or the single `base` setting.
    pub fn settings(&self) -> Vec<Setting> {
        if self.settings.is_empty() {
            vec![Setting { name: "base".into(), set: Vec::new() }]
        } else {
            self.settings.clone()
        }
    }

    /// The baseline of paired differences.
    pub fn baseline(&self) -> Option<Method> {
        self.baseline.or_else(|| self.methods.contains(&Method::SEQ_LORA).then_some(Method::SEQ_LORA))
    }

    /// Every run of the grid, in order (setting, then seed, then method), with `extra` overrides
    /// (e.g. from the command line) applied to all of them before the setting's.
    pub fn runs(&self, out: &Path, extra: &[String]) -> Result<Vec<StudyRun>> {
        let base = RunConfig::from_file(&self.base)?;
        let mut runs = Vec::new();
        for setting in self.settings() {
            // Seed-major: a study stopped early still has every method on the same seeds.
            for &seed in &self.seeds {
                for &method in &self.methods {
                    let mut sets: Vec<String> = extra.to_vec();
                    sets.extend(setting.set.iter().cloned());
                    sets.extend(self.method_set.get(&method.name()).into_iter().flatten().cloned());
                    sets.push(format!("method.name=\"{}\"", method.name()));
                    sets.push(format!("seed={seed}"));
                    sets.push(format!("name=\"{}/{}/{}/seed-{seed}\"", self.name, setting.name, method.name()));
                    let mut config = base.clone();
                    config.set_all(&sets)?;
                    let dir = out.join(&setting.name).join(method.name()).join(format!("seed-{seed}"));
                    runs.push(StudyRun { setting: setting.name.clone(), method, seed, config, dir });
                }
            }
        }
        Ok(runs)
    }
}

/// Seeds as a command line gives them: numbers and inclusive ranges, separated by commas
/// (`1-8`, `4,5,6`, `1-3,10`), in the order given.
pub fn parse_seeds(spec: &str) -> Result<Vec<u64>> {
    let bad =
        |part: &str| Error::config("seeds", format!("`{part}` in `{spec}` is not a seed or a range a-b of seeds"));
    let mut seeds = Vec::new();
    for part in spec.split(',').map(str::trim) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) =
                    (a.trim().parse().map_err(|_| bad(part))?, b.trim().parse().map_err(|_| bad(part))?);
                if a > b {
                    return Err(bad(part));
                }
                seeds.extend(a..=b);
            }
            None => seeds.push(part.parse().map_err(|_| bad(part))?),
        }
    }
    Ok(seeds)
}

/// What a study call did.
#[derive(Debug, Clone, Default)]
pub struct StudyProgress {
    /// Runs already complete before the call.
    pub skipped: usize,
    /// Runs finished by this call.
    pub finished: usize,
    /// Runs not started or not finished because the time budget ran out.
    pub left: usize,
}

/// Runs every unfinished run of `runs` through `exec(run, resume)` (which trains or resumes the
/// run in `run.dir`), starting no new run once `budget` has passed. Finished runs are skipped.
pub fn run_grid<E: From<Error>>(
    runs: &[StudyRun],
    budget: Option<Duration>,
    mut exec: impl FnMut(&StudyRun, bool) -> std::result::Result<RunState, E>,
) -> std::result::Result<StudyProgress, E> {
    let start = Instant::now();
    let mut p = StudyProgress::default();
    for (i, run) in runs.iter().enumerate() {
        let state = RunState::load(&run.dir).ok();
        if state.as_ref().is_some_and(RunState::is_complete) {
            p.skipped += 1;
            continue;
        }
        if budget.is_some_and(|b| start.elapsed() >= b) {
            p.left = runs[i..].iter().filter(|r| !RunState::load(&r.dir).is_ok_and(|s| s.is_complete())).count();
            tracing::warn!(left = p.left, "study time budget spent; run the same command again to continue");
            break;
        }
        tracing::info!(
            run = i + 1,
            of = runs.len(),
            setting = %run.setting,
            method = run.method.name(),
            seed = run.seed,
            "{}",
            run.dir.display()
        );
        std::fs::create_dir_all(&run.dir).map_err(|e| Error::io(&run.dir, e))?;
        exec(run, state.is_some())?;
        p.finished += 1;
    }
    Ok(p)
}

/// Mean and 95% interval half-width (Student t) of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval of the mean (`t_{0.975, n-1} s / sqrt(n)`); `None` for n < 2.
    pub ci95: Option<f64>,
    /// Sample size.
    pub n: usize,
}

/// Two-sided 97.5% quantiles of Student's t for 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

impl Estimate {
    /// The estimate of `values` (empty: NaN mean, n = 0).
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Estimate { mean: f64::NAN, ci95: None, n };
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let ci95 = (n >= 2).then(|| {
            let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let t = T975.get(n - 2).copied().unwrap_or(1.960);
            t * (var / n as f64).sqrt()
        });
        Estimate { mean, ci95, n }
    }

    /// Whether the interval excludes 0 (a difference outside the noise).
    pub fn excludes_zero(&self) -> bool {
        self.ci95.is_some_and(|h| self.mean.abs() > h)
    }

    fn show(&self) -> String {
        if self.n == 0 {
            return "-".into();
        }
        match self.ci95 {
            Some(h) => format!("{:.2} ± {:.2}", self.mean, h),
            None => format!("{:.2}", self.mean),
        }
    }
}

/// The metrics of one finished run (all 0-100, leakage in percent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMetrics {
    /// Seed.
    pub seed: u64,
    /// OP: mean of the last row.
    pub op: f64,
    /// BWT, paper Eq. 10 (positive = forgetting).
    pub bwt: f64,
    /// Mean maximum drop.
    pub forgetting: f64,
    /// Mean of the diagonal (each task right after training it).
    pub diagonal: f64,
    /// Smallest `matrix[i+1][i] / matrix[i][i]` over tasks with a non-zero diagonal: what is left of
    /// a task right after the next one (1 = nothing lost).
    pub worst_next_task_retention: Option<f64>,
    /// Mean routing leakage onto earlier tasks after the last task (%), when diagnosed.
    pub leakage: Option<f64>,
    /// Mean seconds per task of training and the method's own steps after it (subspaces, the task
    /// gate; evaluation not included).
    #[serde(default)]
    pub seconds_per_task: f64,
    /// Size of the last adapter file (MB), when the run folder was read.
    #[serde(default)]
    pub adapter_mb: Option<f64>,
    /// The matrix.
    pub matrix: Vec<Vec<f64>>,
}

impl RunMetrics {
    /// The metrics of a complete run.
    pub fn of(state: &RunState) -> Result<Self> {
        let m = &state.matrix;
        let s = metrics::trace_summary(m)?;
        let diagonal = metrics::learning(m)?;
        let worst = metrics::worst_next_task_retention(m)?;
        let leakage = state.tasks.last().and_then(|t| t.routing.as_ref()).map(|d| 100.0 * d.mean_leakage());
        Ok(RunMetrics {
            seed: state.seed,
            op: s.op,
            bwt: s.bwt_paper,
            forgetting: metrics::forgetting(m)?,
            diagonal,
            worst_next_task_retention: worst,
            leakage,
            seconds_per_task: state.tasks.iter().map(|t| t.seconds).sum::<f64>() / state.tasks.len().max(1) as f64,
            adapter_mb: None,
            matrix: m.clone(),
        })
    }

    /// [`RunMetrics::of`] with what the run folder `dir` holds besides its state (the last adapter's
    /// size).
    pub fn of_run(state: &RunState, dir: &Path) -> Result<Self> {
        let mut m = Self::of(state)?;
        m.adapter_mb =
            state.adapter_file().and_then(|f| std::fs::metadata(dir.join(f)).ok()).map(|meta| meta.len() as f64 / 1e6);
        Ok(m)
    }
}

/// One (setting, method) cell of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSummary {
    /// Setting.
    pub setting: String,
    /// Method name.
    pub method: String,
    /// Seeds finished / planned.
    pub finished: usize,
    /// Seeds planned.
    pub planned: usize,
    /// OP.
    pub op: Estimate,
    /// BWT (Eq. 10).
    pub bwt: Estimate,
    /// Forgetting.
    pub forgetting: Estimate,
    /// Diagonal mean.
    pub diagonal: Estimate,
    /// Leakage (%), when diagnosed.
    pub leakage: Option<Estimate>,
    /// Worst next-task retention over seeds (min), when defined.
    pub worst_next_task_retention: Option<f64>,
    /// Paired (by seed) difference to the baseline method: OP.
    pub op_vs_baseline: Option<Estimate>,
    /// Paired difference to the baseline: BWT (negative = forgets less).
    pub bwt_vs_baseline: Option<Estimate>,
    /// Seconds per task of training and the method's own steps.
    #[serde(default)]
    pub seconds_per_task: Option<Estimate>,
    /// Last adapter file size (MB).
    #[serde(default)]
    pub adapter_mb: Option<Estimate>,
    /// Mean matrix over seeds.
    pub mean_matrix: Vec<Vec<f64>>,
    /// Every finished seed.
    pub runs: Vec<RunMetrics>,
}

/// `study.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyReport {
    /// Study name.
    pub name: String,
    /// Task names.
    pub tasks: Vec<String>,
    /// Baseline method of the paired differences.
    pub baseline: Option<String>,
    /// One cell per (setting, method).
    pub cells: Vec<CellSummary>,
}

fn paired(a: &[RunMetrics], b: &[RunMetrics], f: impl Fn(&RunMetrics) -> f64) -> Option<Estimate> {
    let diffs: Vec<f64> = a.iter().filter_map(|x| b.iter().find(|y| y.seed == x.seed).map(|y| f(x) - f(y))).collect();
    (!diffs.is_empty()).then(|| Estimate::of(&diffs))
}

/// Reads every finished run of the grid and summarises it.
pub fn aggregate(study: &StudyConfig, runs: &[StudyRun]) -> Result<StudyReport> {
    let mut tasks = Vec::new();
    let mut by_cell: Vec<((String, Method), Vec<RunMetrics>, usize)> = Vec::new();
    for run in runs {
        let key = (run.setting.clone(), run.method);
        let pos = match by_cell.iter().position(|(k, _, _)| *k == key) {
            Some(p) => p,
            None => {
                by_cell.push((key, Vec::new(), 0));
                by_cell.len() - 1
            }
        };
        by_cell[pos].2 += 1;
        let Ok(state) = RunState::load(&run.dir) else { continue };
        if !state.is_complete() {
            continue;
        }
        if tasks.is_empty() {
            tasks = state.task_names.clone();
        }
        by_cell[pos].1.push(RunMetrics::of_run(&state, &run.dir)?);
    }
    let baseline = study.baseline();
    let mut cells = Vec::new();
    for ((setting, method), ms, planned) in &by_cell {
        let est = |f: &dyn Fn(&RunMetrics) -> f64| Estimate::of(&ms.iter().map(f).collect::<Vec<_>>());
        let leak: Vec<f64> = ms.iter().filter_map(|m| m.leakage).collect();
        let base = baseline
            .filter(|b| b != method)
            .and_then(|b| by_cell.iter().find(|((s, m), _, _)| s == setting && *m == b))
            .map(|(_, v, _)| v.as_slice());
        let n = ms.first().map_or(0, |m| m.matrix.len());
        let mean_matrix = (0..n)
            .map(|i| (0..n).map(|j| ms.iter().map(|m| m.matrix[i][j]).sum::<f64>() / ms.len() as f64).collect())
            .collect();
        cells.push(CellSummary {
            setting: setting.clone(),
            method: method.name(),
            finished: ms.len(),
            planned: *planned,
            op: est(&|m| m.op),
            bwt: est(&|m| m.bwt),
            forgetting: est(&|m| m.forgetting),
            diagonal: est(&|m| m.diagonal),
            leakage: (leak.len() == ms.len() && !leak.is_empty()).then(|| Estimate::of(&leak)),
            worst_next_task_retention: ms.iter().filter_map(|m| m.worst_next_task_retention).min_by(f64::total_cmp),
            op_vs_baseline: base.and_then(|b| paired(ms, b, |m| m.op)),
            bwt_vs_baseline: base.and_then(|b| paired(ms, b, |m| m.bwt)),
            seconds_per_task: (!ms.is_empty()).then(|| est(&|m| m.seconds_per_task)),
            adapter_mb: {
                let mb: Vec<f64> = ms.iter().filter_map(|m| m.adapter_mb).collect();
                (!mb.is_empty() && mb.len() == ms.len()).then(|| Estimate::of(&mb))
            },
            mean_matrix,
            runs: ms.clone(),
        });
    }
    Ok(StudyReport { name: study.name.clone(), tasks, baseline: baseline.map(|b| b.name()), cells })
}

impl StudyReport {
    /// The report as Markdown: one table per setting, then the mean matrices.
    pub fn markdown(&self) -> String {
        let mut s = format!("# Study {}\n\n", self.name);
        s.push_str(
            "Means over seeds with 95% intervals (Student t; `±` half-width). OP and the diagonal: higher is \
             better; BWT (paper Eq. 10) and forgetting: lower is better. Differences are paired by seed",
        );
        match &self.baseline {
            Some(b) => s.push_str(&format!(" against `{b}`; * marks an interval that excludes 0.\n\n")),
            None => s.push_str(" (no baseline studied).\n\n"),
        }
        let mut settings: Vec<&str> = self.cells.iter().map(|c| c.setting.as_str()).collect();
        settings.dedup();
        for setting in settings {
            s.push_str(&format!("## {setting}\n\n"));
            s.push_str("| method | seeds | OP | BWT | forgetting | diagonal | leakage % | worst next-task retention | ΔOP | ΔBWT |\n");
            s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for c in self.cells.iter().filter(|c| c.setting == setting) {
                let diff = |e: &Option<Estimate>| {
                    e.map(|e| format!("{}{}", e.show(), if e.excludes_zero() { " *" } else { "" }))
                        .unwrap_or_else(|| "-".into())
                };
                s.push_str(&format!(
                    "| {} | {}/{} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    c.method,
                    c.finished,
                    c.planned,
                    c.op.show(),
                    c.bwt.show(),
                    c.forgetting.show(),
                    c.diagonal.show(),
                    c.leakage.map(|e| e.show()).unwrap_or_else(|| "-".into()),
                    c.worst_next_task_retention.map(|r| format!("{:.0}%", 100.0 * r)).unwrap_or_else(|| "-".into()),
                    diff(&c.op_vs_baseline),
                    diff(&c.bwt_vs_baseline),
                ));
            }
            s.push('\n');
            s.push_str(&self.cost_markdown(setting));
            for c in self.cells.iter().filter(|c| c.setting == setting && c.finished > 0) {
                s.push_str(&format!(
                    "Mean matrix, `{}` ({} seed{}; rows: after task, columns: task):\n\n",
                    c.method,
                    c.finished,
                    if c.finished == 1 { "" } else { "s" }
                ));
                s.push_str(&crate::report::matrix_markdown(&self.tasks, &c.mean_matrix));
                s.push('\n');
            }
        }
        s
    }

    /// What each method of `setting` costs: seconds per task of training and its own steps (runs
    /// of one study train side by side, so these compare), adapter file size, and both relative
    /// to the paper's MoRAM when it was studied.
    fn cost_markdown(&self, setting: &str) -> String {
        let cells: Vec<&CellSummary> = self.cells.iter().filter(|c| c.setting == setting && c.finished > 0).collect();
        if cells.iter().all(|c| c.seconds_per_task.is_none()) {
            return String::new();
        }
        let moram = cells.iter().find(|c| c.method == "moram");
        let ratio = |v: Option<Estimate>, base: Option<Estimate>| match (v, base) {
            (Some(v), Some(b)) if b.mean > 0.0 => format!("{:.2}x", v.mean / b.mean),
            _ => "-".into(),
        };
        let mut s = String::from(
            "Cost (seconds per task of training and the method's own steps, evaluation not included; the \
             last adapter file):\n\n| method | s / task | adapter MB | time vs `moram` | size vs `moram` |\n\
             |---|---:|---:|---:|---:|\n",
        );
        for c in &cells {
            let show = |e: &Option<Estimate>| e.map(|e| e.show()).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                c.method,
                show(&c.seconds_per_task),
                show(&c.adapter_mb),
                ratio(c.seconds_per_task, moram.and_then(|m| m.seconds_per_task)),
                ratio(c.adapter_mb, moram.and_then(|m| m.adapter_mb)),
            ));
        }
        s.push('\n');
        s
    }

    /// Writes `study.json` and `study.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Checkpoint { path: dir.join("study.json"), message: e.to_string() })?;
        crate::checkpoint::write_atomic(&dir.join("study.json"), json.as_bytes())?;
        crate::checkpoint::write_atomic(&dir.join("study.md"), self.markdown().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn formats_like_study() -> StudyConfig {
        toml::from_str(
            r#"
            name = "s"
            base = "base.toml"
            methods = ["seq-lora", "moram", "moram-novelty-gated"]
            seeds = [1, 2, 3]
            baseline = "seq-lora"
            [method_set]
            moram = ["training.steps=2"]
            "moram-novelty-gated" = ["training.steps=3"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn seeds_parse_from_lists_and_ranges() {
        assert_eq!(parse_seeds("1-8").unwrap(), (1..=8).collect::<Vec<u64>>());
        assert_eq!(parse_seeds("4, 5,6").unwrap(), [4, 5, 6]);
        assert_eq!(parse_seeds("1-3,10").unwrap(), [1, 2, 3, 10]);
        assert_eq!(parse_seeds("7").unwrap(), [7]);
        for bad in ["", "1-", "a", "3-1", "1,,2", "-1", "1.5"] {
            let e = parse_seeds(bad).unwrap_err().to_string();
            assert!(e.contains("seeds"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_study_takes_other_methods_and_seeds() {
        let names = |s: &StudyConfig| s.methods.iter().map(|m| m.name()).collect::<Vec<_>>();
        let s = formats_like_study()
            .with_grid(Some(&["seq-lora".into(), "moram-novelty-gated".into(), "o-lora".into()]), Some(vec![4, 5]))
            .unwrap();
        assert_eq!(names(&s), ["seq-lora", "moram-novelty-gated", "o-lora"]);
        assert_eq!(s.seeds, [4, 5]);
        // The dropped method's overrides go; the kept one's stay.
        assert_eq!(s.method_set.keys().collect::<Vec<_>>(), ["moram-novelty-gated"]);
        assert_eq!(s.baseline(), Some(Method::SEQ_LORA));
        // Nothing given: the study as written.
        assert_eq!(formats_like_study().with_grid(None, None).unwrap(), formats_like_study());

        let err = |methods: &[&str], seeds: Option<Vec<u64>>| {
            let m: Vec<String> = methods.iter().map(|s| s.to_string()).collect();
            formats_like_study().with_grid(Some(&m), seeds).unwrap_err().to_string()
        };
        assert!(err(&["moram"], None).contains("baseline `seq-lora`"));
        assert!(err(&["seq-lora", "moram-fancy"], None).contains("`moram-fancy`"));
        assert!(err(&["seq-lora", "moram", "moram"], None).contains("`moram` appears twice"));
        assert!(err(&["seq-lora"], Some(vec![1, 1])).contains("seed 1 appears twice"));
        assert!(err(&["seq-lora"], Some(vec![])).contains("no seed"));
        // A study file that lists a method twice is refused the same way.
        let mut twice = formats_like_study();
        twice.methods.push(Method::MORAM);
        assert!(twice.validate().unwrap_err().to_string().contains("`moram` appears twice"));
    }

    #[test]
    fn the_cost_table_compares_each_method_with_moram() {
        let cell = |method: &str, seconds: &[f64], mb: &[f64]| CellSummary {
            setting: "demo".into(),
            method: method.into(),
            finished: seconds.len(),
            planned: seconds.len(),
            op: Estimate::of(&[1.0]),
            bwt: Estimate::of(&[1.0]),
            forgetting: Estimate::of(&[1.0]),
            diagonal: Estimate::of(&[1.0]),
            leakage: None,
            worst_next_task_retention: None,
            op_vs_baseline: None,
            bwt_vs_baseline: None,
            seconds_per_task: Some(Estimate::of(seconds)),
            adapter_mb: Some(Estimate::of(mb)),
            mean_matrix: vec![vec![1.0]],
            runs: Vec::new(),
        };
        let report = StudyReport {
            name: "s".into(),
            tasks: vec!["a".into()],
            baseline: None,
            cells: vec![
                cell("moram", &[40.0, 44.0], &[2.0, 2.0]),
                cell("moram-task-gated", &[46.0, 50.0], &[3.3, 3.3]),
            ],
        };
        let md = report.markdown();
        assert!(md.contains("| moram | 42.00 ± 25.41 | 2.00 ± 0.00 | 1.00x | 1.00x |"), "{md}");
        assert!(md.contains("| moram-task-gated | 48.00 ± 25.41 | 3.30 ± 0.00 | 1.14x | 1.65x |"), "{md}");
    }

    #[test]
    fn estimates_use_student_t() {
        let e = Estimate::of(&[1.0, 2.0, 3.0]);
        assert_eq!((e.mean, e.n), (2.0, 3));
        // s = 1, t(0.975, 2) = 4.303.
        assert!((e.ci95.unwrap() - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert!(!e.excludes_zero(), "2 - 2.48 < 0");
        assert!(Estimate::of(&[10.0, 11.0, 12.0]).excludes_zero());
        assert_eq!(Estimate::of(&[5.0]).ci95, None);
        assert!(Estimate::of(&[]).mean.is_nan());
        // Beyond 31 values the normal quantile.
        let v: Vec<f64> = (0..40).map(f64::from).collect();
        let sd = (v.iter().map(|x| (x - 19.5).powi(2)).sum::<f64>() / 39.0).sqrt();
        assert!((Estimate::of(&v).ci95.unwrap() - 1.96 * sd / 40f64.sqrt()).abs() < 1e-9);
    }

    #[test]
    fn run_metrics_read_the_matrix() {
        let mut state = RunState {
            format: crate::checkpoint::FORMAT.into(),
            format_version: crate::checkpoint::FORMAT_VERSION,
            task_names: vec!["a".into(), "b".into(), "c".into()],
            matrix: vec![vec![80.0, 0.0, 0.0], vec![20.0, 60.0, 0.0], vec![40.0, 60.0, 50.0]],
            tasks: Vec::new(),
            adapters: Vec::new(),
            seed: 3,
            config_hash: String::new(),
            versions: Default::default(),
        };
        let m = RunMetrics::of(&state).unwrap();
        assert!((m.op - 50.0).abs() < 1e-12);
        assert!((m.diagonal - 190.0 / 3.0).abs() < 1e-12);
        // Task a keeps 20/80 after b, task b keeps 60/60 after c.
        assert_eq!(m.worst_next_task_retention, Some(0.25));
        // Eq. 10: mean over i < T of a[i][i] - a[T][i] = ((80 - 40) + (60 - 60)) / 2.
        assert!((m.bwt - 20.0).abs() < 1e-12);
        state.matrix[0][0] = 0.0;
        assert_eq!(RunMetrics::of(&state).unwrap().worst_next_task_retention, Some(1.0));
    }
}
