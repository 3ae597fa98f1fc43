//! `moram`: the command line of the MoRAM toolkit.
//!
//! Commands: `demo`, `train`, `resume`, `study` (grids of settings x methods x seeds), `eval`,
//! `generate`, `serve` and `export` (answers from a trained adapter; an OpenAI-compatible
//! server; PEFT and merged checkpoints), `prune`, `report`, `viz`, `inspect` (adapter
//! files) and `info` (libtorch, devices, threads).

mod demo;
mod generate;
mod parallel;
mod report;
mod run_tools;
mod serve;
mod study;
mod viz;
mod workers;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use moram_cl::{RunConfig, RunOptions};
use moram_core::AdapterFile;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log output: stderr, above the workers' progress bars while they are drawn.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        workers::above_bars(|| std::io::stderr().write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        workers::above_bars(|| std::io::stderr().write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The run folder's log file (`train.log`) that log lines are copied to.
static RUN_LOG: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Set by the worker pool for its workers, whose stderr already is their run's `train.log`.
pub(crate) const STDERR_IS_RUN_LOG: &str = "MORAM_STDERR_IS_RUN_LOG";

/// `-q`: no progress bars (and only errors logged).
static QUIET: AtomicBool = AtomicBool::new(false);

/// Whether progress bars are drawn (not under `-q`).
pub(crate) fn progress_bars() -> bool {
    !QUIET.load(Ordering::Relaxed)
}

