//! The memory plan of a decoder-LLM run (TRACE-style instruction tasks).

use super::{atom_parts, atoms_per_layer, elt, model_parts, MemoryPlan, Part, Phase, PlanDevice, PlanOptions};
use crate::config::{PromptBudget, RunConfig};
use crate::error::{Error, Result};
use crate::learners::llm::FROZEN_PREFIX_BUDGET;
use crate::methods::MethodMemory;
use moram_core::MoramConfig;
use moram_models::llm::{LlmConfig, LLAMA_MODULES};
use tch::Kind;

/// Measured over counted bytes of a training step's saved activations (the step's peak also
/// holds their gradients, autograd's temporaries and allocator slack; `benchmarks/results/plan.md`).
/// bf16: the mean of SmolLM2-135M's 1,024- and 2,048-token steps. f32: SmolLM2 alone gives 1.41,
/// which over-predicts Gemma 3 270M's 2,048-token step by 18%; 1.30 keeps both models' f32 steps
/// within 15%, so the f32 factor is fitted on both models and only the bf16 and evaluation
/// factors are checked on a model they were not fitted on.
pub(super) const TRAIN_FACTOR_F32: f64 = 1.30;
const TRAIN_FACTOR_BF16: f64 = 1.51;
/// The same for an evaluation batch's prefill (one block's tensors over every prompt token of the
/// batch, counted once), from SmolLM2's 4,096-token prompt (`eval_meetingbank`).
const EVAL_FACTOR: f64 = 3.1;
/// Resident memory of a moram process besides the model's tensors (libtorch, the binary):
/// SmolLM2's f32 loading peak less its weights and GGUF file.
const CPU_RUNTIME_BYTES: f64 = 217.0 * super::MIB;
/// A CUDA context with cuBLAS workspaces: a typical figure, not measured here (no GPU).
const CUDA_RUNTIME_BYTES: f64 = 600.0 * super::MIB;

/// The process's own memory before any model is read.
pub(super) fn runtime(device: PlanDevice) -> Part {
    let (bytes, note) = match device {
        PlanDevice::Cpu => (CPU_RUNTIME_BYTES, "libtorch and the binary, measured"),
        PlanDevice::Cuda => (CUDA_RUNTIME_BYTES, "CUDA context and cuBLAS workspace, typical (not measured)"),
    };
    Part { name: "runtime".into(), phase: Phase::Always, bytes, note: note.into() }
}

/// Everything the LLM plan is computed from (build it from a run config with
/// [`LlmPlanInput::from_run`], or directly for a setting no config file describes).
#[derive(Debug, Clone)]
pub struct LlmPlanInput {
    /// The model's architecture.
    pub config: LlmConfig,
    /// Size of its GGUF file when it is one (mapped while the weights are read).
    pub gguf_bytes: Option<u64>,
    /// Base weight dtype.
    pub base: Kind,
    /// Where it runs.
    pub device: PlanDevice,
    /// Adapted linear layers as `(block, d_in, d_out)`.
    pub sites: Vec<(usize, i64, i64)>,
    /// The adapted layers' config (r, routing, dropout, subspaces, task gate).
    pub layer: MoramConfig,
    /// What the method keeps besides atoms.
    pub method: MethodMemory,
    /// The method's name, for the plan's lines.
    pub method_name: String,
    /// Tasks in the sequence.
    pub tasks: usize,
    /// Rows of one micro-batch on one process.
    pub micro_rows: usize,
    /// Tokens of a training row (prompt + answer).
    pub row_tokens: usize,
    /// Labelled (answer) tokens of a training row.
    pub answer_tokens: usize,
    /// Prompts generated together at evaluation.
    pub eval_rows: usize,
    /// Tokens of an evaluation prompt.
    pub prompt_tokens: usize,
    /// New tokens generated per prompt.
    pub new_tokens: usize,
    /// Training examples per task, when known (for the frozen-prefix cache).
    pub train_examples: Option<usize>,
    /// Data-parallel processes.
    pub world: usize,
}

