//! TRACE on a decoder LLM: causal-LM loss on the answer tokens (protocol 4.4), greedy generation
//! with the repetition penalty and no-repeat-n-gram settings (4.6), and the task's metric (4.7).

use crate::config::{GenerationSettings, PromptBudget, PromptKeep, RunConfig, Split};
use crate::data::trace::{load_task_split, Example};
use crate::error::{Error, Result};
use crate::learner::Learner;
use crate::metrics::TaskMetric;
use moram_core::{MoramConfig, MoramLinear, TaskGate};
use moram_models::llm::{AnswerLogits, CausalLm, GgufFile, LlmConfig, LlmTokenizer, PrefixMemo};
use moram_models::{TargetSpec, WeightSource};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

mod generate;
pub use generate::Answer;

/// One instruction task.
#[derive(Debug, Clone)]
pub struct TextTask {
    /// Task name (TRACE folder name).
    pub name: String,
    /// Training pairs.
    pub train: Vec<Example>,
    /// Pairs scored after every task.
    pub eval: Vec<Example>,
    /// How generations are scored.
    pub metric: TaskMetric,
    /// How many prompt tokens it keeps, and which end (`None`: the default for its name).
    pub prompt: Option<PromptBudget>,
}

impl TextTask {
    /// Loads `<dir>/<name>/{train,<eval_split>}.json`; the metric is TRACE's default for the name
    /// unless `metric` is given.
    pub fn load(dir: &std::path::Path, name: &str, eval_split: Split, metric: Option<TaskMetric>) -> Result<Self> {
        let train = load_task_split(dir, name, "train")?;
        let eval = load_task_split(dir, name, eval_split.name())?;
        for (split, v) in [("train", &train), (eval_split.name(), &eval)] {
            if v.is_empty() {
                return Err(Error::task(name, format!("the {split} split is empty")));
            }
        }
        Ok(TextTask {
            name: name.into(),
            train,
            eval,
            metric: metric.unwrap_or(TaskMetric::default_for_task(name)),
            prompt: None,
        })
    }
}

/// A causal LM learning a sequence of [`TextTask`]s.
#[derive(Debug)]
pub struct LlmLearner {
    model: CausalLm,
    tokenizer: LlmTokenizer,
    tasks: Vec<TextTask>,
    eval: LlmEval,
    bos: Option<i64>,
    eos: i64,
    /// `{prompt, generation, answer, score}` of each example of the last evaluation.
    last: Vec<serde_json::Value>,
    /// Whether the frozen leading blocks' work is computed once and reused (see [`FROZEN_PREFIX_BUDGET`]).
    reuse_prefix: bool,
    /// Hidden states `(L, d)` entering the first adapted block for each training example
    /// `(task, index)`, with the number of blocks they cover.
    train_prefix: HashMap<(usize, usize), (usize, Tensor)>,
    train_prefix_bytes: usize,
    /// The evaluation prompt batches' pass through the frozen leading blocks.
    eval_prefix: PrefixMemo,
    /// Task-gated atoms: the task the last evaluation recognised for each `(task, example)`.
    recognised: HashMap<(usize, usize), u32>,
    /// Tokens of every training sequence passed forward so far ([`Learner::tokens_seen`]).
    tokens_seen: u64,
}

/// How an [`LlmLearner`] evaluates.
#[derive(Debug, Clone)]
pub struct LlmEval {
    /// Generation settings.
    pub generation: GenerationSettings,
    /// Prompts generated together.
    pub batch_size: usize,
    /// Evaluate on at most this many examples per task (all when absent).
    pub max_examples: Option<usize>,
}

/// Memory the learner may spend on each of its two frozen-prefix caches (training examples,
/// evaluation batches). The blocks before the first adapted one never change while atoms train, so
/// their output is computed once per example: with SmolLM2's last 8 of 30 blocks adapted, a training
/// step runs 8 blocks forward instead of 30, and every evaluation after the first prefills 8 blocks.
/// Beyond the budget (long prompts, big models) the work is simply redone each time.
pub const FROZEN_PREFIX_BUDGET: usize = 2 << 30;