/// Copies this process's log lines into `dir/train.log` (appended), so that a run started under
/// nohup or a batch scheduler keeps its log in its folder. Nothing for a pool's worker (its stderr
/// already goes there) or a data-parallel rank other than 0.
fn log_to_run_folder(dir: &Path, main_rank: bool) -> Result<()> {
    if !main_rank || std::env::var_os(STDERR_IS_RUN_LOG).is_some() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(workers::LOG_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if let Ok(mut log) = RUN_LOG.lock() {
        *log = Some(file);
    }
    Ok(())
}

/// The run folder's copy of the log ([`log_to_run_folder`]); writes nothing until one is named.
struct RunLogWriter;

impl std::io::Write for RunLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match RUN_LOG.lock() {
            Ok(mut file) => file.as_mut().map_or(Ok(()), |f| f.write_all(buf)),
            Err(_) => Ok(()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Parser)]
#[command(
    name = "moram",
    version,
    about = "Continual learning with MoRAM (mixtures of rank-1 associative memory experts)"
)]
struct Cli {
    /// Intra-op threads for libtorch (default: libtorch's choice).
    #[arg(long, global = true)]
    threads: Option<i32>,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the libtorch build, the devices it sees and the thread settings.
    Info,
    /// Run a task sequence from a config file (see `configs/`); Ctrl-C stops after the current step
    /// and keeps every finished task.
    Train {
        /// The run config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Override a config value, e.g. `--set training.iterations=10` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Output folder (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Train data-parallel on N local worker processes (Gloo on the CPU); each worker gets
        /// cores / N threads unless --threads says otherwise. torchrun's variables, when set,
        /// make this process one worker of a launched job instead.
        #[arg(long, value_name = "N")]
        nproc: Option<usize>,
    },
    /// The embedded demo: SmolLM2 learns 4 real-data tasks (BBC News, WordNet) with SeqLoRA, MoRAM
    /// and task-gated MoRAM; prints the matrices, OP / BWT with 95% intervals and the routing
    /// leakage. Assets come from `cargo xtask setup`.
    Demo {
        /// Assets folder (default: $MORAM_ASSETS, else the cache's assets: $MORAM_CACHE, $XDG_CACHE_HOME/moram or ~/.cache/moram).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Output folder (default: runs/demo; a taken name gets a -2, -3, ... suffix).
        #[arg(long, default_value = "runs/demo")]
        out: PathBuf,
        /// The real model: `smollm2-135m` (default) or `gemma3-270m` (both fetched by setup).
        #[arg(long, default_value = "smollm2-135m")]
        model: String,
        /// Override a value of configs/demo.toml, e.g. `--set training.iterations=4` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Methods trained at once, each by a worker process with --threads (default: cores /
        /// jobs) libtorch threads. Default: one per core, at most 3.
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// Re-score every task of a run with the adapter saved after one of its tasks.
    Eval {
        /// The run folder.
        dir: PathBuf,
        /// Use the adapter saved after this task (0-based; default: the last finished).
        #[arg(long)]
        after: Option<usize>,
    },
    /// Answer prompts with a run's base model and adapter, as evaluation generates: prompts from
    /// --prompt, a JSONL file (--input; `-` for stdin) of {"prompt": ..} or {"messages": [..]}
    /// objects, or stdin's text; --chat applies the model's chat template.
    Generate {
        #[command(flatten)]
        source: generate::Source,
        /// A prompt (repeatable).
        #[arg(long = "prompt", value_name = "TEXT")]
        prompts: Vec<String>,
        /// JSONL prompts, one object per line (`-`: stdin).
        #[arg(long, value_name = "FILE")]
        input: Option<PathBuf>,
        /// Apply the model's chat template (tokenizer_config.json or GGUF) to plain prompts.
        #[arg(long)]
        chat: bool,
        /// A system message before each --chat prompt.
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Truncate plain prompts with this task's prompt budget (default: the run's).
        #[arg(long)]
        task: Option<String>,
        /// One JSON object per answer (prompt, answer, token counts) instead of the text.
        #[arg(long)]
        jsonl: bool,
        #[command(flatten)]
        settings: generate::Settings,
    },
    /// Serve a run's base model and adapter over HTTP, OpenAI-compatible: /v1/completions,
    /// /v1/chat/completions (streaming with "stream": true), /v1/models, /health. Requests with
    /// the same settings are generated together; Ctrl-C finishes the requests in progress.
    Serve {
        #[command(flatten)]
        source: generate::Source,
        /// Address to listen on (port 0: a free port, printed at start). Other hosts than
        /// 127.0.0.1 expose the model to the network: set --api-key.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
        /// Require `Authorization: Bearer KEY` (default: $MORAM_API_KEY when set).
        #[arg(long, env = "MORAM_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        /// Largest max_tokens a request may ask for.
        #[arg(long, default_value_t = 512)]
        max_tokens: usize,
        /// Requests waiting at most; more get 503 at once.
        #[arg(long, default_value_t = 64)]
        queue: usize,
        /// Requests generated together at most (default: the run's evaluation.batch_size).
        #[arg(long)]
        batch: Option<usize>,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_body: usize,
    },
    /// Export a LoRA-type adapter (seq-lora, o-lora, inc-lora, inf-lora, tree-lora, replay, ewc, lwf, mtl)
    /// as a PEFT adapter folder, or with --merged as a Hugging Face checkpoint with the update
    /// folded into the base weights. MoRAM adapters route per token and are refused (serve them).
    Export {
        #[command(flatten)]
        source: generate::Source,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// A merged Hugging Face checkpoint instead of a PEFT adapter (the base must be a folder).
        #[arg(long)]
        merged: bool,
    },
    /// Figures of a run (PNG and SVG, in DIR/figures): the accuracy matrix, per-atom activation ratios on
    /// every task's data, cumulative activation-mass curves with the 99% mark, atoms per layer.
    Viz {
        /// The run folder.
        dir: PathBuf,
        /// Training examples per task the statistics are gathered on.
        #[arg(long, default_value_t = 32)]
        examples: usize,
    },
    /// Prune a finished run's adapter: keep, in every layer, the atoms that carry `--share` of the
    /// activation mass on all tasks' training data; writes a new adapter and re-scores every task.
    Prune {
        /// The run folder.
        dir: PathBuf,
        /// Share of the activation mass the kept atoms must carry.
        #[arg(long, default_value_t = 0.99)]
        share: f64,
        /// Training examples per task the statistics are gathered on.
        #[arg(long, default_value_t = 32)]
        examples: usize,
    },
    /// Compare runs: summary metrics side by side, then each run's matrix and per-task records.
    Report {
        /// Run folders (each with a results.json).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Also write the summary table as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
    },
    /// Continue a run from its last finished task (same config; a differing one is refused).
    Resume {
        /// The run folder.
        dir: PathBuf,
        /// Continue data-parallel on N local worker processes (as `train --nproc`).
        #[arg(long, value_name = "N")]
        nproc: Option<usize>,
    },
    /// A study: every (setting, method, seed) of a study file as a resumable run, then means with
    /// 95% intervals over seeds (study.md, study.json, study.png). Finished runs are skipped, so
    /// the same command continues a stopped study.
    Study {
        /// The study file (TOML; see configs/README.md).
        file: PathBuf,
        /// Output folder (default: runs/study-<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override a value of every run's config (repeatable; applied before each setting's).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Start no new run after this many minutes (the report covers what finished).
        #[arg(long)]
        max_minutes: Option<f64>,
        /// Only rebuild the report from the runs already in the output folder.
        #[arg(long)]
        report_only: bool,
        /// Run every setting on this real model (`smollm2-135m`, `gemma3-270m`): its file in
        /// `--assets` and every linear layer of its last eight blocks.
        #[arg(long)]
        model: Option<String>,
        /// Assets folder for `--model` (default: $MORAM_ASSETS, else the cache's assets: $MORAM_CACHE, $XDG_CACHE_HOME/moram or ~/.cache/moram).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Train N runs at once, each by a worker process with --threads (default: cores / N)
        /// libtorch threads. Without it the runs train one after another in this process (as the
        /// README's studies did; thread counts change single results).
        #[arg(long, value_name = "N")]
        jobs: Option<usize>,
        /// Study these methods instead of the file's (config names, comma-separated; the file's
        /// baseline must stay).
        #[arg(long, value_delimiter = ',', value_name = "METHOD,..")]
        methods: Option<Vec<String>>,
        /// Study these seeds instead of the file's: numbers and ranges, e.g. `1-8` or `4,5,6`.
        /// Finished runs are skipped, so `--seeds 1-8` after a 3-seed study runs seeds 4-8 and
        /// reports all eight.
        #[arg(long, value_name = "SEEDS")]
        seeds: Option<String>,
    },
    /// Write a task sequence of the demo's real data as TRACE-format folders, for `train` and
    /// `study`: the demo's (BBC topic, WordNet noun category, WordNet verb base form, BBC desk) or
    /// `--sequence formats` (four formats of the BBC topic question over the same articles).
    DemoData {
        /// `demo` or `formats`.
        #[arg(long, default_value = "demo")]
        sequence: String,
        /// Assets folder (default: $MORAM_ASSETS, else the cache's assets: $MORAM_CACHE, $XDG_CACHE_HOME/moram or ~/.cache/moram).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Training examples per task.
        #[arg(long, default_value_t = 64)]
        train: usize,
        /// Evaluation examples per task.
        #[arg(long, default_value_t = 64)]
        eval: usize,
        /// Article words shown in each prompt.
        #[arg(long, default_value_t = 32)]
        words: usize,
        /// Seed of the article draw.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The memory a run needs per process, part by part (base weights, atoms and their optimiser
    /// state, a training step's activations, an evaluation batch's KV cache, a method's own state),
    /// before anything is loaded; see docs/performance.md, "Memory plan".
    Plan {
        /// A run config (`[model]`, `[method]`, `[training]`, `[generation]`, `[data]`).
        config: PathBuf,
        /// Take the architecture from this LLM or CLIP preset (e.g. `llama2-7b`, `vit-b16`)
        /// instead of reading `model.path`.
        #[arg(long)]
        preset: Option<String>,
        /// Override config keys, `section.key=value` (as `moram train --set`).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Where the run executes: `cpu` (resident memory, measured factors) or `cuda`.
        #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
        device: String,
        /// Data-parallel processes (each holds the whole plan; the batch is shared out).
        #[arg(long, default_value_t = 1)]
        world: usize,
        /// Training examples per task, when known (the frozen-prefix cache holds their prefixes).
        #[arg(long)]
        train_examples: Option<usize>,
        /// Print JSON instead of a Markdown table.
        #[arg(long)]
        json: bool,
    },
    /// Describe an adapter file: config, tasks, atoms per layer and sizes.
    Inspect {
        /// A `.safetensors` adapter file written by moram.
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { ["info", "debug", "trace"][cli.verbose.min(2) as usize] };
    let filter = |level: &str| EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // The run folder's train.log gets info lines even under -q (the terminal's quiet is not the log's).
    let file_level = if cli.verbose > 0 { level } else { "info" };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| LogWriter)
                // Colour only on a terminal: logs written to files and pipes stay plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter(level)),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(|| RunLogWriter)
                .with_ansi(false)
                .with_filter(filter(file_level)),
        )
        .init();
    QUIET.store(cli.quiet, Ordering::Relaxed);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            eprintln!("remedy: {}", remedy(&err));
            // A run's log says how it ended too (a batch job's only record).
            if let Ok(mut file) = RUN_LOG.lock() {
                if let Some(file) = file.as_mut() {
                    let _ = writeln!(file, "error: {err:#}\nremedy: {}", remedy(&err));
                }
            }
            std::process::ExitCode::from(exit_code(&err))
        }
    }
}

