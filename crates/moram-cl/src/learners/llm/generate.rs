//! Answering free prompts with a trained adapter (`moram generate`): the prompt is read and the
//! answer generated exactly as evaluation does it (TRACE truncation of the prompt, the run's
//! generation settings, the same batches), so an evaluation prompt gets the text `moram eval`
//! scored. Chat prompts go through the checkpoint's chat template instead.

use super::{eval_batches, LlmLearner};
use crate::config::PromptBudget;
use crate::error::{Error, Result};
use moram_models::llm::{ChatMessage, ChatTokens, GenerationConfig};
use serde::Serialize;

/// One prompt's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The answer's text (special tokens removed).
    pub answer: String,
    /// Tokens the model read (after truncation to the prompt budget).
    pub prompt_tokens: usize,
    /// Tokens generated, the stop token included when one ended the answer.
    pub answer_tokens: usize,
    /// Whether a stop token ended the answer (otherwise `max_new_tokens` did).
    pub stopped: bool,
}

impl LlmLearner {
    /// A learner for generation from an adapter file alone: the base model at `model` (HF folder
    /// or GGUF, f32 on the CPU), the modules and generation settings the file records (a run's
    /// adapter files do), the layer config it holds. The adapter is not loaded yet.
    pub fn for_adapter_file(file: &moram_core::AdapterFile, model: &std::path::Path) -> Result<Self> {
        use crate::checkpoint::{GENERATION_KEY, TARGETS_KEY};
        let read = |key: &str| {
            file.metadata.get(key).ok_or_else(|| Error::Checkpoint {
                path: file.path.clone(),
                message: format!(
                    "records no `{key}` (written before adapter files recorded it); use the run folder it belongs to"
                ),
            })
        };
        let bad = |key: &str, e: serde_json::Error| Error::Checkpoint {
            path: file.path.clone(),
            message: format!("metadata `{key}` is not valid: {e}"),
        };
        let targets: moram_models::TargetSpec =
            serde_json::from_str(read(TARGETS_KEY)?).map_err(|e| bad(TARGETS_KEY, e))?;
        let generation: crate::config::GenerationSettings =
            serde_json::from_str(read(GENERATION_KEY)?).map_err(|e| bad(GENERATION_KEY, e))?;
        let (lm, tok) = super::load_llm(model, tch::Kind::Float, tch::Device::Cpu)?;
        let eval = super::LlmEval { generation, batch_size: 8, max_examples: None };
        Self::new(lm, tok, Vec::new(), &targets, &file.config, eval)
    }

    /// The run's generation settings as the model's config: greedy, stopping at the tokenizer's
    /// EOS ids (what evaluation uses).
    pub fn generation_config(&self) -> GenerationConfig {
        self.eval.generation.generation_config(self.tokenizer.eos.clone(), self.eos)
    }

    /// Token ids of `prompt` as evaluation reads a prompt of task `task` (its prompt budget; the
    /// run's default budget when `task` is `None` or not one of the run's tasks): no special
    /// tokens but BOS, the prompt's tail kept.
    pub fn encode_prompt(&self, prompt: &str, task: Option<&str>) -> Result<Vec<i64>> {
        match task {
            Some(task) => self.prompt_ids(task, prompt),
            None => {
                let budget = PromptBudget::default_for_task("", self.eval.generation.max_prompt_tokens);
                self.tokenize(prompt, budget.max_tokens, true, false, false)
            }
        }
    }

    /// `messages` rendered by the checkpoint's chat template with the assistant's turn opened,
    /// and its token ids (special-token strings become their ids; no BOS is added, since
    /// templates write their own, as `transformers`' `apply_chat_template` does). A text longer
    /// than the prompt budget keeps its tail, as plain prompts do.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<(String, Vec<i64>)> {
        let template = self.tokenizer.chat_template.as_deref().ok_or_else(|| {
            Error::config(
                "model",
                "the checkpoint has no chat template (tokenizer_config.json `chat_template`, \
                 chat_template.jinja or GGUF `tokenizer.chat_template`); give plain prompts instead",
            )
        })?;
        let text_of = |id: Option<i64>| id.and_then(|i| self.tokenizer.token_text(i)).unwrap_or_default();
        let tokens = ChatTokens { bos: text_of(self.bos), eos: text_of(Some(self.eos)) };
        let text = moram_models::llm::chat::render(template, messages, &tokens, true)?;
        let mut ids = self.tokenizer.encode_plain(&text)?;
        let budget = self.eval.generation.max_prompt_tokens;
        if ids.len() > budget {
            tracing::warn!(
                "a chat prompt of {} tokens keeps its last {budget} (generation.max_prompt_tokens)",
                ids.len()
            );
            ids.drain(..ids.len() - budget);
        }
        Ok((text, ids))
    }

    /// Answers prompts given as token ids, in evaluation's batches (prompts of similar length
    /// together, [`LlmLearner`]'s evaluation batch size), with the current adapter and `config`.
    pub fn generate(&mut self, prompts: &[Vec<i64>], config: &GenerationConfig) -> Result<Vec<Answer>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::task("generate", format!("prompt {i} has no token")));
        }
        let lengths = vec![prompts.iter().map(Vec::len).collect::<Vec<_>>()];
        let mut answers = vec![None; prompts.len()];
        for batch in eval_batches(&lengths, self.eval.batch_size, self.pool_padding_budget()) {
            let rows: Vec<Vec<i64>> = batch.iter().map(|&(_, i)| prompts[i].clone()).collect();
            for (&(_, i), answer) in batch.iter().zip(self.generate_batch(&rows, config, &mut |_, _| true)?) {
                answers[i] = Some(answer);
            }
        }
        answers
            .into_iter()
            .enumerate()
            .map(|(i, a)| a.ok_or_else(|| Error::task("generate", format!("prompt {i} was not batched"))))
            .collect()
    }

    /// Answers `prompts` as one left-padded batch, calling `on_token(row, id)` for every id as it
    /// is chosen; a row whose callback returns `false` stops there (a streaming client that went
    /// away). What a server that batches its own requests calls.
    pub fn generate_batch(
        &mut self,
        prompts: &[Vec<i64>],
        config: &GenerationConfig,
        on_token: &mut dyn FnMut(usize, i64) -> bool,
    ) -> Result<Vec<Answer>> {
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(Error::task("generate", format!("prompt {i} has no token")));
        }
        let _guard = tch::no_grad_guard();
        crate::learner::set_training(self, false);
        let memo = if self.reuse_prefix { Some(&mut self.eval_prefix) } else { None };
        let outs = self.model.generate_streaming(prompts, config, memo, on_token)?;
        // The task gate's recognition of free prompts is not a task's evaluation.
        let _ = self.model.take_recognised();
        outs.into_iter()
            .zip(prompts)
            .map(|(out, prompt)| {
                Ok(Answer {
                    answer: self.tokenizer.decode(&out, true)?,
                    prompt_tokens: prompt.len(),
                    answer_tokens: out.len(),
                    stopped: out.last().is_some_and(|t| config.stop_ids.contains(t)),
                })
            })
            .collect()
    }
}
