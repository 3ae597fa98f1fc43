//! `moram`: the command line of the MoRAM toolkit.
//!
//! Implemented so far: `info` (libtorch, devices, threads) and `inspect` (adapter files). Training,
//! evaluation, reports and figures arrive with the engine and demo issues.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use moram_core::AdapterFile;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

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
    /// Describe an adapter file: config, tasks, atoms per layer and sizes.
    Inspect {
        /// A `.safetensors` adapter file written by moram.
        file: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let level = if cli.quiet { "error" } else { ["info", "debug", "trace"][cli.verbose.min(2) as usize] };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
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
            let probe = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).sum(tch::Kind::Float).double_value(&[]);
            println!("cpu tensor check: sum(1, 2, 3) = {probe}");
            Ok(())
        }
        Command::Inspect { file } => inspect(&file),
    }
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
    for (k, v) in adapter
        .metadata
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "config" | "format" | "format_version" | "num_tasks"))
    {
        println!("metadata {k}: {v}");
    }
    Ok(())
}