/// Exit status of a failed command: 130 when Ctrl-C stopped it (finished tasks kept), 2 for bad
/// input (config, data, a run folder or adapter that does not fit), 1 for anything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    use moram_cl::Error as E;
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<E>() {
            return match e {
                E::Interrupted { .. } => 130,
                E::Config { .. }
                | E::ConfigFile { .. }
                | E::Method { .. }
                | E::Override { .. }
                | E::Data { .. }
                | E::Task { .. }
                | E::ConfigMismatch { .. }
                | E::WrongBase { .. }
                | E::NotExportable { .. }
                | E::RunExists { .. } => 2,
                _ => 1,
            };
        }
        if cause.downcast_ref::<Remedied>().is_some() {
            return 2;
        }
    }
    1
}

/// A failure only the command line can explain, with its one line of remedy.
#[derive(Debug)]
pub(crate) struct Remedied {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub remedy: &'static str,
}

impl std::fmt::Display for Remedied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Remedied {}

/// One line of what to do, from the kind of error.
fn remedy(err: &anyhow::Error) -> &'static str {
    use moram_cl::Error as E;
    if let Some(r) = err.chain().find_map(|c| c.downcast_ref::<Remedied>()) {
        return r.remedy;
    }
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<E>() {
            return match e {
                E::Config { .. } | E::ConfigFile { .. } | E::Method { .. } | E::Override { .. } => {
                    "fix the key named above; configs/README.md describes every run-config section and unknown keys are rejected"
                }
                E::Data { .. } | E::Task { .. } => {
                    "fix the data or setting named above (data layouts: docs/usage.md); finished tasks are kept and `moram resume DIR` continues"
                }
                E::ConfigMismatch { .. } => "resume with the run's own config (DIR/config.toml), or start a new run with --out",
                E::NotExportable { .. } => "serve it with `moram serve` (or answer prompts with `moram generate`)",
                E::WrongBase { .. } => {
                    "load the adapter onto the base model it was trained on (--model PATH), or pass --force-base"
                }
                E::Checkpoint { .. } => "point at a run folder written by `moram train` (it holds state.json and config.toml)",
                E::RunExists { .. } => "`moram resume DIR` continues it; `--out` starts a new run elsewhere",
                E::NonFinite { .. } => "lower optimizer.lr or set training.clip_grad_norm, then `moram resume DIR`",
                E::Interrupted { .. } => "`moram resume DIR` continues from the last finished task",
                E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                    "check the path; assets and libtorch come from `cargo xtask setup`"
                }
                _ => "see the message above; `-v` logs more",
            };
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::NotFound {
                return "check the path; assets and libtorch come from `cargo xtask setup`";
            }
        }
    }
    "see the message above; `-v` logs more"
}