/// A loaded model with its tokenizer.
pub fn load_llm(path: &std::path::Path, kind: Kind, device: Device) -> Result<(CausalLm, LlmTokenizer)> {
    let is_gguf = path.extension().is_some_and(|e| e == "gguf");
    if is_gguf {
        let gguf = GgufFile::open(path)?;
        Ok((CausalLm::from_gguf(&gguf, kind, device)?, LlmTokenizer::from_gguf(&gguf)?))
    } else {
        let config = LlmConfig::from_hf_json(path.join("config.json"))?;
        let source = WeightSource::open(path)?;
        let model = CausalLm::from_hf(&source, &config, kind, device)?;
        Ok((model, LlmTokenizer::from_hf_dir(path, &config)?))
    }
}

impl LlmLearner {
    /// Wraps a model and tokenizer; injects MoRAM layers as `targets` says.
    pub fn new(
        mut model: CausalLm,
        tokenizer: LlmTokenizer,
        tasks: Vec<TextTask>,
        targets: &TargetSpec,
        moram: &MoramConfig,
        eval: LlmEval,
    ) -> Result<Self> {
        let eos = *tokenizer.eos.first().ok_or_else(|| Error::config("model", "the tokenizer has no EOS id"))?;
        model.inject(targets, moram)?;
        let bos = tokenizer.bos;
        Ok(LlmLearner {
            model,
            tokenizer,
            tasks,
            eval: LlmEval { batch_size: eval.batch_size.max(1), ..eval },
            bos,
            eos,
            last: Vec::new(),
            reuse_prefix: true,
            train_prefix: HashMap::new(),
            train_prefix_bytes: 0,
            eval_prefix: PrefixMemo::with_budget(FROZEN_PREFIX_BUDGET),
            recognised: HashMap::new(),
            tokens_seen: 0,
        })
    }

    /// Whether the frozen leading blocks' work is reused (on by default; off recomputes every pass,
    /// for checking that both give the same results).
    pub fn set_reuse_prefix(&mut self, on: bool) {
        self.reuse_prefix = on;
        self.train_prefix.clear();
        self.train_prefix_bytes = 0;
        self.eval_prefix.clear();
    }

    /// Hidden states `(B, L, d)` entering the first adapted block for a collated batch (left
    /// padding filled with zeros), from the per-example cache; `None` when reuse is off or no
    /// block is frozen.
    fn cached_prefix(
        &mut self,
        task: usize,
        indices: &[usize],
        seqs: &[(Vec<i64>, usize)],
        width: i64,
    ) -> Result<Option<Tensor>> {
        let blocks = self.model.frozen_prefix_blocks();
        // Dynamic RoPE depends on the longest position of a pass, which padding changes: a prefix
        // computed per example would differ from the batch's own.
        let dynamic = self.model.config().rope_scaling.is_some_and(|r| r.depends_on_pass_length());
        if !self.reuse_prefix || blocks == 0 || dynamic {
            return Ok(None);
        }
        let device = self.model.device();
        let mut rows = Vec::with_capacity(indices.len());
        for (&i, (seq, _)) in indices.iter().zip(seqs) {
            let hidden = match self.train_prefix.get(&(task, i)) {
                Some((b, h)) if *b == blocks => h.shallow_clone(),
                _ => {
                    let n = seq.len() as i64;
                    let ids = Tensor::from_slice(seq).view([1, n]).to_device(device);
                    let positions = Tensor::arange(n, (tch::Kind::Int64, device)).unsqueeze(0);
                    let h = self.model.frozen_prefix(&ids, &positions, None, false)?.hidden.squeeze_dim(0);
                    let size = h.numel() * h.kind().elt_size_in_bytes();
                    if self.train_prefix_bytes + size <= FROZEN_PREFIX_BUDGET {
                        self.train_prefix_bytes += size;
                        if let Some((_, old)) = self.train_prefix.insert((task, i), (blocks, h.shallow_clone())) {
                            self.train_prefix_bytes -= old.numel() * old.kind().elt_size_in_bytes();
                        }
                    }
                    h
                }
            };
            let pad = width - hidden.size()[0];
            rows.push(if pad > 0 {
                Tensor::cat(&[hidden.zeros_like().narrow(0, 0, 1).expand([pad, -1], false), hidden], 0)
            } else {
                hidden
            });
        }
        Ok(Some(Tensor::stack(&rows, 0)))
    }

