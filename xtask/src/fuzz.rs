//! `cargo xtask fuzz`: every cargo-fuzz target of `fuzz/` (harnesses in `crates/moram-fuzz`) for
//! a bounded time, then a summary in `benchmarks/results/fuzz.md`. Installs what it needs: the
//! nightly toolchain (libFuzzer's sanitizer flags need it) and cargo-fuzz at a pinned version.
//! Not part of `cargo xtask test`: CI replays the kept findings instead
//! (`crates/moram-fuzz/tests/regressions.rs`).

use crate::paths::{cargo, run_checked, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The cargo-fuzz release the summary's numbers were taken with.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

/// Limits given to libFuzzer, in the summary too: memory per process, the largest single
/// allocation (a larger one is a finding: a header made the parser allocate what the input cannot
/// justify) and the time one input may take.
const RSS_LIMIT_MB: u32 = 2048;
const MALLOC_LIMIT_MB: u32 = 512;
const TIMEOUT_S: u32 = 20;

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Minutes per target.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Only these targets (comma-separated; default: all).
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Targets fuzzed at once (one process each).
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Where the records (`.json`, one per target, updated by each run) and the summary
    /// (`.md`, rewritten from all records) go.
    #[arg(long, default_value = "benchmarks/results/fuzz")]
    results: PathBuf,
}

struct Target {
    name: String,
    max_len: usize,
    covers: String,
}

/// What one target's run gave; `fuzz.json` keeps the latest record of every target.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Stats {
    target: String,
    covers: String,
    max_len: usize,
    /// When and at which commit (`git describe --always --dirty`) it ran, and on what.
    date: String,
    commit: String,
    machine: String,
    /// Targets fuzzed at once during that run.
    jobs: usize,
    seconds: f64,
    executions: u64,
    exec_per_s: u64,
    coverage: u64,
    features: u64,
    corpus: u64,
    peak_rss_mb: u64,
    findings: Vec<String>,
    exit: String,
}

