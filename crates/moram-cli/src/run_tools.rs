//! Commands on a finished (or partly finished) run folder: `eval`, `viz`, `prune`. Each rebuilds
//! the run's learner from its stored config and loads an adapter it saved.

use crate::viz;
use anyhow::{Context, Result};
use moram_cl::config::ModelKind;
use moram_cl::learners::clip::ClipLearner;
use moram_cl::learners::llm::LlmLearner;
use moram_cl::{Learner, RunConfig, RunOptions, RunState};
use std::path::Path;

/// The learner of a run, by model family.
enum RunLearner {
    Llm(Box<LlmLearner>),
    Clip(Box<ClipLearner>),
}

/// The run's config, state and learner with its last adapter loaded.
fn run_learner(dir: &Path) -> Result<(RunConfig, RunState, RunLearner)> {
    let cfg = moram_cl::checkpoint::read_config(dir)
        .with_context(|| format!("{} is not a moram run folder", dir.display()))?;
    let state = RunState::load(dir)?;
    anyhow::ensure!(state.tasks_done() > 0, "{}: no task finished yet, so there is no adapter", dir.display());
    let model = cfg.model.as_ref().context("the run's config has no [model] section")?;
    let data = cfg.data.as_ref().context("the run's config has no [data] section")?;
    let moram = cfg.method.moram_config()?;
    let adapter = dir.join(state.adapter_file().unwrap_or_default());
    let learner = match model.kind {
        ModelKind::Llm => {
            let mut l = LlmLearner::from_config(model, data, &moram, &cfg.generation, cfg.training.max_eval_examples)?;
            moram_cl::checkpoint::load_adapter(&mut l, &adapter)?;
            RunLearner::Llm(Box::new(l))
        }
        ModelKind::Clip => {
            let mut l = ClipLearner::from_config(model, data, &moram, cfg.generation.batch_size, cfg.seed)?;
            moram_cl::checkpoint::load_adapter(&mut l, &adapter)?;
            RunLearner::Clip(Box::new(l))
        }
    };
    Ok((cfg, state, learner))
}

/// `moram eval`: scores every task with the adapter saved after task `after` (default: the last).
pub fn eval(dir: &Path, after: Option<usize>) -> Result<()> {
    let (_, state, learner) = run_learner(dir)?;
    match learner {
        RunLearner::Llm(mut l) => eval_with(l.as_mut(), dir, &state, after),
        RunLearner::Clip(mut l) => eval_with(l.as_mut(), dir, &state, after),
    }
}