    /// Builds the learner a run config describes (`[model]` a decoder LLM, `[data]` TRACE folders);
    /// [`crate::learners::build`] calls it.
    pub fn from_config(config: &RunConfig) -> Result<Self> {
        let (_, data) = config.model_and_data()?;
        // Every data problem at once, before the (slow) model load.
        let mut splits = vec!["train", "eval", "test"];
        if !splits.contains(&data.eval_split.name()) {
            splits.push(data.eval_split.name());
        }
        let problems = crate::data::trace::check_dir(&data.dir, &data.tasks, &splits);
        crate::data::all_problems(&data.dir, &problems)?;
        let mut tasks = Vec::new();
        for name in &data.tasks {
            let mut t = TextTask::load(&data.dir, name, data.eval_split, data.metrics.get(name).copied())?;
            t.prompt = data.prompts.get(name).copied();
            if let Some(n) = data.max_train_examples {
                t.train.truncate(n);
            }
            tasks.push(t);
        }
        Self::with_tasks(config, tasks)
    }

    /// The run's model, layers and generation settings without its task data: what answering
    /// prompts with a saved adapter needs ([`LlmLearner::generate`]); the data folder may be gone.
    pub fn for_generation(config: &RunConfig) -> Result<Self> {
        Self::with_tasks(config, Vec::new())
    }

    fn with_tasks(config: &RunConfig, tasks: Vec<TextTask>) -> Result<Self> {
        let model = config.model.as_ref().ok_or_else(|| Error::config("model", "the config has no [model] section"))?;
        let moram = config.layer_config()?;
        let device = model.device.resolve()?;
        let (lm, tok) = load_llm(&model.path, model.dtype.kind(), device)?;
        let eval = LlmEval {
            generation: config.generation.clone(),
            batch_size: config.evaluation.batch_size,
            max_examples: config.training.max_eval_examples,
        };
        Self::new(lm, tok, tasks, &model.targets, &moram, eval)
    }

