//! Metrics: sequence-level summaries of the accuracy matrix ([`matrix`]) and the TRACE per-task
//! scores ([`TaskMetric`]), each matching the Python code the paper's numbers came from.

pub mod bootstrap;
pub mod matrix;
pub mod numglue;
pub mod rouge;
pub mod sari;
pub mod text;

pub use matrix::{
    forgetting, fwt, learning, order_robustness, trace_summary, worst_next_task_retention, xtail_clean, xtail_official,
    TraceSummary, XtailSummary,
};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// How one task's generations are scored (`docs/protocol.md`, "TRACE metrics"): by default as the
/// official MoRAM evaluation code scores them; upstream TRACE's variants by name. All scores are on
/// a 0-100 scale. The serde names are the config spellings (`data.metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskMetric {
    /// Prefix rule on the raw generation.
    Accuracy,
    /// C-STANCE/FOMC: letter extraction, then the prefix rule.
    ChoiceAccuracy,
    /// ScienceQA: first character of prediction and answer, then the prefix rule.
    ScienceqaAccuracy,
    /// NumGLUE: the official copy of the Qwen2.5-Math parser ([`numglue::official`]).
    NumglueAccuracy,
    /// NumGLUE with upstream TRACE's parser ([`numglue::upstream`]).
    NumglueAccuracyUpstream,
    /// MeetingBank: pltrdy ROUGE-L F with the prediction as the hypothesis ([`rouge::official_rouge_l`]).
    RougeL,
    /// MeetingBank with upstream TRACE's call, the target as the hypothesis ([`rouge::upstream_rouge_l`]).
    RougeLUpstream,
    /// 20Minuten: SARI with the prompts as sources.
    Sari,
    /// Py150: fuzzywuzzy ratio after the placeholder clean-up.
    Py150Similarity,
}

impl TaskMetric {
    /// Every metric, for listings.
    pub const ALL: [TaskMetric; 9] = [
        TaskMetric::Accuracy,
        TaskMetric::ChoiceAccuracy,
        TaskMetric::ScienceqaAccuracy,
        TaskMetric::NumglueAccuracy,
        TaskMetric::NumglueAccuracyUpstream,
        TaskMetric::RougeL,
        TaskMetric::RougeLUpstream,
        TaskMetric::Sari,
        TaskMetric::Py150Similarity,
    ];

    /// The config name (the serde spelling).
    pub fn name(self) -> String {
        moram_core::config::serde_name(&self)
    }

    /// Parses a config name; the error lists the valid ones.
    pub fn from_name(name: &str) -> Result<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).map_err(|_| {
            let valid: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
            Error::config("data.metrics", format!("`{name}` is not a metric; valid: {}", valid.join(", ")))
        })
    }

    /// The headline metric TRACE's `collect_results.py` uses for a task folder name.
    pub fn default_for_task(task: &str) -> Self {
        match task {
            "C-STANCE" | "FOMC" => TaskMetric::ChoiceAccuracy,
            "ScienceQA" => TaskMetric::ScienceqaAccuracy,
            t if t.starts_with("NumGLUE") => TaskMetric::NumglueAccuracy,
            "MeetingBank" => TaskMetric::RougeL,
            "20Minuten" => TaskMetric::Sari,
            "Py150" => TaskMetric::Py150Similarity,
            _ => TaskMetric::Accuracy,
        }
    }

    /// Scores `predictions` against `targets` (and the prompts, for SARI), 0-100: the mean of
    /// [`TaskMetric::per_example`].
    pub fn score(self, prompts: &[String], predictions: &[String], targets: &[String]) -> Result<f64> {
        let each = self.per_example(prompts, predictions, targets)?;
        Ok(each.iter().sum::<f64>() / each.len() as f64)
    }

    /// Each example's score (0-100). Every metric here is a mean of per-example scores, so these
    /// are what a bootstrap over evaluation examples resamples.
    pub fn per_example(self, prompts: &[String], predictions: &[String], targets: &[String]) -> Result<Vec<f64>> {
        let n = predictions.len();
        if targets.len() != n || prompts.len() != n {
            return Err(Error::metric(
                &self.name(),
                format!("{} prompts, {n} predictions and {} targets must match", prompts.len(), targets.len()),
            ));
        }
        if n == 0 {
            return Err(Error::metric(&self.name(), "no example to score"));
        }
        let hit = |ok: bool| if ok { 100.0 } else { 0.0 };
        let each = |f: &dyn Fn(&str, &str) -> f64| predictions.iter().zip(targets).map(|(p, t)| f(p, t)).collect();
        Ok(match self {
            TaskMetric::Accuracy => each(&|p, t| hit(text::prefix_correct(p, t))),
            TaskMetric::ChoiceAccuracy => each(&|p, t| hit(text::prefix_correct(&text::extract_choice(p), t))),
            TaskMetric::ScienceqaAccuracy => {
                each(&|p, t| hit(text::prefix_correct(&text::scienceqa_letter(p), &text::scienceqa_letter(t))))
            }
            TaskMetric::NumglueAccuracy => each(&|p, t| hit(numglue::official::correct(p, t))),
            TaskMetric::NumglueAccuracyUpstream => each(&|p, t| hit(numglue::upstream::correct(p, t))),
            TaskMetric::RougeL => each(&|p, t| 100.0 * rouge::official_pair(p, t)),
            TaskMetric::RougeLUpstream => each(&|p, t| 100.0 * rouge::upstream_pair(p, t)),
            TaskMetric::Sari => prompts
                .iter()
                .zip(predictions)
                .zip(targets)
                .map(|((s, p), t)| {
                    100.0 * sari::sari_sentence(&sari::normalize(s), &sari::normalize(p), &[sari::normalize(t)])
                })
                .collect(),
            TaskMetric::Py150Similarity => each(&text::py150_similarity),
        })
    }
}
