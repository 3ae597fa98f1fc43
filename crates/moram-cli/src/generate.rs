//! `moram generate` and `moram export`: a run's base model and one of its adapters answering
//! prompts as evaluation generates (see `moram_cl::learners::llm::LlmLearner::generate`), or
//! written out for other tools.

use anyhow::{Context, Result};
use moram_cl::base_model::BaseCheck;
use moram_cl::config::ModelKind;
use moram_cl::learners::llm::LlmLearner;
use moram_cl::RunState;
use moram_models::llm::ChatMessage;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

/// Which adapter and base to answer with (the arguments `generate`, `serve` and `export` share).
#[derive(clap::Args)]
pub struct Source {
    /// The run folder (its config names the base model and adapted layers), or an adapter file
    /// with --model naming its base.
    pub dir: PathBuf,
    /// Use the adapter saved after this task (0-based; default: the last finished).
    #[arg(long)]
    pub after: Option<usize>,
    /// Use this adapter file instead of the run's (e.g. a pruned one).
    #[arg(long, conflicts_with = "after")]
    pub adapter: Option<PathBuf>,
    /// The base model (HF folder or GGUF): another path than the run's config says, or the base
    /// of an adapter file given alone.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Load the adapter even if it records another base model (logged).
    #[arg(long)]
    pub force_base: bool,
}

/// What to answer and how.
pub struct Request {
    /// Prompts given on the command line.
    pub prompts: Vec<String>,
    /// A JSONL file (`-`: stdin) of `{"prompt": ..}` or `{"messages": [..]}` objects.
    pub input: Option<PathBuf>,
    /// Apply the model's chat template to plain prompts.
    pub chat: bool,
    /// A system message before each chat prompt.
    pub system: Option<String>,
    /// Read plain prompts with this task's prompt budget.
    pub task: Option<String>,
    /// Write one JSON object per answer instead of the answers' text.
    pub jsonl: bool,
    /// Generation overrides.
    pub settings: Settings,
}

/// Overrides of the run's generation settings.
#[derive(Default, clap::Args)]
pub struct Settings {
    /// New tokens per answer (default: the run's generation.max_new_tokens).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Sample at this temperature (default: greedy, as evaluation).
    #[arg(long)]
    pub temperature: Option<f64>,
    /// Nucleus sampling: keep the smallest set of tokens with this probability mass.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed of sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Repetition penalty (default: the run's).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// No-repeat n-gram size (default: the run's; 0: off).
    #[arg(long)]
    pub no_repeat_ngram_size: Option<usize>,
}

/// One prompt as read: its text or chat messages.
enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// `moram generate`.
pub fn run(source: Source, request: Request) -> Result<()> {
    let prompts = read_prompts(&request)?;
    anyhow::ensure!(!prompts.is_empty(), "no prompt given (--prompt, --input FILE.jsonl, or text on stdin)");
    let (mut learner, adapter, _) = load(&source)?;
    tracing::info!("answering {} prompt(s) with {}", prompts.len(), adapter.display());

    let mut config = learner.generation_config();
    let s = &request.settings;
    if let Some(n) = s.max_new_tokens {
        config.max_new_tokens = n;
    }
    if let Some(t) = s.temperature {
        config.do_sample = true;
        config.temperature = t;
    }
    config.top_p = s.top_p.unwrap_or(config.top_p);
    config.seed = s.seed.unwrap_or(config.seed);
    config.repetition_penalty = s.repetition_penalty.unwrap_or(config.repetition_penalty);
    config.no_repeat_ngram_size = s.no_repeat_ngram_size.unwrap_or(config.no_repeat_ngram_size);

    let mut ids = Vec::with_capacity(prompts.len());
    let mut shown = Vec::with_capacity(prompts.len());
    for prompt in &prompts {
        let messages = match prompt {
            Prompt::Text(text) if !request.chat => {
                ids.push(learner.encode_prompt(text, request.task.as_deref())?);
                shown.push(serde_json::json!({ "prompt": text }));
                continue;
            }
            Prompt::Text(text) => {
                let mut m: Vec<ChatMessage> =
                    request.system.iter().map(|s| ChatMessage { role: "system".into(), content: s.clone() }).collect();
                m.push(ChatMessage::user(text.clone()));
                m
            }
            Prompt::Chat(messages) => messages.clone(),
        };
        let (text, chat_ids) = learner.encode_chat(&messages)?;
        ids.push(chat_ids);
        shown.push(serde_json::json!({ "messages": messages, "rendered": text }));
    }
    let answers = learner.generate(&ids, &config)?;
    let mut out = std::io::stdout().lock();
    for (i, (answer, mut record)) in answers.into_iter().zip(shown).enumerate() {
        if request.jsonl {
            if let (Some(obj), serde_json::Value::Object(a)) = (record.as_object_mut(), serde_json::to_value(&answer)?)
            {
                obj.extend(a);
            }
            writeln!(out, "{}", serde_json::to_string(&record)?)?;
        } else {
            if i > 0 {
                writeln!(out)?;
            }
            writeln!(out, "{}", answer.answer)?;
        }
    }
    Ok(())
}