    /// The model.
    pub fn model(&self) -> &CausalLm {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    /// TRACE `tokenize`: no special tokens, truncation to `cutoff` (tail kept unless `keep_prefix`),
    /// then EOS and BOS each only while still shorter than `cutoff`.
    fn tokenize(&self, text: &str, cutoff: usize, bos: bool, eos: bool, keep_prefix: bool) -> Result<Vec<i64>> {
        let mut ids = self.tokenizer.encode_plain(text)?;
        if ids.len() > cutoff {
            if keep_prefix {
                ids.truncate(cutoff);
            } else {
                ids.drain(..ids.len() - cutoff);
            }
        }
        if eos && ids.len() < cutoff {
            ids.push(self.eos);
        }
        if let (true, Some(b)) = (bos && ids.len() < cutoff, self.bos) {
            ids.insert(0, b);
        }
        Ok(ids)
    }

    /// The prompt budget of the task called `task` (its own, or the default for its name).
    fn budget(&self, task: &str) -> PromptBudget {
        let own = self.tasks.iter().find(|t| t.name == task).and_then(|t| t.prompt);
        own.unwrap_or_else(|| PromptBudget::default_for_task(task, self.eval.generation.max_prompt_tokens))
    }

    /// Token ids and the number of trailing label tokens for one training pair (protocol 4.4).
    /// A task that keeps its prompt's head (the official code's MeetingBank) gets BOS, the head of
    /// its prompt and its answer (at most `max(max_answer_tokens + 2, 32)` tokens); the others
    /// the tail of prompt + answer within both budgets.
    pub fn training_sequence(&self, task: &str, ex: &Example) -> Result<(Vec<i64>, usize)> {
        let s = &self.eval.generation;
        let budget = self.budget(task);
        if budget.keep == PromptKeep::Head {
            let limit = budget.max_tokens + s.max_answer_tokens;
            let label = self.tokenize(&ex.answer, limit.min((s.max_answer_tokens + 2).max(32)), false, true, false)?;
            let room = limit.saturating_sub(1 + label.len());
            let instr = self.tokenize(&ex.prompt, room, false, false, true)?;
            let mut seq: Vec<i64> = self.bos.into_iter().chain(instr).collect();
            seq.extend(&label);
            return Ok((seq, label.len()));
        }
        let limit = budget.max_tokens + s.max_answer_tokens;
        let label = self.tokenize(&ex.answer, limit, false, true, false)?;
        let seq = self.tokenize(&format!("{}{}", ex.prompt, ex.answer), limit, true, true, false)?;
        let n = label.len().min(seq.len());
        Ok((seq, n))
    }

    /// The tokens generation starts from for `prompt` of task `task`: its budget's end of the
    /// prompt (TRACE's evaluation truncation).
    fn prompt_ids(&self, task: &str, prompt: &str) -> Result<Vec<i64>> {
        let budget = self.budget(task);
        self.tokenize(prompt, budget.max_tokens, true, false, budget.keep == PromptKeep::Head)
    }

    /// The task gate's features `(n, d)` of `prompts`, in batches of the evaluation batch size.
    fn gate_features(&self, task: &str, prompts: &[&str]) -> Result<Tensor> {
        let ids = prompts.iter().map(|p| self.prompt_ids(task, p)).collect::<Result<Vec<_>>>()?;
        let _guard = tch::no_grad_guard();
        let parts = ids
            .chunks(self.eval.batch_size)
            .map(|chunk| self.model.prompt_features(chunk))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Tensor::cat(&parts, 0))
    }

    /// Padded positions a pooled evaluation batch may carry ([`eval_batches`]): one batch fewer
    /// saves a read of every base weight per decoding step, and each padded position costs its
    /// keys and values in every layer.
    fn pool_padding_budget(&self) -> usize {
        self.model.base_bytes() / self.model.kv_bytes_per_position().max(1)
    }

    /// Left-padded batch `(ids, labels, mask)`, length rounded up to a multiple of 8.
    fn collate(&self, seqs: &[(Vec<i64>, usize)]) -> (Tensor, Tensor, Tensor) {
        let width = seqs.iter().map(|(s, _)| s.len()).max().unwrap_or(0).div_ceil(8) * 8;
        let (mut ids, mut labels, mut mask) = (Vec::new(), Vec::new(), Vec::new());
        for (s, label_len) in seqs {
            let pad = width - s.len();
            ids.extend(std::iter::repeat_n(self.eos, pad).chain(s.iter().copied()));
            mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, s.len())));
            labels.extend(
                std::iter::repeat_n(-100i64, width - label_len).chain(s[s.len() - label_len..].iter().copied()),
            );
        }
        let b = seqs.len() as i64;
        let device = self.model.device();
        let t = |v: Vec<i64>| Tensor::from_slice(&v).view([b, width as i64]).to_device(device);
        (t(ids), t(labels), t(mask))
    }
}

