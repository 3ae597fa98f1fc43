//! Commands on a finished (or partly finished) run folder: `eval`, `viz`, `prune`. Each rebuilds
//! the run's learner from its stored config and loads an adapter it saved.

use crate::viz;
use anyhow::{Context, Result};
use moram_cl::learners::AnyLearner;
use moram_cl::{Learner, RunConfig, RunOptions, RunState};
use std::path::Path;

/// The run's config, state and learner with its last adapter loaded.
fn run_learner(dir: &Path) -> Result<(RunConfig, RunState, AnyLearner)> {
    let cfg = moram_cl::checkpoint::read_config(dir)
        .with_context(|| format!("{} is not a moram run folder", dir.display()))?;
    let state = RunState::load(dir)?;
    let adapter = state
        .adapter_file()
        .with_context(|| format!("{}: no task finished yet, so there is no adapter", dir.display()))?;
    let mut learner = moram_cl::learners::build(&cfg)?;
    moram_cl::checkpoint::load_adapter(&mut learner, &dir.join(adapter))?;
    Ok((cfg, state, learner))
}

/// `moram eval`: scores every task with the adapter saved after task `after` (default: the last).
pub fn eval(dir: &Path, after: Option<usize>) -> Result<()> {
    let (_, state, mut learner) = run_learner(dir)?;
    eval_with(&mut learner, dir, &state, after)
}