/// `moram export`: the run's adapter as a PEFT folder, or (`merged`) as a Hugging Face checkpoint
/// with the update folded in; only LoRA-type adapters ([`moram_cl::export`]).
pub fn export(source: &Source, out: &Path, merged: bool) -> Result<()> {
    let (adapter, base) = if source.dir.is_file() {
        let base = source.model.clone().with_context(|| {
            format!("{} is an adapter file: give its base model with --model PATH", source.dir.display())
        })?;
        (source.dir.clone(), base)
    } else {
        let (cfg, adapter) = run_and_adapter(source)?;
        (adapter, cfg.model.context("the run's config has no [model] section")?.path)
    };
    let base = &base;
    let file = moram_core::AdapterFile::load(&adapter, tch::Device::Cpu)
        .with_context(|| format!("reading {}", adapter.display()))?;
    let lora = moram_cl::export::LoraExport::from_adapter(&file)?;
    if merged {
        // The weights folded in must be the ones the adapter was trained on.
        load(source)?;
        lora.write_merged(base, out)?;
        println!("merged checkpoint (base {} + adapter {}) in {}", base.display(), adapter.display(), out.display());
    } else {
        lora.write_peft(out, &base.display().to_string())?;
        println!("PEFT adapter ({} layers) from {} in {}", lora.layers.len(), adapter.display(), out.display());
    }
    Ok(())
}

/// The run's config (with `--model` applied) and the chosen adapter file.
fn run_and_adapter(source: &Source) -> Result<(moram_cl::RunConfig, PathBuf)> {
    let mut cfg = moram_cl::checkpoint::read_config(&source.dir)
        .with_context(|| format!("{} is not a moram run folder", source.dir.display()))?;
    let model = cfg.model.as_mut().context("the run's config has no [model] section")?;
    anyhow::ensure!(
        model.kind == ModelKind::Llm,
        "this command needs a decoder-LLM run; the run in {} trains a CLIP model",
        source.dir.display()
    );
    if let Some(path) = &source.model {
        model.path = path.clone();
    }
    let adapter = match (&source.adapter, source.after) {
        (Some(_), Some(_)) => anyhow::bail!("give --adapter or --after, not both"),
        (Some(file), None) => file.clone(),
        (None, after) => {
            let state = RunState::load(&source.dir)?;
            anyhow::ensure!(
                state.tasks_done() > 0,
                "{}: no task finished yet, so there is no adapter",
                source.dir.display()
            );
            let t = after.unwrap_or(state.tasks_done() - 1);
            anyhow::ensure!(
                t < state.tasks_done(),
                "--after {t}: only tasks 0..{} are finished",
                state.tasks_done() - 1
            );
            source.dir.join(&state.adapters[t])
        }
    };
    Ok((cfg, adapter))
}