/// The evaluation batches (at most `size` rows each, each row `(part, index)`) for several parts'
/// prompts, `lengths[p][i]` being the length in tokens of prompt `i` of part `p`.
///
/// Each part's prompts are sorted by length (stable) and cut into full batches, the same batches
/// that part gets when evaluated alone: a left-padded batch computes every row at its longest
/// row's length, so similar lengths cut the padding, and a fixed order lets the prefix memo
/// recognise each batch at the next evaluation. What is left of each part (its longest prompts,
/// fewer than `size`) would be a partial batch per part; instead these rows are pooled across
/// parts, sorted by length, and batched together while a batch's padding (positions up to its
/// longest prompt, summed over rows) stays within `pad_budget`: a decoding step reads every weight
/// once per batch, which pooling saves, and every padded position's keys and values, which it adds
/// ([`LlmLearner`] sets the budget from the model's sizes). A continual-learning run evaluates
/// every task each time, so the pooled batches are the same at every evaluation too.
pub fn eval_batches(lengths: &[Vec<usize>], size: usize, pad_budget: usize) -> Vec<Vec<(usize, usize)>> {
    let size = size.max(1);
    let mut batches = Vec::new();
    let mut pool = Vec::new();
    for (p, lens) in lengths.iter().enumerate() {
        let mut order: Vec<usize> = (0..lens.len()).collect();
        order.sort_by_key(|&i| lens[i]);
        let full = order.len() / size * size;
        batches.extend(order[..full].chunks(size).map(|c| c.iter().map(|&i| (p, i)).collect::<Vec<_>>()));
        pool.extend(order[full..].iter().map(|&i| (p, i)));
    }
    pool.sort_by_key(|&(p, i)| lengths[p][i]);
    let (mut batch, mut tokens): (Vec<(usize, usize)>, usize) = (Vec::new(), 0);
    for (p, i) in pool {
        // Sorted: this prompt is the longest so far, the width the batch would be padded to.
        let len = lengths[p][i];
        if batch.len() == size || batch.len() * len - tokens > pad_budget {
            batches.push(std::mem::take(&mut batch));
            tokens = 0;
        }
        batch.push((p, i));
        tokens += len;
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

impl Learner for LlmLearner {
    fn task_names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }

    fn tokens_seen(&self) -> Option<u64> {
        Some(self.tokens_seen)
    }

    fn architecture(&self) -> Option<String> {
        let family = moram_models::llm::families::family(self.model.config().arch);
        family.model_types().first().map(|t| t.to_string())
    }

    fn train_len(&self, task: usize) -> usize {
        self.tasks.get(task).map_or(0, |t| t.train.len())
    }

    fn moram_layers(&self) -> Vec<(String, &MoramLinear)> {
        self.model.moram_layers()
    }

    fn moram_layers_mut(&mut self) -> Vec<(String, &mut MoramLinear)> {
        self.model.moram_layers_mut()
    }

    fn total_parameters(&self) -> usize {
        let atoms: usize = self.model.moram_layers().iter().map(|(_, m)| m.bank().parameter_count()).sum();
        self.model.config().parameter_count() as usize + atoms
    }

    fn loss(&mut self, task: usize, indices: &[usize]) -> Result<Tensor> {
        Ok(self.answer_logits(task, indices)?.loss())
    }

    fn answer_logits(&mut self, task: usize, indices: &[usize]) -> Result<AnswerLogits> {
        let t = &self.tasks[task];
        let seqs = indices.iter().map(|&i| self.training_sequence(&t.name, &t.train[i])).collect::<Result<Vec<_>>>()?;
        self.tokens_seen += seqs.iter().map(|(s, _)| s.len() as u64).sum::<u64>();
        let (ids, labels, mask) = self.collate(&seqs);
        match self.cached_prefix(task, indices, &seqs, ids.size()[1])? {
            Some(hidden) => {
                let blocks = self.model.frozen_prefix_blocks();
                Ok(self.model.causal_lm_answer_logits_from(&hidden, blocks, &labels, Some(&mask))?)
            }
            None => Ok(self.model.causal_lm_answer_logits(&ids, &labels, Some(&mask))?),
        }
    }

    fn eval_len(&self, task: usize) -> Option<usize> {
        let t = &self.tasks[task];
        Some(self.eval.max_examples.unwrap_or(t.eval.len()).min(t.eval.len()))
    }

    fn evaluate_examples(
        &mut self,
        task: usize,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<(f64, serde_json::Value)>> {
        let mut parts = self.evaluate_parts(&[(task, range)], &mut |_| {})?;
        Ok(parts.pop().unwrap_or_default())
    }

    fn evaluates_across_tasks(&self) -> bool {
        true
    }

    /// Every part's prompts are generated in the batches of [`eval_batches`]: each task's own
    /// full batches, then the tasks' leftover rows pooled. Generation settings are the run's, the
    /// same for every task, so any prompts can share a batch.
    fn evaluate_parts(
        &mut self,
        parts: &[(usize, std::ops::Range<usize>)],
        done: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<(f64, serde_json::Value)>>> {
        let mut prompts: Vec<Vec<Vec<i64>>> = Vec::with_capacity(parts.len());
        for (task, range) in parts {
            let t = self.tasks.get(*task).ok_or_else(|| {
                Error::task(format!("task {task}"), format!("out of range (the run has {} tasks)", self.tasks.len()))
            })?;
            let examples = t.eval.get(range.clone()).ok_or_else(|| {
                Error::task(&t.name, format!("evaluation examples {range:?} out of range (it has {})", t.eval.len()))
            })?;
            prompts.push(examples.iter().map(|e| self.prompt_ids(&t.name, &e.prompt)).collect::<Result<_>>()?);
        }
        let config = self.generation_config();
        let lengths: Vec<Vec<usize>> = prompts.iter().map(|p| p.iter().map(Vec::len).collect()).collect();
        let mut predictions: Vec<Vec<String>> = lengths.iter().map(|l| vec![String::new(); l.len()]).collect();
        for batch in eval_batches(&lengths, self.eval.batch_size, self.pool_padding_budget()) {
            let rows: Vec<Vec<i64>> = batch.iter().map(|&(p, i)| prompts[p][i].clone()).collect();
            let memo = if self.reuse_prefix { Some(&mut self.eval_prefix) } else { None };
            for (&(p, i), out) in batch.iter().zip(self.model.generate_with_prefixes(&rows, &config, memo)?) {
                predictions[p][i] = self.tokenizer.decode(&out, true)?;
            }
            if let Some(tasks) = self.model.take_recognised() {
                for (&(p, i), t) in batch.iter().zip(tasks) {
                    let (task, range) = &parts[p];
                    self.recognised.insert((*task, range.start + i), t as u32);
                }
            }
            done(batch.len());
        }
        let mut scored = Vec::with_capacity(parts.len());
        for ((task, range), predictions) in parts.iter().zip(predictions) {
            if predictions.is_empty() {
                scored.push(Vec::new());
                continue;
            }
            let t = &self.tasks[*task];
            let examples = &t.eval[range.clone()];
            let prompts: Vec<String> = examples.iter().map(|e| e.prompt.clone()).collect();
            let answers: Vec<String> = examples.iter().map(|e| e.answer.clone()).collect();
            let scores = t.metric.per_example(&prompts, &predictions, &answers)?;
            scored.push(
                prompts
                    .into_iter()
                    .zip(predictions)
                    .zip(answers)
                    .zip(scores)
                    .map(|(((p, g), a), s)| {
                        (s, serde_json::json!({"prompt": p, "generation": g, "answer": a, "score": s}))
                    })
                    .collect(),
            );
        }
        Ok(scored)
    }

    fn evaluate(&mut self, task: usize) -> Result<f64> {
        let n = self.eval_len(task).unwrap_or(0);
        let scored = self.evaluate_examples(task, 0..n)?;
        if scored.is_empty() {
            return Err(Error::task(&self.tasks[task].name, "has no evaluation example"));
        }
        let score = scored.iter().map(|(s, _)| s).sum::<f64>() / scored.len() as f64;
        self.last = scored.into_iter().map(|(_, v)| v).collect();
        Ok(score)
    }

    fn last_outputs(&self) -> Option<serde_json::Value> {
        Some(serde_json::Value::Array(self.last.clone()))
    }

    fn task_gate(&self) -> Option<&TaskGate> {
        self.model.task_gate()
    }

    fn set_task_gate(&mut self, gate: Option<TaskGate>) -> Result<()> {
        Ok(self.model.set_task_gate(gate)?)
    }

    /// The gate learns the task from the prompts of the training examples it trained on, read
    /// from the frozen blocks' cached pass over each training sequence (its tokens but the first,
    /// up to the answer): no extra pass through those blocks.
    fn fit_task_gate(&mut self, task: usize, examples: &[usize]) -> Result<()> {
        let name = self.tasks[task].name.clone();
        if examples.is_empty() {
            return Err(Error::task(&name, "trained on no example: nothing to fit the task gate on"));
        }
        let _guard = tch::no_grad_guard();
        let device = self.model.device();
        let mut rows = Vec::with_capacity(examples.len());
        for &i in examples {
            let ex = self.tasks[task].train.get(i).ok_or_else(|| Error::task(&name, format!("no example {i}")))?;
            let seq = self.training_sequence(&name, ex)?;
            let n = seq.0.len() as i64;
            let hidden = match self.cached_prefix(task, &[i], std::slice::from_ref(&seq), n)? {
                Some(h) => h,
                None => {
                    let ids = Tensor::from_slice(&seq.0).view([1, n]).to_device(device);
                    let positions = Tensor::arange(n, (Kind::Int64, device)).unsqueeze(0);
                    self.model.frozen_prefix(&ids, &positions, None, false)?.hidden
                }
            };
            // The prompt: every token but the first (a BOS, or a first word alike in every prompt)
            // and the labelled answer.
            let prompt_end = (n - seq.1 as i64).max(1);
            let select: Vec<f32> =
                (0..n).map(|j| if j >= 1.min(prompt_end - 1) && j < prompt_end { 1.0 } else { 0.0 }).collect();
            let select = Tensor::from_slice(&select).view([1, n]).to_device(device);
            rows.push(moram_core::variants::pooled_features(&hidden, &select));
        }
        let features = Tensor::cat(&rows, 0);
        let gate = self
            .model
            .task_gate_mut()
            .ok_or_else(|| Error::config("method.name", "the model has no task gate (is the method task-gated?)"))?;
        gate.add_task(task as u32, &features).map_err(|e| Error::task(&name, e.to_string()))?;
        Ok(())
    }

    fn recognised_tasks(&mut self, task: usize) -> Result<Option<Vec<u32>>> {
        let n = self.eval_len(task).unwrap_or(0);
        if self.model.task_gate().is_none_or(|g| g.tasks().is_empty()) || n == 0 {
            return Ok(None);
        }
        // What the last evaluation recognised, when it scored every example of the task.
        let seen: Option<Vec<u32>> = (0..n).map(|i| self.recognised.get(&(task, i)).copied()).collect();
        if let Some(seen) = seen {
            return Ok(Some(seen));
        }
        let t = &self.tasks[task];
        let prompts: Vec<&str> = t.eval[..n].iter().map(|e| e.prompt.as_str()).collect();
        let features = self.gate_features(&t.name, &prompts)?;
        let ids = self.model.task_gate().map(|g| g.recognise(&features)).transpose()?;
        Ok(match ids {
            Some(ids) => {
                Some(Vec::<i64>::try_from(ids.to_device(Device::Cpu))?.into_iter().map(|i| i as u32).collect())
            }
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::eval_batches;

    #[test]
    fn a_part_alone_is_cut_into_sorted_full_batches_and_one_rest() {
        let batches = eval_batches(&[vec![5, 3, 9, 1, 7]], 2, 0);
        assert_eq!(batches, vec![vec![(0, 3), (0, 1)], vec![(0, 0), (0, 4)], vec![(0, 2)]]);
    }

    #[test]
    fn leftovers_of_several_parts_share_batches() {
        // Part 0 has no full batch; part 1 has one and one row left: 3 batches become 2.
        let batches = eval_batches(&[vec![12, 10, 11], vec![13, 17, 14, 15, 16]], 4, 100);
        assert_eq!(batches, vec![vec![(1, 0), (1, 2), (1, 3), (1, 4)], vec![(0, 1), (0, 2), (0, 0), (1, 1)]]);
    }

    #[test]
    fn a_pooled_batch_stops_at_its_padding_budget() {
        // Rows 10, 20, 21: padding to 20 is 10 positions, to 21 would be 11 + 1 = 12.
        let lengths = [vec![10], vec![21], vec![20]];
        assert_eq!(eval_batches(&lengths, 4, 11), vec![vec![(0, 0), (2, 0)], vec![(1, 0)]]);
        assert_eq!(eval_batches(&lengths, 4, 12), vec![vec![(0, 0), (2, 0), (1, 0)]]);
        // A part's own rest is bound by the budget too.
        assert_eq!(eval_batches(&[vec![29, 90, 251]], 4, 300), vec![vec![(0, 0), (0, 1)], vec![(0, 2)]]);
        // Equal lengths keep part order (stable), so every evaluation forms the same batches.
        assert_eq!(eval_batches(&[vec![7], vec![7], vec![7]], 2, 0), vec![vec![(0, 0), (1, 0)], vec![(2, 0)]]);
    }

    #[test]
    fn every_row_lands_in_exactly_one_batch_of_at_most_the_size() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..200 {
            let parts = 1 + next(5) as usize;
            let lengths: Vec<Vec<usize>> =
                (0..parts).map(|_| (0..next(40)).map(|_| next(300) as usize).collect()).collect();
            let size = 1 + next(16) as usize;
            let budget = next(2000) as usize;
            let batches = eval_batches(&lengths, size, budget);
            let mut seen: Vec<(usize, usize)> = batches.iter().flatten().copied().collect();
            seen.sort();
            let all: Vec<(usize, usize)> =
                lengths.iter().enumerate().flat_map(|(p, l)| (0..l.len()).map(move |i| (p, i))).collect();
            assert_eq!(seen, all);
            assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= size));
            let len = |&(p, i): &(usize, usize)| lengths[p][i];
            let padding =
                |b: &[(usize, usize)]| b.len() * b.iter().map(len).max().unwrap() - b.iter().map(len).sum::<usize>();
            // Full batches first, each one part's; then the pooled ones, within the budget, each
            // closed only when full or when the next row would break the budget.
            let full = lengths.iter().map(|l| l.len() / size).sum::<usize>();
            assert!(batches[..full].iter().all(|b| b.len() == size && b.iter().all(|r| r.0 == b[0].0)));
            let pooled = &batches[full..];
            assert!(pooled.iter().all(|b| padding(b) <= budget));
            for w in pooled.windows(2) {
                let grown: Vec<(usize, usize)> = w[0].iter().chain(&w[1][..1]).copied().collect();
                assert!(w[0].len() == size || padding(&grown) > budget, "{w:?} could have been one batch");
            }
            // With room for any padding, the rests fill batches to the size.
            let rest_rows: usize = lengths.iter().map(|l| l.len() % size).sum();
            if budget >= 300 * size {
                assert_eq!(pooled.len(), rest_rows.div_ceil(size));
            }
        }
    }
}
