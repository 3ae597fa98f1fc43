//! Plasticity diagnostics (`docs/method.md`, "Plasticity diagnostics"): could each task change the
//! model at all? A method that keeps old tasks by closing atoms, or by protecting a subspace, can
//! close so much that a new task trains and nothing moves; these numbers say so after every task,
//! next to the leakage that says whether old tasks were kept.

use crate::checkpoint::TaskRecord;
use serde::{Deserialize, Serialize};

/// Below this share of its tokens (or prompts), a task is warned about: most of its data cannot
/// change the model.
pub const WARN_BELOW: f64 = 0.5;

/// What one task could change, from its [`TaskRecord`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPlasticity {
    /// Task name.
    pub name: String,
    /// Share of the task's training tokens its new atoms are open to (novelty or task gate), mean
    /// over adapted layers; `None` without routing diagnostics.
    pub open_share: Option<f64>,
    /// The adapted layer where that share is lowest, and its share.
    pub lowest_open: Option<(String, f64)>,
    /// Summed weight the task's own atoms carry on its tokens (layer mean).
    pub own_weight: Option<f64>,
    /// Protected input subspace width over input width after the task, mean over layers.
    pub basis_share: Option<f64>,
    /// Relative drop of the training loss, first step to last: `(first - last) / first`.
    pub loss_drop: Option<f64>,
    /// Task-gated atoms: share of the task's evaluation prompts recognised as this task.
    pub recognised: Option<f64>,
}

/// The plasticity of task `task` from its record.
pub fn of_task(record: &TaskRecord, task: usize) -> TaskPlasticity {
    let routing = record.routing.as_ref().filter(|r| task < r.tasks);
    let open_share = routing.and_then(|r| r.open_share.get(task).copied());
    let lowest_open = routing.and_then(|r| {
        r.layers
            .iter()
            .filter_map(|l| l.open_share.get(task).map(|&s| (l.layer.clone(), s)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    });
    let own_weight = routing.and_then(|r| r.weight_share.get(task).and_then(|row| row.get(task)).copied());
    let basis_share =
        record.subspace_share.as_ref().filter(|s| !s.is_empty()).map(|s| s.iter().sum::<f64>() / s.len() as f64);
    let loss_drop = record
        .first_loss
        .filter(|f| f.is_finite() && *f > 0.0 && record.final_loss.is_finite())
        .map(|f| (f - record.final_loss) / f);
    let recognised = record.recognition.as_ref().and_then(|m| m.get(task)).and_then(|row| row.get(task)).copied();
    TaskPlasticity {
        name: record.name.clone(),
        open_share,
        lowest_open,
        own_weight,
        basis_share,
        loss_drop,
        recognised,
    }
}

/// The warnings a run logs after task `task` when most of the task's data cannot change the model.
pub fn warnings(record: &TaskRecord, task: usize) -> Vec<String> {
    let p = of_task(record, task);
    let mut out = Vec::new();
    if let (Some(open), Some((layer, lowest))) = (p.open_share, &p.lowest_open) {
        if open < WARN_BELOW {
            out.push(format!(
                "task {} can barely change the model: its new atoms are open on only {:.0}% of its tokens \
                 (layer mean; {:.0}% at {layer}); the gate keeps tokens that resemble earlier tasks' closed to \
                 it (docs/method.md, \"Plasticity diagnostics\")",
                p.name,
                100.0 * open,
                100.0 * lowest
            ));
        }
    }
    if let Some(r) = p.recognised.filter(|r| *r < WARN_BELOW) {
        out.push(format!(
            "task {} is recognised for only {:.0}% of its evaluation prompts: at inference its atoms serve \
             the rest of them not at all (its prompts look like another task's)",
            p.name,
            100.0 * r
        ));
    }
    out
}

/// Percent with one decimal, or `-`.
fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}", 100.0 * x)).unwrap_or_else(|| "-".into())
}