/// The run's learner for generation with the chosen adapter loaded (its base checked), the
/// adapter's path and the run's evaluation batch size.
pub fn load(source: &Source) -> Result<(LlmLearner, PathBuf, usize)> {
    let (mut learner, adapter, batch) = load_reusing_prefixes(source)?;
    // Free prompts rarely repeat: keeping their frozen-prefix passes (what makes the run's
    // repeated evaluations cheap) would only grow memory. The answers are the same either way.
    learner.set_reuse_prefix(false);
    Ok((learner, adapter, batch))
}

fn load_reusing_prefixes(source: &Source) -> Result<(LlmLearner, PathBuf, usize)> {
    let check = if source.force_base { BaseCheck::Force } else { BaseCheck::Require };
    if source.dir.is_file() {
        // An adapter file on its own: its base given by --model, the rest from its metadata.
        anyhow::ensure!(
            source.after.is_none() && source.adapter.is_none(),
            "--after and --adapter choose among a run folder's adapters; {} is an adapter file",
            source.dir.display()
        );
        let model = source.model.as_ref().with_context(|| {
            format!(
                "{} is an adapter file: give its base model with --model PATH (HF folder or GGUF)",
                source.dir.display()
            )
        })?;
        let file = moram_core::AdapterFile::load(&source.dir, tch::Device::Cpu)
            .with_context(|| format!("reading {}", source.dir.display()))?;
        let mut learner = LlmLearner::for_adapter_file(&file, model)?;
        moram_cl::checkpoint::load_adapter_with(&mut learner, &source.dir, check)?;
        return Ok((learner, source.dir.clone(), 8));
    }
    let (cfg, adapter) = run_and_adapter(source)?;
    let mut learner = LlmLearner::for_generation(&cfg)?;
    moram_cl::checkpoint::load_adapter_with(&mut learner, &adapter, check)?;
    Ok((learner, adapter, cfg.evaluation.batch_size))
}

/// The prompts of `--prompt`, else of `--input` (JSONL), else stdin's text as one prompt.
fn read_prompts(request: &Request) -> Result<Vec<Prompt>> {
    if !request.prompts.is_empty() {
        anyhow::ensure!(request.input.is_none(), "give --prompt or --input, not both");
        return Ok(request.prompts.iter().cloned().map(Prompt::Text).collect());
    }
    match &request.input {
        Some(path) if path == Path::new("-") => read_jsonl(std::io::stdin().lock(), "stdin"),
        Some(path) => {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            read_jsonl(std::io::BufReader::new(file), &path.display().to_string())
        }
        None => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("reading the prompt from stdin")?;
            let text = text.strip_suffix('\n').unwrap_or(&text).to_string();
            Ok(if text.is_empty() { Vec::new() } else { vec![Prompt::Text(text)] })
        }
    }
}

/// JSONL prompts: one object per line with `prompt` (a string) or `messages` (a list of
/// `{role, content}`); blank lines are skipped. Errors name the source and line.
fn read_jsonl(reader: impl BufRead, name: &str) -> Result<Vec<Prompt>> {
    let mut prompts = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{name} line {}", n + 1);
        let value: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("{}: not a JSON object", at()))?;
        let prompt = match (value.get("prompt"), value.get("messages")) {
            (Some(serde_json::Value::String(p)), None) => Prompt::Text(p.clone()),
            (None, Some(m)) => Prompt::Chat(serde_json::from_value(m.clone()).with_context(|| {
                format!("{}: `messages` must be a list of {{\"role\", \"content\"}} strings", at())
            })?),
            _ => anyhow::bail!("{}: expected an object with a string `prompt` or a list `messages`", at()),
        };
        prompts.push(prompt);
    }
    Ok(prompts)
}
