//! `cargo xtask gpu-check`: CPU against a device in one command (`moram-bench gpu-check`; what it
//! checks is listed in `benchmarks/src/gpu_check.rs` and docs/performance.md, "GPU check").
//!
//! - `--device cpu` builds `moram-bench` (debug, sharing the test suite's build) and runs the
//!   whole script with the CPU on both sides into `target/gpu-check/`: `cargo xtask test` runs it,
//!   so the script cannot rot on a machine without a GPU.
//! - `--device cuda` builds `moram-bench` against the CUDA libtorch with NCCL (as `cargo xtask
//!   test --cuda` builds `moram`) unless `--bin` names a carried build, runs it on device 0 and
//!   writes `benchmarks/results/gpu-check.{json,md}`. `--build-only` stops after the build and
//!   prints the command to run on a GPU machine without Rust. `cargo xtask test --cuda` runs that
//!   binary with `--device cpu` here, so the build a GPU machine gets is known to run the script.

use crate::{cuda, paths, setup};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `cargo xtask gpu-check` arguments.
#[derive(clap::Args)]
pub struct GpuCheckArgs {
    /// `cuda` (device 0) or `cpu` (the script checking itself, as CI runs it).
    #[arg(long, default_value = "cuda", value_parser = ["cuda", "cpu"])]
    device: String,
    /// A `moram-bench` built elsewhere (e.g. carried to a GPU machine) instead of building one.
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Report folder (default: `benchmarks/results` on CUDA, `target/gpu-check` on the CPU).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Training steps compared (default 20 on CUDA; 2 on the CPU, which keeps the run under 3
    /// minutes on 2 cores).
    #[arg(long)]
    steps: Option<usize>,
    /// Build the CUDA `moram-bench` and print how to run it; run nothing.
    #[arg(long)]
    build_only: bool,
}

impl GpuCheckArgs {
    /// The CPU mode with its defaults (what `cargo xtask test` runs).
    pub fn cpu() -> Self {
        GpuCheckArgs { device: "cpu".into(), bin: None, out: None, steps: None, build_only: false }
    }
}

/// Runs `cargo xtask gpu-check`.
pub fn run(args: &GpuCheckArgs) -> Result<()> {
    let root = paths::workspace_root();
    setup::install_demo_assets()?;
    let gguf = setup::assets_dir()?.join(moram_assets::SMOLLM2.file);
    let cpu = args.device == "cpu";
    let cmd = if cpu {
        let libtorch = setup::ensure_libtorch()?;
        let bin = match &args.bin {
            Some(bin) => bin.clone(),
            None => {
                let mut build = paths::cargo();
                build.args(["build", "-p", "moram-bench"]);
                paths::run_checked(&mut build).context("building moram-bench")?;
                root.join("target").join("debug").join("moram-bench")
            }
        };
        let mut cmd = Command::new(bin);
        cmd.env("LD_LIBRARY_PATH", libtorch.lib_dir());
        cmd
    } else {
        let env = cuda::CudaEnv::prepare()?;
        let bin = match &args.bin {
            Some(bin) => bin.clone(),
            None => env.build("moram-bench", &["nccl"], "moram-bench")?,
        };
        if args.build_only {
            println!(
                "built {}\non a GPU machine (the SmolLM2 GGUF beside it, libtorch 2.11 CUDA libraries on \
                 LD_LIBRARY_PATH):\n  {} --threads 8 gpu-check --device cuda --gguf SmolLM2-135M-Instruct.Q4_1.gguf \
                 --out benchmarks/results",
                bin.display(),
                bin.display()
            );
            return Ok(());
        }
        let mut cmd = Command::new(bin);
        env.configure(&mut cmd);
        cmd
    };
    let out = args.out.clone().unwrap_or_else(|| {
        if cpu {
            root.join("target").join("gpu-check")
        } else {
            root.join("benchmarks").join("results")
        }
    });
    run_bench(cmd, &args.device, args.steps, &gguf, &out)
}

/// Runs `bench` (a `moram-bench` command with its library path set) as `gpu-check` on `device`
/// (`cpu` or `cuda`) with `steps` training steps (defaults as [`GpuCheckArgs::steps`]), SmolLM2
/// from `gguf`, the report into `out`.
pub fn run_bench(mut bench: Command, device: &str, steps: Option<usize>, gguf: &Path, out: &Path) -> Result<()> {
    let cpu = device == "cpu";
    let threads = if cpu { "2" } else { "8" };
    let steps = steps.unwrap_or(if cpu { 2 } else { 20 }).to_string();
    bench
        .args(["--threads", threads, "gpu-check", "--device", device, "--steps", &steps])
        .arg("--gguf")
        .arg(gguf)
        .arg("--out")
        .arg(out);
    paths::run_checked(&mut bench).context("moram-bench gpu-check")
}

/// After `cargo xtask test --cuda`: the GPU check's binary (NCCL included), as a GPU machine gets
/// it, runs the script on this CPU.
pub fn cuda_build_on_cpu(env: &cuda::CudaEnv) -> Result<()> {
    let bench = env.build("moram-bench", &["nccl"], "moram-bench")?;
    let mut run = Command::new(bench);
    env.configure(&mut run);
    let gguf = setup::assets_dir()?.join(moram_assets::SMOLLM2.file);
    run_bench(run, "cpu", None, &gguf, &env.target.join("gpu-check"))
}