fn run(cli: Cli) -> Result<()> {
    moram_core::runtime::tune_cpu_allocator();
    if let Some(n) = cli.threads {
        anyhow::ensure!(n >= 1, "--threads must be at least 1, found {n}");
        tch::set_num_threads(n);
        tch::set_num_interop_threads(n);
    }
    match cli.command {
        Command::Info => {
            println!("moram {}", env!("CARGO_PKG_VERSION"));
            println!("libtorch threads: {}", tch::get_num_threads());
            println!("cuda available: {} ({} device(s))", tch::Cuda::is_available(), tch::Cuda::device_count());
            // cpu: the check is of the CPU.
            let probe = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).sum(tch::Kind::Float).double_value(&[]);
            println!("cpu tensor check: sum(1, 2, 3) = {probe}");
            Ok(())
        }
        Command::Inspect { file } => inspect(&file),
        Command::Plan { config, preset, set, device, world, train_examples, json } => {
            use moram_cl::plan::{plan, PlanDevice, PlanModel, PlanOptions};
            let mut cfg = RunConfig::from_file(&config).with_context(|| format!("reading {}", config.display()))?;
            cfg.set_all(&set)?;
            let device = if device == "cuda" { PlanDevice::Cuda } else { PlanDevice::Cpu };
            let model = PlanModel::of(&cfg, preset.as_deref())?;
            let memory = plan(&cfg, &model, &PlanOptions { device, world, train_examples })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&memory.to_json())?);
            } else {
                print!("{}", memory.markdown());
            }
            Ok(())
        }
        Command::Train { config, set, out, nproc } => {
            if let Some(n) = nproc {
                return parallel::launch(n, cli.threads);
            }
            let mut cfg = RunConfig::from_file(&config).with_context(|| format!("reading {}", config.display()))?;
            cfg.set_all(&set)?;
            let dir = out.unwrap_or_else(|| PathBuf::from("runs").join(&cfg.name));
            let group = parallel::join(&cfg)?;
            log_to_run_folder(&dir, group.is_main())?;
            let options =
                RunOptions { stop: Some(ctrl_c_flag()?), progress: progress_bars(), group: Some(group.clone()) };
            let state = execute(&cfg, &dir, false, &options)?;
            if group.is_main() {
                print_results(&dir, &state);
            }
            Ok(())
        }
        Command::Study { file, out, set, max_minutes, report_only, model, assets, jobs, methods, seeds } => {
            let model = match model {
                Some(name) => Some((demo::real_model(&name)?, assets.map_or_else(demo::default_assets, Ok)?)),
                None => None,
            };
            let workers = match jobs {
                Some(n) => Some(workers::Workers::for_this_machine(Some(n), cli.threads, usize::MAX)?),
                None => None,
            };
            let seeds = seeds
                .map(|spec| {
                    moram_cl::study::parse_seeds(&spec).map_err(|e| Remedied {
                        message: format!("--seeds: {e}"),
                        remedy: "give seeds as numbers and ranges a-b separated by commas, e.g. --seeds 1-8 or --seeds 4,5,6",
                    })
                })
                .transpose()?;
            let source = study::Source { file: &file, methods, seeds };
            study::run(source, out, &set, max_minutes, report_only, model, workers)
        }
        Command::DemoData { sequence, assets, out, train, eval, words, seed } => {
            let formats = match sequence.as_str() {
                "demo" => false,
                "formats" => true,
                other => anyhow::bail!("--sequence must be `demo` or `formats`, found `{other}`"),
            };
            let assets = assets.map_or_else(demo::default_assets, Ok)?;
            let sizes = moram_cl::data::demo::DemoSizes { train, eval, words };
            let tasks = demo::write_sequence(&assets, &out, sizes, seed, formats)
                .with_context(|| format!("writing the {sequence} tasks from {}", assets.display()))?;
            for (name, metric) in tasks {
                println!("{name}: {} ({train} train, {eval} eval)", metric.name());
            }
            println!("written to {}", out.display());
            Ok(())
        }
        Command::Demo { assets, out, model, set, jobs } => {
            let stop = ctrl_c_flag()?;
            let workers = workers::Workers::for_this_machine(jobs, cli.threads, demo::METHODS.len())?;
            demo::run(&assets.map_or_else(demo::default_assets, Ok)?, &out, &model, &set, workers, stop).map(|_| ())
        }
        Command::Eval { dir, after } => run_tools::eval(&dir, after),
        Command::Generate { source, prompts, input, chat, system, task, jsonl, settings } => {
            generate::run(source, generate::Request { prompts, input, chat, system, task, jsonl, settings })
        }
        Command::Serve { source, bind, api_key, max_tokens, queue, batch, max_body } => {
            serve::run(source, serve::Options { bind, api_key, max_tokens, queue, batch, max_body })
        }
        Command::Export { source, out, merged } => generate::export(&source, &out, merged),
        Command::Viz { dir, examples } => run_tools::figures(&dir, examples),
        Command::Prune { dir, share, examples } => run_tools::prune(&dir, share, examples),
        Command::Report { dirs, csv } => report::run(&dirs, csv.as_deref()),
        Command::Resume { dir, nproc } => {
            if let Some(n) = nproc {
                return parallel::launch(n, cli.threads);
            }
            let cfg = moram_cl::checkpoint::read_config(&dir)
                .with_context(|| format!("{} is not a moram run folder", dir.display()))?;
            let group = parallel::join(&cfg)?;
            log_to_run_folder(&dir, group.is_main())?;
            let options =
                RunOptions { stop: Some(ctrl_c_flag()?), progress: progress_bars(), group: Some(group.clone()) };
            let state = execute(&cfg, &dir, true, &options)?;
            if group.is_main() {
                print_results(&dir, &state);
            }
            Ok(())
        }
    }
}