fn eval_with(learner: &mut impl Learner, dir: &Path, state: &RunState, after: Option<usize>) -> Result<()> {
    let t = after.unwrap_or(state.tasks_done() - 1);
    anyhow::ensure!(t < state.tasks_done(), "--after {t}: only tasks 0..{} are finished", state.tasks_done() - 1);
    moram_cl::checkpoint::load_adapter(learner, &dir.join(&state.adapters[t]))?;
    let row = moram_cl::runner::evaluate_every_task(learner, &RunOptions { stop: None, progress: true })?;
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

/// `moram viz`: the run's figures in `DIR/figures`.
pub fn figures(dir: &Path, examples: usize) -> Result<()> {
    let (cfg, state, learner) = run_learner(dir)?;
    let out = dir.join("figures");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    viz::matrix_heatmap(&state.matrix, &out.join("accuracy-matrix.png"))?;
    let mut written = vec!["accuracy-matrix.png".to_string()];
    written.extend(routing_figures(&state, &out, "")?);
    match learner {
        RunLearner::Llm(mut l) => atom_figures(l.as_mut(), &cfg, examples, &out, &mut written)?,
        RunLearner::Clip(mut l) => {
            atom_figures(l.as_mut(), &cfg, examples, &out, &mut written)?;
            patch_maps(&l, &out, &mut written)?;
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
    viz::matrix_heatmap(&pct(&last.weight_share), &out.join(&share))?;
    let n = state.task_names.len();
    let leakage: Vec<Vec<f64>> = state
        .tasks
        .iter()
        .filter_map(|t| t.routing.as_ref())
        .map(|d| (0..n).map(|i| d.leakage.get(i).map_or(0.0, |v| 100.0 * v)).collect())
        .collect();
    viz::matrix_heatmap(&leakage, &out.join(&leak))?;
    Ok(vec![share, leak])
}

/// Activation ratio per atom on each task's data (averaged over layers), cumulative mass per
/// layer with the 99% mark, atoms needed per layer; and their numbers in `figures.json`.
fn atom_figures(
    learner: &mut impl Learner,
    cfg: &RunConfig,
    examples: usize,
    out: &Path,
    written: &mut Vec<String>,
) -> Result<()> {
    let (micro, _) = cfg.training.accumulation();
    let stats = moram_cl::analysis::activation_stats(learner, examples, micro)?;
    let n_atoms = stats.iter().flatten().map(|l| l.stats.mass.len()).min().unwrap_or(0);
    let ratio: Vec<Vec<f64>> = stats
        .iter()
        .map(|layers| {
            (0..n_atoms)
                .map(|a| layers.iter().map(|l| l.stats.activation_ratio()[a]).sum::<f64>() / layers.len().max(1) as f64)
                .collect()
        })
        .collect();
    viz::atom_heatmap(&ratio, cfg.method.moram_config()?.r, &out.join("activation-ratio.png"))?;
    let n_layers = stats.first().map_or(0, Vec::len);
    let (mut curves, mut needed) = (Vec::new(), Vec::new());
    for l in 0..n_layers {
        let mut mass = vec![0.0; stats[0][l].stats.mass.len()];
        for task in &stats {
            for (m, x) in mass.iter_mut().zip(&task[l].stats.mass) {
                *m += x;
            }
        }
        needed.push(moram_core::atoms_for_share(&mass, 0.99) as f64);
        let total: f64 = mass.iter().sum();
        mass.sort_by(|a, b| b.total_cmp(a));
        let mut acc = 0.0;
        curves.push(
            mass.iter()
                .map(|m| {
                    acc += m;
                    if total > 0.0 {
                        acc / total
                    } else {
                        0.0
                    }
                })
                .collect::<Vec<f64>>(),
        );
    }
    viz::cumulative_curves(&curves, 0.99, &out.join("cumulative-mass.png"))?;
    let max = stats.first().and_then(|l| l.first()).map_or(1, |l| l.stats.mass.len()) as f64;
    viz::bar_chart(&needed, max, &out.join("atoms-per-layer.png"))?;
    let names: Vec<&str> = stats.first().map(|l| l.iter().map(|s| s.layer.as_str()).collect()).unwrap_or_default();
    let summary = serde_json::json!({"activation_ratio": ratio, "atoms_for_99": needed, "layers": names});
    std::fs::write(out.join("figures.json"), serde_json::to_string_pretty(&summary)?)?;
    written.extend(["activation-ratio.png", "cumulative-mass.png", "atoms-per-layer.png"].map(String::from));
    Ok(())
}

/// Per-patch activation maps (paper Figs. 3, 6, 7): for the first test image of each task, the
/// weight mass of each task's atoms on every image patch in the last adapted vision layer.
fn patch_maps(learner: &ClipLearner, out: &Path, written: &mut Vec<String>) -> Result<()> {
    let model = learner.model();
    let Some((layer, atom_task)) = model
        .moram_layers()
        .into_iter()
        .rfind(|(p, _)| p.starts_with("vision_model"))
        .map(|(p, m)| (p, m.bank().atom_task().to_vec()))
    else {
        return Ok(());
    };
    let n_tasks = learner.tasks().len();
    let _guard = tch::no_grad_guard();
    model.set_capture(&layer, true)?;
    for task in learner.tasks() {
        let x = task.test_images.batch(&[0], None)?.to_device(model.device());
        let _ = model.encode_image(&x)?;
        let w = model
            .take_captured(&layer)
            .context("no atom weights captured")?
            .to_device(tch::Device::Cpu)
            .to_kind(tch::Kind::Double);
        let (l, r) = (w.size()[1], w.size()[2]);
        let grid = ((l - 1) as f64).sqrt().round() as i64;
        let w = w.get(0).narrow(0, 1, grid * grid);
        let maps: Vec<Vec<f64>> = (0..n_tasks)
            .map(|s| {
                let cols: Vec<i64> = (0..r).filter(|&a| atom_task.get(a as usize) == Some(&(s as u32))).collect();
                if cols.is_empty() {
                    return vec![0.0; (grid * grid) as usize];
                }
                let idx = tch::Tensor::from_slice(&cols);
                Vec::<f64>::try_from(w.index_select(1, &idx).sum_dim_intlist(
                    [1i64].as_slice(),
                    false,
                    tch::Kind::Double,
                ))
                .unwrap_or_default()
            })
            .collect();
        let name = format!("patch-map-{}.png", task.name.replace(['/', '\\'], "_"));
        viz::patch_panel(
            &viz::denormalize(&x.to_device(tch::Device::Cpu).get(0))?,
            &maps,
            grid as usize,
            &out.join(&name),
        )?;
        written.push(name);
    }
    model.set_capture(&layer, false)?;
    Ok(())
}

/// `moram prune`: keeps the atoms carrying `share` of the mass on all tasks' data, per layer.
pub fn prune(dir: &Path, share: f64, examples: usize) -> Result<()> {
    anyhow::ensure!(share > 0.0 && share <= 1.0, "--share must lie in (0, 1], found {share}");
    let (cfg, state, learner) = run_learner(dir)?;
    match learner {
        RunLearner::Llm(mut l) => prune_with(l.as_mut(), &cfg, &state, dir, share, examples),
        RunLearner::Clip(mut l) => prune_with(l.as_mut(), &cfg, &state, dir, share, examples),
    }
}

fn prune_with(
    learner: &mut impl Learner,
    cfg: &RunConfig,
    state: &RunState,
    dir: &Path,
    share: f64,
    examples: usize,
) -> Result<()> {
    let (micro, _) = cfg.training.accumulation();
    let stats = moram_cl::analysis::activation_stats(learner, examples, micro)?;
    let (mut before, mut after) = (0usize, 0usize);
    for (i, (path, m)) in learner.moram_layers_mut().into_iter().enumerate() {
        let mut merged = stats[0][i].stats.clone();
        for task in &stats[1..] {
            merged.merge(&task[i].stats)?;
        }
        let plan = moram_core::plan_pruning(m.bank(), &merged, share, moram_core::PruneScope::All)
            .with_context(|| format!("planning the pruning of {path}"))?;
        before += m.bank().parameter_count();
        let pruned = m.bank().prune(&plan)?;
        after += pruned.parameter_count();
        m.replace_bank(pruned)?;
    }
    let row = moram_cl::runner::evaluate_every_task(learner, &RunOptions { stop: None, progress: true })?;
    let file = format!("adapter-pruned-{share}.safetensors");
    let layers = learner.moram_layers();
    let mut extra = std::collections::BTreeMap::new();
    extra.insert("pruned_share".to_string(), share.to_string());
    moram_core::save_adapter(dir.join(&file), layers.iter().map(|(p, m)| (p.as_str(), m.bank())), &extra)?;
    let last = state.matrix.last().cloned().unwrap_or_default();
    println!("| | {} | mean |\n|---|{}---:|", state.task_names.join(" | "), "---:|".repeat(row.len()));
    let fmt = |r: &[f64]| r.iter().map(|v| format!("{v:.2}")).collect::<Vec<_>>().join(" | ");
    let mean = |r: &[f64]| r.iter().sum::<f64>() / r.len().max(1) as f64;
    println!("| before pruning | {} | {:.2} |", fmt(&last), mean(&last));
    println!("| after pruning ({share}) | {} | {:.2} |", fmt(&row), mean(&row));
    println!(
        "atom parameters {before} -> {after} ({:.1}% kept); pruned adapter: {}",
        100.0 * after as f64 / before.max(1) as f64,
        dir.join(&file).display()
    );
    Ok(())
}