impl LlmPlanInput {
    /// The input `config` describes on `model`: its targets, method, `[training]` batch
    /// (a data-parallel rank's micro-batch: `min(micro_batch_size, ceil(batch_size / world))`),
    /// `[generation]` lengths (the largest per-task prompt budget) and `[evaluation]` batch.
    pub fn from_run(
        config: &RunConfig,
        model: &LlmConfig,
        gguf_bytes: Option<u64>,
        options: &PlanOptions,
    ) -> Result<Self> {
        let m = config.model.as_ref().ok_or_else(|| Error::config("model", "the run config has no [model]"))?;
        let sites = model.linear_sites();
        let modules = model.block_linears();
        let selected =
            m.targets.select(&sites, &LLAMA_MODULES).map_err(|e| Error::config("model.targets", e.to_string()))?;
        let sites = selected
            .iter()
            .map(|s| {
                let (_, d_in, d_out) =
                    modules.iter().find(|(name, ..)| *name == s.module).copied().unwrap_or(("", 0, 0));
                (s.layer, d_in, d_out)
            })
            .collect();
        let data = config.data.as_ref().ok_or_else(|| Error::config("data", "the run config has no [data]"))?;
        let g = &config.generation;
        let prompt_tokens = data
            .tasks
            .iter()
            .map(|t| {
                data.prompts.get(t).cloned().unwrap_or_else(|| PromptBudget::default_for_task(t, g.max_prompt_tokens))
            })
            .map(|b| b.max_tokens)
            .max()
            .unwrap_or(g.max_prompt_tokens);
        let micro = config.training.micro_batch_size.unwrap_or(config.training.batch_size);
        let per_rank = config.training.batch_size.div_ceil(options.world);
        Ok(LlmPlanInput {
            config: model.clone(),
            gguf_bytes,
            base: m.dtype.kind(),
            device: options.device,
            sites,
            layer: config.layer_config()?,
            method: config.method()?.def().memory(),
            method_name: config.method.name.as_str().to_string(),
            tasks: data.tasks.len(),
            micro_rows: micro.min(per_rank).max(1),
            row_tokens: prompt_tokens + g.max_answer_tokens,
            answer_tokens: g.max_answer_tokens,
            eval_rows: config.evaluation.batch_size.max(1),
            prompt_tokens,
            new_tokens: g.max_new_tokens,
            train_examples: options.train_examples,
            world: options.world,
        })
    }

    /// The plan.
    pub fn plan(&self) -> Result<MemoryPlan> {
        if self.sites.is_empty() {
            return Err(Error::config("model.targets", "no layer is adapted"));
        }
        let c = &self.config;
        let mut parts = Vec::new();
        model_parts(&mut parts, self.device, c.parameter_count() as f64, self.base);
        if let Some(file) = self.gguf_bytes {
            // Each tensor is dequantised to f32 before it takes the base dtype: the largest one
            // (the embedding) is briefly held twice.
            let largest = (c.vocab_size * c.hidden_size).max(c.intermediate_size * c.hidden_size) as f64;
            let staging = if self.base == Kind::Float { 0.0 } else { 4.0 * largest };
            parts.push(Part {
                name: "GGUF file (mapped) and f32 staging".into(),
                phase: Phase::Load,
                bytes: file as f64 + staging,
                note: "while the weights are dequantised".into(),
            });
        }

        // Atoms: every site holds `atoms_per_layer` keys and values; the current task's are trained.
        let r = self.layer.r as f64;
        let width: f64 = self.sites.iter().map(|(_, i, o)| (i + o) as f64).sum();
        let trainable = r * width;
        let frozen = (atoms_per_layer(&self.layer, self.tasks) as f64 - r) * width;
        atom_parts(&mut parts, trainable, frozen, self.method.trainable_copies, &self.method_name);
        if self.method.per_task_copies > 0 {
            parts.push(Part {
                name: format!("{} per-task state", self.method_name),
                phase: Phase::Always,
                bytes: (self.method.per_task_copies * self.tasks) as f64 * 4.0 * trainable,
                note: format!("{} f32 cop(ies) of the trainable atoms per task", self.method.per_task_copies),
            });
        }
        self.variant_parts(&mut parts);
        self.train_parts(&mut parts, trainable);
        self.eval_parts(&mut parts);
        Ok(MemoryPlan {
            title: format!("{:?} ({}, r {} x {} tasks)", c.arch, self.method_name, self.layer.r, self.tasks),
            device: self.device,
            world: self.world,
            parts,
        })
    }

    /// Protected input subspaces (their bases, at most `d_in` columns each, and the moments
    /// collected after a task) and the task gate.
    fn variant_parts(&self, parts: &mut Vec<Part>) {
        if self.layer.key_subspace.is_some() {
            let squares: f64 = self.sites.iter().map(|(_, i, _)| (i * i) as f64).sum();
            parts.push(Part {
                name: "protected input subspaces".into(),
                phase: Phase::Always,
                bytes: 4.0 * squares,
                note: "at most d_in x d_in f32 per layer (the basis grows with the tasks' inputs)".into(),
            });
            parts.push(Part {
                name: "input moments after a task".into(),
                phase: Phase::Eval,
                bytes: 4.0 * squares,
                note: "d_in x d_in f32 per layer while they are collected (one pass, no gradient)".into(),
            });
        }
        if self.layer.task_gate.is_some() {
            let d = self.config.hidden_size as f64;
            parts.push(Part {
                name: "task gate".into(),
                phase: Phase::Always,
                bytes: 8.0 * d * d + 8.0 * d * self.tasks as f64 + 4.0 * d * self.tasks as f64,
                note: "one d x d f64 scatter, a mean per task, the discriminant".into(),
            });
        }
    }