/// The plasticity of every finished task (each measured right after it trained), and the task
/// gate's recognition after the last one, as Markdown; empty when nothing was measured.
pub fn markdown(records: &[TaskRecord], names: &[String]) -> String {
    let rows: Vec<TaskPlasticity> = records.iter().enumerate().map(|(t, r)| of_task(r, t)).collect();
    let measured = |f: fn(&TaskPlasticity) -> bool| rows.iter().any(f);
    if !measured(|p| p.open_share.is_some() || p.recognised.is_some() || p.basis_share.is_some()) {
        return String::new();
    }
    let mut s = String::from(
        "Plasticity of each task, measured right after it trained: the share of its training tokens its          new atoms are open to (layer mean, and the lowest layer), the weight they carry there, the          protected input subspace's width over the layer's input width, the training loss from the          first step to the last, and the share of its evaluation prompts the task gate recognised as          it.

| task | atoms open % | lowest layer % | own weight % | basis width % | loss first -> last | recognised % |
         |---|---:|---|---:|---:|---|---:|
",
    );
    for (p, r) in rows.iter().zip(records) {
        let lowest = p.lowest_open.as_ref().map(|(l, v)| format!("{:.1} ({l})", 100.0 * v)).unwrap_or("-".into());
        let loss = match r.first_loss {
            Some(f) => format!("{f:.3} -> {:.3}", r.final_loss),
            None => format!("- -> {:.3}", r.final_loss),
        };
        s.push_str(&format!(
            "| {} | {} | {lowest} | {} | {} | {loss} | {} |
",
            p.name,
            pct(p.open_share),
            pct(p.own_weight),
            pct(p.basis_share),
            pct(p.recognised)
        ));
    }
    if let Some(m) = records.last().and_then(|r| r.recognition.as_ref()) {
        let seen = m.first().map_or(0, Vec::len);
        s.push_str(&format!(
            "
Task recognition after task {seen}: share (%) of each task's evaluation prompts (rows)              the gate sends to each task so far (columns).

| prompts of \\ recognised as |"
        ));
        for name in names.iter().take(seen) {
            s.push_str(&format!(" {name} |"));
        }
        s.push_str(
            "
|---|",
        );
        s.push_str(&"---:|".repeat(seen));
        s.push('\n');
        for (name, row) in names.iter().zip(m) {
            s.push_str(&format!("| {name} |"));
            for v in row {
                s.push_str(&format!(" {:.1} |", 100.0 * v));
            }
            s.push('\n');
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::{LayerRouting, RoutingDiagnostics};

    fn record(open: [f64; 2], recognised: f64) -> TaskRecord {
        let layer = |name: &str, o: f64| LayerRouting {
            layer: name.into(),
            weight_share: vec![vec![0.9, 0.0], vec![0.5, 0.25]],
            own_top1: vec![0.9, 0.3],
            key_norm: vec![Some(1.0); 2],
            open_share: vec![1.0, o],
        };
        TaskRecord {
            name: "desk".into(),
            steps: 10,
            final_loss: 1.5,
            first_loss: Some(6.0),
            trainable_parameters: 1,
            adapter_parameters: 1,
            total_parameters: 1,
            atoms: 1,
            seconds: 1.0,
            peak_rss_mib: None,
            prune: None,
            subspace_dims: Some(vec![100, 300]),
            subspace_share: Some(vec![0.25, 0.75]),
            routing: Some(RoutingDiagnostics {
                tasks: 2,
                examples: vec![8, 8],
                leakage: vec![0.0, 0.0],
                weight_share: vec![vec![0.9, 0.0], vec![0.5, 0.25]],
                own_top1: vec![0.9, 0.3],
                key_norm: vec![Some(1.0); 2],
                open_share: vec![1.0, (open[0] + open[1]) / 2.0],
                layers: vec![layer("a", open[0]), layer("b", open[1])],
            }),
            recognition: Some(vec![vec![1.0, 0.0], vec![1.0 - recognised, recognised]]),
            workers: 1,
            communication_seconds: 0.0,
        }
    }

    #[test]
    fn a_task_whose_atoms_are_mostly_closed_is_reported_and_warned_about() {
        let r = record([0.1, 0.3], 1.0);
        let p = of_task(&r, 1);
        assert_eq!(p.open_share, Some(0.2));
        assert_eq!(p.lowest_open, Some(("a".into(), 0.1)));
        assert_eq!(p.own_weight, Some(0.25));
        assert_eq!(p.basis_share, Some(0.5));
        assert_eq!(p.loss_drop, Some(0.75));
        let w = warnings(&r, 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("task desk can barely change the model") && w[0].contains("20%"), "{}", w[0]);
        assert!(w[0].contains("10% at a"), "{}", w[0]);
    }

    #[test]
    fn an_open_task_gets_no_warning_and_an_unrecognised_one_does() {
        assert!(warnings(&record([0.9, 1.0], 1.0), 1).is_empty());
        let w = warnings(&record([1.0, 1.0], 0.25), 1);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("recognised for only 25%"), "{}", w[0]);
    }
}