fn eval_with(learner: &mut impl Learner, dir: &Path, state: &RunState, after: Option<usize>) -> Result<()> {
    let t = after.unwrap_or(state.tasks_done() - 1);
    anyhow::ensure!(t < state.tasks_done(), "--after {t}: only tasks 0..{} are finished", state.tasks_done() - 1);
    moram_cl::checkpoint::load_adapter(learner, &dir.join(&state.adapters[t]))?;
    let row = moram_cl::runner::evaluate_every_task(
        learner,
        &RunOptions { stop: None, progress: crate::progress_bars(), ..RunOptions::default() },
    )?;
    println!("| after task {t} ({}) | {} |", state.task_names[t], state.task_names.join(" | "));
    println!("|---|{}", "---:|".repeat(row.len()));
    let cells: Vec<String> = row.iter().map(|v| format!("{v:.2}")).collect();
    println!("| score | {} |", cells.join(" | "));
    let stored = &state.matrix[t];
    let same = stored.iter().zip(&row).all(|(a, b)| (a - b).abs() < 1e-9);
    println!("{}", if same { "equal to the run's stored row" } else { "differs from the run's stored row" });
    let out = dir.join(format!("eval-after-task{t}.json"));
    let json = serde_json::json!({"after_task": t, "scores": row, "stored": stored});
    std::fs::write(&out, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Title of every accuracy-matrix figure.
pub(crate) const SCORE_TITLE: &str = "score (0-100) on each task (columns) after training each task (rows)";

/// `moram viz`: the run's figures in `DIR/figures`.
pub fn figures(dir: &Path, examples: usize) -> Result<()> {
    let (cfg, state, mut learner) = run_learner(dir)?;
    let out = dir.join("figures");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let names = &state.task_names;
    viz::matrix_heatmap(&state.matrix, names, names, SCORE_TITLE, &out.join("accuracy-matrix.png"))?;
    let mut written = vec!["accuracy-matrix.png".to_string()];
    written.extend(routing_figures(&state, &out, "")?);
    written.extend(plasticity_figure(&state, &out)?);
    let (micro, _) = cfg.training.accumulation();
    let stats = moram_cl::analysis::activation_stats(&mut learner, examples, micro)?;
    let summary = moram_cl::analysis::atom_summary(&stats, 0.99);
    let ratio_title = "share of each task's tokens (rows) giving each atom a non-zero weight, mean over layers";
    let r = cfg.layer_config()?.r;
    viz::atom_heatmap(&summary.activation_ratio, r, names, ratio_title, &out.join("activation-ratio.png"))?;
    let share = format!("{:.0}%", 100.0 * summary.share);
    let mass_title = format!("cumulative activation mass of each adapted layer on all tasks' data ({share} dashed)");
    viz::cumulative_curves(
        &summary.cumulative_mass,
        summary.share,
        "atoms, sorted by mass",
        &mass_title,
        &out.join("cumulative-mass.png"),
    )?;
    let max = stats.first().and_then(|l| l.first()).map_or(1, |l| l.stats.mass.len()) as f64;
    let bars_title = format!("atoms carrying {share} of the mass (of {max})");
    let layers = format!("the {} adapted layers, in model order", summary.atoms_for_share.len());
    viz::bar_chart(&summary.atoms_for_share, max, &layers, &bars_title, &out.join("atoms-per-layer.png"))?;
    let json = serde_json::json!({"activation_ratio": summary.activation_ratio, "atoms_for_99": summary.atoms_for_share,
        "layers": summary.layers});
    std::fs::write(out.join("figures.json"), serde_json::to_string_pretty(&json)?)?;
    written.extend(["activation-ratio.png", "cumulative-mass.png", "atoms-per-layer.png"].map(String::from));
    if let AnyLearner::Clip(clip) = &learner {
        for map in clip.patch_maps()? {
            let name = format!("patch-map-{}.png", map.task.replace(['/', '\\'], "_"));
            let mut labels = vec![format!("image ({})", map.task)];
            labels.extend(state.task_names.iter().take(map.maps.len()).map(|t| format!("atoms of {t}")));
            let title = "atom weight per patch, summed over each task's atoms";
            viz::patch_panel(&viz::denormalize(&map.image)?, &map.maps, map.grid, &labels, title, &out.join(&name))?;
            written.push(name);
        }
    }
    println!("figures in {}: {}", out.display(), written.join(", "));
    Ok(())
}

/// The routing diagnostics the run recorded: the weight share of each task's atoms on each
/// task's data after the last task (percent; rows = data, columns = atoms' task), and the leakage
/// onto each task's data after every task (rows = after task t, columns = data of task i).
/// `suffix` is appended to the file names (`routing-leakage{suffix}.png`).
pub(crate) fn routing_figures(state: &RunState, out: &Path, suffix: &str) -> Result<Vec<String>> {
    let Some(last) = state.tasks.last().and_then(|t| t.routing.as_ref()) else { return Ok(Vec::new()) };
    let pct = |m: &[Vec<f64>]| m.iter().map(|r| r.iter().map(|v| 100.0 * v).collect()).collect::<Vec<Vec<f64>>>();
    let (share, leak) = (format!("routing-weight-share{suffix}.png"), format!("routing-leakage{suffix}.png"));
    let names = &state.task_names;
    let atoms: Vec<String> = names.iter().map(|t| format!("atoms of {t}")).collect();
    let title = "weight share (%) of each task's atoms (columns) on each task's tokens (rows), after the last task";
    viz::matrix_heatmap(&pct(&last.weight_share), names, &atoms, title, &out.join(&share))?;
    let n = state.task_names.len();
    let leakage: Vec<Vec<f64>> = state
        .tasks
        .iter()
        .filter_map(|t| t.routing.as_ref())
        .map(|d| (0..n).map(|i| d.leakage.get(i).map_or(0.0, |v| 100.0 * v)).collect())
        .collect();
    let after: Vec<String> = names.iter().take(leakage.len()).map(|t| format!("after {t}")).collect();
    let title = "routing leakage (%): weight later tasks' atoms take on each task's tokens (columns)";
    viz::matrix_heatmap(&leakage, &after, names, title, &out.join(&leak))?;
    Ok(vec![share, leak])
}

/// The plasticity diagnostics (`docs/method.md`): for each task (rows), the share of its training
/// tokens its new atoms were open to right after it trained, per adapted layer (columns, in model
/// order). Nothing when the run recorded no per-layer shares.
pub(crate) fn plasticity_figure(state: &RunState, out: &Path) -> Result<Vec<String>> {
    let rows: Vec<Vec<f64>> = state
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(t, rec)| {
            let layers = &rec.routing.as_ref()?.layers;
            layers.iter().map(|l| l.open_share.get(t).map(|v| 100.0 * v)).collect::<Option<Vec<f64>>>()
        })
        .collect();
    if rows.is_empty() || rows.len() != state.tasks.len() {
        return Ok(Vec::new());
    }
    let names: Vec<String> = state.task_names.iter().take(rows.len()).cloned().collect();
    let layers: Vec<String> = (1..=rows[0].len()).map(|i| i.to_string()).collect();
    let title = "share (%) of each task's tokens (rows) its new atoms are open to, per adapted layer (columns)";
    viz::matrix_heatmap(&rows, &names, &layers, title, &out.join("plasticity.png"))?;
    Ok(vec!["plasticity.png".into()])
}

/// `moram prune`: keeps the atoms carrying `share` of the mass on all tasks' data, per layer.
pub fn prune(dir: &Path, share: f64, examples: usize) -> Result<()> {
    anyhow::ensure!(share > 0.0 && share <= 1.0, "--share must lie in (0, 1], found {share}");
    let (cfg, state, mut learner) = run_learner(dir)?;
    let (micro, _) = cfg.training.accumulation();
    let stats = moram_cl::analysis::activation_stats(&mut learner, examples, micro)?;
    let counts = moram_cl::analysis::prune(&mut learner, &stats, share, moram_core::PruneScope::All)?;
    let row = moram_cl::runner::evaluate_every_task(
        &mut learner,
        &RunOptions { stop: None, progress: crate::progress_bars(), ..RunOptions::default() },
    )?;
    let file = format!("adapter-pruned-{share}.safetensors");
    let mut extra = moram_cl::checkpoint::adapter_metadata(&learner, &cfg)?;
    extra.insert("task_names".to_string(), state.task_names[..state.tasks_done()].join("\n"));
    extra.insert("pruned_share".to_string(), share.to_string());
    let layers = learner.moram_layers();
    let banks = layers.iter().map(|(p, m)| (p.as_str(), m.bank()));
    moram_core::save_adapter_with_gate(dir.join(&file), banks, learner.task_gate(), &extra)?;
    let last = state.matrix.last().context("the run has no finished task")?;
    println!("| | {} | mean |\n|---|{}---:|", state.task_names.join(" | "), "---:|".repeat(row.len()));
    let fmt = |r: &[f64]| r.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" | ");
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len().max(1) as f64;
    println!("| before pruning | {} | {:.2} |", fmt(last), mean(last));
    println!("| after pruning ({share}) | {} | {:.2} |", fmt(&row), mean(&row));
    let (before, after) = (counts.parameters_before, counts.parameters_after);
    println!(
        "atom parameters {before} -> {after} ({:.1}% kept); pruned adapter: {}",
        100.0 * after as f64 / before.max(1) as f64,
        dir.join(&file).display()
    );
    Ok(())
}
