//! Ready-made [`Learner`]s: X-TAIL on CLIP ([`clip`]) and TRACE-style instruction tasks on
//! decoder LLMs ([`llm`]), and [`build`], the one way a run config becomes a learner.

pub mod clip;
pub mod llm;

use crate::config::{ModelKind, RunConfig};
use crate::error::Result;
use crate::learner::Learner;
use moram_core::MoramLinear;
use tch::Tensor;

/// The learner a run config describes: the model family its `[model]` names, with the data of its
/// `[data]`. Implements [`Learner`] by delegation, so the runner, studies and tools take it as is;
/// match on it for what only one family has (e.g. CLIP's patch maps).
#[derive(Debug)]
pub enum AnyLearner {
    /// A decoder LLM on TRACE-format tasks.
    Llm(Box<llm::LlmLearner>),
    /// CLIP on image domains.
    Clip(Box<clip::ClipLearner>),
}

/// Builds the learner `config` describes. [`RunConfig::validate`] has already refused a model
/// kind that cannot learn the data format. Runs, resumes, evaluation, pruning, figures, the demo
/// and studies all get their learner here.
pub fn build(config: &RunConfig) -> Result<AnyLearner> {
    config.validate()?;
    let (model, _) = config.model_and_data()?;
    if model.kind == ModelKind::Clip && !config.method()?.def().runs_on_clip() {
        return Err(crate::error::Error::config(
            "method.name",
            format!(
                "`{}` needs what only LLM runs have (a prompt to recognise, text to replay); use another method \
                 for CLIP",
                config.method.name
            ),
        ));
    }
    Ok(match model.kind {
        ModelKind::Llm => AnyLearner::Llm(Box::new(llm::LlmLearner::from_config(config)?)),
        ModelKind::Clip => AnyLearner::Clip(Box::new(clip::ClipLearner::from_config(config)?)),
    })
}

macro_rules! delegate {
    ($self:ident, $l:ident => $e:expr) => {
        match $self {
            AnyLearner::Llm($l) => $e,
            AnyLearner::Clip($l) => $e,
        }
    };
}

impl Learner for AnyLearner {
    fn task_names(&self) -> Vec<String> {
        delegate!(self, l => l.task_names())
    }
    fn architecture(&self) -> Option<String> {
        delegate!(self, l => l.architecture())
    }
    fn tokens_seen(&self) -> Option<u64> {
        delegate!(self, l => l.tokens_seen())
    }
    fn train_len(&self, task: usize) -> usize {
        delegate!(self, l => l.train_len(task))
    }
    fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
        delegate!(self, l => l.moram_layers())
    }
    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
        delegate!(self, l => l.moram_layers_mut())
    }
    fn total_parameters(&self) -> usize {
        delegate!(self, l => l.total_parameters())
    }
    fn prepare_task(&mut self, task: usize) -> Result<()> {
        delegate!(self, l => l.prepare_task(task))
    }
    fn loss(&mut self, task: usize, indices: &[usize]) -> Result<Tensor> {
        delegate!(self, l => l.loss(task, indices))
    }
    fn answer_logits(&mut self, task: usize, indices: &[usize]) -> Result<moram_models::llm::AnswerLogits> {
        delegate!(self, l => l.answer_logits(task, indices))
    }
    fn begin_evaluation(&mut self) -> Result<()> {
        delegate!(self, l => l.begin_evaluation())
    }
    fn evaluate(&mut self, task: usize) -> Result<f64> {
        delegate!(self, l => l.evaluate(task))
    }
    fn eval_len(&self, task: usize) -> Option<usize> {
        delegate!(self, l => l.eval_len(task))
    }
    fn evaluate_examples(
        &mut self,
        task: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<(f64, serde_json::Value)>> {
        delegate!(self, l => l.evaluate_examples(task, range))
    }
    fn evaluates_across_tasks(&self) -> bool {
        delegate!(self, l => l.evaluates_across_tasks())
    }
    fn evaluate_parts(
        &mut self,
        parts: &[(usize, std::ops::Range<usize>)],
        done: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<(f64, serde_json::Value)>>> {
        delegate!(self, l => l.evaluate_parts(parts, done))
    }
    fn last_outputs(&self) -> Option<serde_json::Value> {
        delegate!(self, l => l.last_outputs())
    }
    fn task_gate(&self) -> Option<&moram_core::TaskGate> {
        delegate!(self, l => l.task_gate())
    }
    fn set_task_gate(&mut self, gate: Option<moram_core::TaskGate>) -> Result<()> {
        delegate!(self, l => l.set_task_gate(gate))
    }
    fn fit_task_gate(&mut self, task: usize, examples: &[usize]) -> Result<()> {
        delegate!(self, l => l.fit_task_gate(task, examples))
    }
    fn recognised_tasks(&mut self, task: usize) -> Result<Option<Vec<u32>>> {
        delegate!(self, l => l.recognised_tasks(task))
    }
}