    /// A training step: the saved activations of every block from the first adapted one on (the
    /// blocks before it run without autograd; the last block computes only the labelled tail),
    /// the atoms' scores, the LM head on the labelled positions, and the frozen-prefix cache.
    fn train_parts(&self, parts: &mut Vec<Part>, trainable: f64) {
        let c = &self.config;
        let n = c.num_hidden_layers as usize;
        let first = self.sites.iter().map(|s| s.0).min().unwrap_or(0);
        let rows = self.micro_rows as f64;
        let (tokens, tail) = (rows * self.row_tokens as f64, rows * self.answer_tokens.min(self.row_tokens) as f64);
        let act = elt(self.base);
        let block = c.saved_elements_per_token() as f64 * act;
        // Per site and token: the scores of every atom (z, s, the masked scores, the weights and
        // w * z), the input cast to f32 for the f32 atoms, and the dropped-out input.
        let atoms = atoms_per_layer(&self.layer, self.tasks) as f64;
        let site_bytes = |d_in: i64| {
            let cast = if self.base == Kind::Float { 0.0 } else { 4.0 * d_in as f64 };
            let dropout = if self.layer.dropout > 0.0 { (act + 1.0) * d_in as f64 } else { 0.0 };
            5.0 * 4.0 * atoms + cast + dropout
        };
        let mut bytes = 0.0;
        for b in first..n {
            let t = if b + 1 == n { tail } else { tokens };
            let sites: f64 = self.sites.iter().filter(|s| s.0 == b).map(|s| site_bytes(s.1)).sum();
            bytes += t * (block + sites);
        }
        let factor = if self.base == Kind::Float { TRAIN_FACTOR_F32 } else { TRAIN_FACTOR_BF16 };
        parts.push(Part {
            name: "training activations".into(),
            phase: Phase::Train,
            bytes: factor * bytes,
            note: format!(
                "{} row(s) x {} tokens through blocks {first}..{n} ({} saved elements per token and block), x {factor:.2} measured",
                self.micro_rows,
                self.row_tokens,
                c.saved_elements_per_token()
            ),
        });
        let logits = tail * c.vocab_size as f64 * 4.0;
        let copies = if self.method.teacher_logits { 4.0 } else { 3.0 };
        parts.push(Part {
            name: "LM head on the answers".into(),
            phase: Phase::Train,
            bytes: copies * logits,
            note: format!(
                "{} labelled tokens x {} vocab, f32: logits, log-softmax, gradient{}",
                tail,
                c.vocab_size,
                if self.method.teacher_logits { ", the teacher's" } else { "" }
            ),
        });
        if first > 0 {
            let per_example = self.row_tokens as f64 * c.hidden_size as f64 * act;
            let budget = FROZEN_PREFIX_BUDGET as f64;
            let (bytes, note) = match self.train_examples {
                Some(e) => {
                    ((e as f64 * per_example).min(budget), format!("{e} examples' block-{first} inputs, at most 2 GiB"))
                }
                None => (budget, "at most 2 GiB (the examples' block inputs)".into()),
            };
            parts.push(Part { name: "frozen-prefix cache".into(), phase: Phase::Train, bytes, note });
        }
        if self.world > 1 {
            parts.push(Part {
                name: "gradient all-reduce".into(),
                phase: Phase::Train,
                bytes: 4.0 * trainable,
                note: "one flat f32 buffer of the trainable atoms' gradients".into(),
            });
        }
    }

    /// An evaluation batch: the KV cache of every prompt and its new tokens (f32 on a CPU for a
    /// half-precision model), the prefill's largest block tensors and the last position's logits.
    fn eval_parts(&self, parts: &mut Vec<Part>) {
        let c = &self.config;
        let cache_kind = if self.device == PlanDevice::Cpu { Kind::Float } else { self.base };
        let positions = (self.eval_rows * (self.prompt_tokens + self.new_tokens)) as f64;
        let kv = (c.num_key_value_heads * c.head_dim) as f64;
        parts.push(Part {
            name: "KV cache".into(),
            phase: Phase::Eval,
            bytes: 2.0 * c.num_hidden_layers as f64 * kv * positions * elt(cache_kind),
            note: format!(
                "{} prompt(s) x ({} + {}) positions x {} layers, {:?}",
                self.eval_rows, self.prompt_tokens, self.new_tokens, c.num_hidden_layers, cache_kind
            ),
        });
        let q = (c.num_attention_heads * c.head_dim) as f64;
        let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
        let prompt = (self.eval_rows * self.prompt_tokens) as f64;
        parts.push(Part {
            name: "prefill".into(),
            phase: Phase::Eval,
            bytes: EVAL_FACTOR * prompt * (3.0 * h + q + 2.0 * kv + 3.0 * i) * 4.0
                + self.eval_rows as f64 * c.vocab_size as f64 * 4.0,
            note: format!("one block's tensors over {prompt} prompt tokens, x {EVAL_FACTOR:.2} measured; last logits"),
        });
    }
}