/// A flag raised by Ctrl-C; the runner stops at the next step boundary and keeps finished tasks.
/// Installs the process's one handler: call it once per command.
pub(crate) fn ctrl_c_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        eprintln!("\nstopping after the current step (finished tasks are kept) ...");
        flag.store(true, Ordering::SeqCst);
    })
    .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Builds the learner the config describes and runs (or resumes) the sequence.
pub(crate) fn execute(cfg: &RunConfig, dir: &Path, resume: bool, options: &RunOptions) -> Result<moram_cl::RunState> {
    let mut learner = match options.group.as_deref() {
        Some(group) => moram_cl::learners::build(&parallel::config_for_rank(cfg, group)?)?,
        None => moram_cl::learners::build(cfg)?,
    };
    Ok(if resume {
        moram_cl::resume(&mut learner, cfg, dir, options)?
    } else {
        moram_cl::run(&mut learner, cfg, dir, options)?
    })
}

/// Prints a run's results table.
fn print_results(dir: &Path, state: &moram_cl::RunState) {
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap_or_default();
    println!("{md}");
    println!("{} task(s) finished; results in {}", state.tasks_done(), dir.display());
}

fn inspect(file: &PathBuf) -> Result<()> {
    let adapter = AdapterFile::load(file, tch::Device::Cpu).with_context(|| format!("reading {}", file.display()))?;
    let c = &adapter.config;
    println!("adapter: {}", file.display());
    println!("tasks: {}", adapter.num_tasks());
    println!(
        "config: r={} top_k={} temperature={} threshold={} eps={} value_scale={} dropout={} routing={:?}",
        c.r, c.top_k, c.temperature, c.threshold, c.eps, c.value_scale, c.dropout, c.routing
    );
    let (mut atoms, mut params) = (0usize, 0usize);
    println!("{:<60} {:>10} {:>7} {:>7} {:>9}", "layer", "d_in->d_out", "atoms", "frozen", "params");
    for name in adapter.layer_names() {
        let Some(bank) = adapter.bank(name) else {
            continue;
        };
        atoms += bank.len();
        params += bank.parameter_count();
        println!(
            "{:<60} {:>10} {:>7} {:>7} {:>9}",
            name,
            format!("{}->{}", bank.d_in(), bank.d_out()),
            bank.len(),
            bank.n_frozen(),
            bank.parameter_count()
        );
    }
    println!(
        "total: {} layers, {atoms} atoms, {params} parameters ({:.2} MiB as f32)",
        adapter.layer_names().len(),
        params as f64 * 4.0 / (1 << 20) as f64
    );
    match adapter.metadata.get(moram_cl::base_model::BASE_KEY) {
        Some(json) => match serde_json::from_str::<moram_cl::base_model::BaseModel>(json) {
            Ok(base) => println!("base model: {base}"),
            Err(e) => println!("base model: unreadable record ({e})"),
        },
        None => println!("base model: not recorded (written before moram recorded it)"),
    }
    let known = ["config", "format", "format_version", "num_tasks", moram_cl::base_model::BASE_KEY];
    for (k, v) in adapter.metadata.iter().filter(|(k, _)| !known.contains(&k.as_str())) {
        println!("metadata {k}: {v}");
    }
    Ok(())
}