pub fn run(args: FuzzArgs) -> Result<()> {
    if args.minutes <= 0.0 || args.jobs == 0 {
        bail!("--minutes and --jobs must be positive");
    }
    let root = workspace_root();
    ensure_tools()?;
    let seeds = root.join("target/fuzz-seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    let mut cmd = cargo();
    cmd.args(["run", "--release", "-q", "-p", "moram-fuzz", "--bin", "moram-fuzz-seeds", "--"]).arg(&seeds);
    if let Ok(assets) = crate::setup::assets_dir() {
        cmd.arg(assets);
    }
    run_checked(&mut cmd)?;
    let all = read_targets(&seeds.join("targets.tsv"))?;
    let targets: Vec<&Target> = if args.targets.is_empty() {
        all.iter().collect()
    } else {
        args.targets
            .iter()
            .map(|n| {
                all.iter().find(|t| &t.name == n).with_context(|| {
                    format!(
                        "no fuzz target `{n}` (targets: {})",
                        all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    run_checked(nightly_fuzz().arg("build"))?;

    let seconds = (args.minutes * 60.0).round() as u64;
    eprintln!("fuzzing {} targets for {seconds} s each, {} at a time", targets.len(), args.jobs);
    let records_path = root.join(&args.results).with_extension("json");
    let summary_path = root.join(&args.results).with_extension("md");
    let mut records = read_records(&records_path)?;
    let (date, commit, machine) = (now(), git_commit(), crate::bench::machine());
    let mut open = 0;
    for chunk in targets.chunks(args.jobs) {
        let stats = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|t| s.spawn(|| fuzz_one(t, seconds, &seeds))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("fuzz thread panicked"))))
                .collect::<Vec<_>>()
        });
        for (t, st) in chunk.iter().zip(stats) {
            let mut st = st?;
            eprintln!(
                "{:<13} {:>10} executions, coverage {}, {} finding(s)",
                t.name,
                st.executions,
                st.coverage,
                st.findings.len()
            );
            open += st.findings.len();
            st.target = t.name.clone();
            st.covers = t.covers.clone();
            st.max_len = t.max_len;
            st.date = date.clone();
            st.commit = commit.clone();
            st.machine = machine.clone();
            st.jobs = args.jobs;
            records.retain(|r| r.target != t.name);
            records.push(st);
        }
        // Written after every chunk, so an interrupted campaign keeps what it finished.
        records.sort_by_key(|r| all.iter().position(|t| t.name == r.target).unwrap_or(usize::MAX));
        let json = serde_json::to_string_pretty(&records)?;
        std::fs::write(&records_path, json).with_context(|| format!("writing {}", records_path.display()))?;
        std::fs::write(&summary_path, markdown(&records))
            .with_context(|| format!("writing {}", summary_path.display()))?;
    }
    eprintln!("summary: {}", summary_path.display());
    if open > 0 {
        bail!(
            "{open} finding(s): reproduce with `cargo +nightly fuzz run TARGET FILE` (or \
             `moram-fuzz-replay TARGET FILE`), fix, keep the input under tests/fixtures/fuzz/TARGET/"
        );
    }
    Ok(())
}

fn read_records(path: &Path) -> Result<Vec<Stats>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("{}: not a fuzz record list", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn git_commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `cargo fuzz` on the nightly toolchain, from the workspace root, with libtorch on the library
/// path (cargo-fuzz's RUSTFLAGS replace the rpath of `.cargo/config.toml`).
fn nightly_fuzz() -> Command {
    let root = workspace_root();
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "fuzz"]).current_dir(&root);
    for var in ["RUSTC", "RUSTDOC", "RUSTUP_TOOLCHAIN", "CARGO", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    let mut path = std::ffi::OsString::from(root.join(".libtorch/lib"));
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
        path.push(":");
        path.push(old);
    }
    cmd.env("LD_LIBRARY_PATH", path);
    cmd
}

fn ensure_tools() -> Result<()> {
    let has_nightly = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_nightly {
        run_checked(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let version = Command::new("cargo").args(["fuzz", "--version"]).output();
    let current = version.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if !current.is_some_and(|v| v.contains(CARGO_FUZZ_VERSION)) {
        run_checked(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

fn read_targets(path: &Path) -> Result<Vec<Target>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            let mut f = l.splitn(3, '\t');
            let (Some(name), Some(len), Some(covers)) = (f.next(), f.next(), f.next()) else {
                bail!("{}:{}: expected `name<TAB>max_len<TAB>covers`", path.display(), i + 1);
            };
            let max_len = len.parse().with_context(|| format!("{}:{}: max_len `{len}`", path.display(), i + 1))?;
            Ok(Target { name: name.into(), max_len, covers: covers.into() })
        })
        .collect()
}

fn fuzz_one(t: &Target, seconds: u64, seeds: &Path) -> Result<Stats> {
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(&t.name);
    let artifacts = root.join("fuzz/artifacts").join(&t.name);
    for d in [&corpus, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let before: Vec<PathBuf> = list(&artifacts);
    let logs = root.join("target/fuzz-logs");
    std::fs::create_dir_all(&logs)?;
    let log_path = logs.join(format!("{}.log", t.name));
    let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let started = Instant::now();
    let status = nightly_fuzz()
        .args(["run", &t.name])
        .arg(&corpus)
        .arg(seeds.join(&t.name))
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={}", t.max_len))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
        .arg(format!("-timeout={TIMEOUT_S}"))
        // libtorch keeps process-lifetime allocations that LeakSanitizer would report.
        .arg("-detect_leaks=0")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting cargo fuzz run")?;
    let mut stats = parse_log(&std::fs::read_to_string(&log_path).unwrap_or_default());
    stats.target = t.name.clone();
    stats.seconds = started.elapsed().as_secs_f64();
    stats.exit = status.code().map_or("signal".into(), |c| c.to_string());
    stats.findings = list(&artifacts)
        .into_iter()
        .filter(|p| !before.contains(p))
        .map(|p| p.strip_prefix(&root).unwrap_or(&p).display().to_string())
        .collect();
    if !status.success() && stats.findings.is_empty() {
        stats.findings.push(format!("exit {} without an artifact; see {}", stats.exit, log_path.display()));
    }
    Ok(stats)
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).into_iter().flatten().filter_map(|e| e.ok()).map(|e| e.path()).collect();
    v.sort();
    v
}

/// libFuzzer's progress lines (`#N ... cov: C ft: F corp: K/...`) and `-print_final_stats`.
fn parse_log(log: &str) -> Stats {
    let mut s = Stats::default();
    let field = |line: &str, key: &str| -> Option<u64> {
        let rest = line.split(key).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty())?.parse().ok()
    };
    for line in log.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            s.coverage = field(line, " cov: ").unwrap_or(s.coverage);
            s.features = field(line, " ft: ").unwrap_or(s.features);
            s.corpus = field(line, " corp: ").unwrap_or(s.corpus);
        }
        if let Some(v) = line.strip_prefix("stat::number_of_executed_units:") {
            s.executions = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = line.strip_prefix("stat::average_exec_per_sec:") {
            s.exec_per_s = v.trim().parse().unwrap_or(0);
        }
        if let Some(v) = line.strip_prefix("stat::peak_rss_mb:") {
            s.peak_rss_mb = v.trim().parse().unwrap_or(0);
        }
    }
    s
}

fn markdown(records: &[Stats]) -> String {
    let mut s = format!(
        "# Fuzzing\n\nWritten by `cargo xtask fuzz` from `fuzz.json` (the latest run of each target; \
         `cargo xtask fuzz --minutes N --targets a,b` reruns some and keeps the others' rows). cargo-fuzz \
         {CARGO_FUZZ_VERSION}: libFuzzer with AddressSanitizer. Limits per process: {RSS_LIMIT_MB} MB \
         resident, {MALLOC_LIMIT_MB} MB in one allocation, {TIMEOUT_S} s per input; leak detection off \
         (libtorch's process-lifetime allocations). Harnesses: `crates/moram-fuzz` (what each checks beyond \
         \"no panic\" is in its docs); seeds from the fixtures, the configs, files written by moram's own \
         writers and the first 64 KiB of the real GGUF assets; the corpus carries over between runs \
         (`fuzz/corpus/`, not committed). See `docs/reliability.md`.\n\n\
         | target | what it covers | longest input (bytes) | seconds | executions | exec/s | coverage (edges) | features | corpus | peak RSS (MB) | findings | run |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n"
    );
    for r in records {
        let findings = if r.findings.is_empty() { "none".to_string() } else { r.findings.join("<br>") };
        s.push_str(&format!(
            "| `{}` | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {}, {}, {} at a time, {} |\n",
            r.target,
            r.covers,
            r.max_len,
            r.seconds,
            r.executions,
            r.exec_per_s,
            r.coverage,
            r.features,
            r.corpus,
            r.peak_rss_mb,
            findings,
            r.date,
            r.commit,
            r.jobs,
            r.machine
        ));
    }
    s
}
