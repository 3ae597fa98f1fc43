//! `cargo xtask bench core`: moram-core against the same math in PyTorch, side by side.
//!
//! Both sides run in alternating rounds (Rust, Python, Rust, Python, ...) with the same thread
//! count, so drift on a shared machine hits both; each case reports the median over rounds of the
//! per-round medians. Results go to `benchmarks/results/core.json` and a Markdown table to
//! `benchmarks/results/core.md` (pasted into the README).

use crate::{fixtures, paths, python};
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::Command;

#[derive(Subcommand)]
pub enum Which {
    /// MoramLinear (eval; train forward+backward) vs a frozen linear vs PyTorch 2.11, on CPU.
    Core {
        /// Intra-op threads for both sides.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Alternating rounds.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Timed repetitions per case and round.
        #[arg(long, default_value_t = 20)]
        reps: u32,
    },
}

#[derive(Deserialize)]
struct Row {
    case: String,
    impl_name: String,
    median_ms: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: String,
    threads: u32,
    rounds: u32,
    reps: u32,
    torch: String,
    date: String,
    /// case -> implementation -> median ms (median over rounds).
    median_ms: BTreeMap<String, BTreeMap<String, f64>>,
    /// case -> PyTorch time / moram time (> 1: moram faster).
    speedup_vs_pytorch: BTreeMap<String, f64>,
}

pub fn run(which: Which) -> Result<()> {
    let Which::Core { threads, rounds, reps } = which;
    let root = paths::workspace_root();
    paths::run_checked(paths::cargo().args(["build", "--release", "-p", "moram-bench"]))?;
    let venv = paths::cache_dir()?.join("venv-torch-2.11.0");
    let python = python::venv_with(&venv, &fixtures::REQUIREMENTS)?;
    let rust_bin = root.join("target/release/moram-bench");
    let mut samples: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: moram");
        let rust = Command::new(&rust_bin)
            .args(["--threads", &threads.to_string(), "--reps", &reps.to_string(), "core"])
            .output()
            .context("running moram-bench")?;
        eprintln!("round {round}/{rounds}: pytorch");
        let py = Command::new(&python)
            .arg(root.join("benchmarks/core_pytorch.py"))
            .args(["--threads", &threads.to_string(), "--reps", &reps.to_string()])
            .output()
            .context("running benchmarks/core_pytorch.py")?;
        for (name, out) in [("moram-bench", &rust), ("core_pytorch.py", &py)] {
            if !out.status.success() {
                bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let row: Row = serde_json::from_str(line).with_context(|| format!("{name} printed {line:?}"))?;
                samples.entry((row.case, row.impl_name)).or_default().push(row.median_ms);
            }
        }
    }
    let mut median_ms: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for ((case, imp), mut v) in samples {
        v.sort_by(f64::total_cmp);
        median_ms.entry(case).or_default().insert(imp, v[v.len() / 2]);
    }
    let speedup_vs_pytorch =
        median_ms.iter().filter_map(|(case, m)| Some((case.clone(), m.get("pytorch")? / m.get("moram")?))).collect();
    let torch = Command::new(&python)
        .args(["-c", "import torch; print(torch.__version__)"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let report = Report {
        command: format!("cargo xtask bench core --threads {threads} --rounds {rounds} --reps {reps}"),
        machine: machine(),
        threads,
        rounds,
        reps,
        torch,
        date: Command::new("date")
            .args(["-u", "+%Y-%m-%d"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default(),
        median_ms,
        speedup_vs_pytorch,
    };
    let dir = root.join("benchmarks/results");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("core.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    let table = markdown(&report);
    std::fs::write(dir.join("core.md"), &table)?;
    println!("{table}");
    eprintln!("wrote benchmarks/results/core.json and core.md");
    Ok(())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!("{cpu}, {cores} cores available")
}

fn markdown(r: &Report) -> String {
    let get = |case: &str, imp: &str| r.median_ms.get(case).and_then(|m| m.get(imp)).copied();
    let fmt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "Command: `{}`; machine: {}; libtorch/PyTorch {}; {}.\n\n\
         | case (8 x 197 tokens, d = 768, k = 16) | frozen linear ms | moram ms | PyTorch ms | PyTorch / moram |\n|---|---:|---:|---:|---:|\n",
        r.command, r.machine, r.torch, r.date
    );
    let base = get("frozen_linear", "moram");
    let mut cases: Vec<&String> = r.median_ms.keys().filter(|c| c.as_str() != "frozen_linear").collect();
    cases.sort_by_key(|c| {
        (
            c.contains("1tok"),
            c.starts_with("train"),
            c.trim_start_matches(|ch: char| !ch.is_ascii_digit()).parse::<u32>().unwrap_or(0),
            c.to_string(),
        )
    });
    for case in cases {
        let ratio = r.speedup_vs_pytorch.get(case.as_str()).map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        let b = if case.contains("1tok") { "-".into() } else { fmt(base) };
        s += &format!("| {case} | {b} | {} | {} | {ratio} |\n", fmt(get(case, "moram")), fmt(get(case, "pytorch")));
    }
    s
}
