//! `cargo xtask bench core`: moram-core against the same math in PyTorch, side by side.
//!
//! Both sides run in alternating rounds (Rust first in odd rounds, Python first in even ones) with
//! the same thread count. Each case reports the median over rounds of the per-round medians, and
//! the speed ratio is the median of the ratios taken within each round, so drift on a shared
//! machine hits both sides alike. Results go to `benchmarks/results/core.json` and a Markdown table to
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
        #[arg(long, default_value_t = 7)]
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
    /// case -> median over rounds of (PyTorch time / moram time) within a round (> 1: moram faster).
    speedup_vs_pytorch: BTreeMap<String, f64>,
}

pub fn run(which: Which) -> Result<()> {
    let Which::Core { threads, rounds, reps } = which;
    let root = paths::workspace_root();
    paths::run_checked(paths::cargo().args(["build", "--release", "-p", "moram-bench"]))?;
    let venv = paths::cache_dir()?.join("venv-torch-2.11.0");
    let python = python::venv_with(&venv, &fixtures::REQUIREMENTS)?;
    let rust_bin = root.join("target/release/moram-bench");
    // Per round and case: implementation -> median ms. Rounds alternate which side runs first,
    // and ratios are taken within a round, so slow drift of a shared machine cancels out.
    let mut rounds_ms: Vec<BTreeMap<String, BTreeMap<String, f64>>> = Vec::new();
    for round in 1..=rounds {
        let rust_cmd = || {
            let mut c = Command::new(&rust_bin);
            c.args(["--threads", &threads.to_string(), "--reps", &reps.to_string(), "core"]);
            ("moram-bench", c)
        };
        let py_cmd = || {
            let mut c = Command::new(&python);
            c.arg(root.join("benchmarks/core_pytorch.py"));
            c.args(["--threads", &threads.to_string(), "--reps", &reps.to_string()]);
            ("core_pytorch.py", c)
        };
        let order = if round % 2 == 1 { [rust_cmd(), py_cmd()] } else { [py_cmd(), rust_cmd()] };
        let mut this_round: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
        for (name, mut cmd) in order {
            eprintln!("round {round}/{rounds}: {name}");
            let out = cmd.output().with_context(|| format!("running {name}"))?;
            if !out.status.success() {
                bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let row: Row = serde_json::from_str(line).with_context(|| format!("{name} printed {line:?}"))?;
                this_round.entry(row.case).or_default().insert(row.impl_name, row.median_ms);
            }
        }
        rounds_ms.push(this_round);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut median_ms: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut speedup_vs_pytorch = BTreeMap::new();
    let cases: Vec<String> = rounds_ms
        .iter()
        .flat_map(|r| r.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for case in cases {
        let per_round: Vec<&BTreeMap<String, f64>> = rounds_ms.iter().filter_map(|r| r.get(&case)).collect();
        for imp in ["moram", "pytorch"] {
            let v: Vec<f64> = per_round.iter().filter_map(|m| m.get(imp).copied()).collect();
            if !v.is_empty() {
                median_ms.entry(case.clone()).or_default().insert(imp.to_string(), median(v));
            }
        }
        let ratios: Vec<f64> = per_round.iter().filter_map(|m| Some(m.get("pytorch")? / m.get("moram")?)).collect();
        if !ratios.is_empty() {
            speedup_vs_pytorch.insert(case, median(ratios));
        }
    }
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
