//! `cargo xtask bench train --pairs N`: the paired design for cases whose speed ratio is close to
//! a goal. The rounds of `bench train` start a fresh process per side and case, minutes apart, and
//! a shared VM's speed drifts by 10-15% within an hour, more than the margin of such a case. Here,
//! per case, both sides are loaded once and stay resident (`--serve`), and their timed calls
//! alternate one by one (moram first in pairs 1, 3, ..., PyTorch first in 2, 4, ...), so the two
//! calls of a pair are seconds apart. Each pair gives one CPU-time ratio (PyTorch / moram); the
//! report gives their median and their geometric mean with a 95% t-interval over pairs.
//! Results: `benchmarks/results/train-pairs.json` and `train-pairs.md` (pasted into the README);
//! a run replaces the cases it measured and keeps the others, each with its own command and date.

use crate::bench::{machine, median, range, torch_version, Row};
use crate::paths;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The two sides' commands for one case.
pub(crate) struct Sides {
    pub(crate) bin: std::path::PathBuf,
    pub(crate) python: std::path::PathBuf,
    pub(crate) script: std::path::PathBuf,
    pub(crate) threads: String,
    pub(crate) gguf: String,
}

impl Sides {
    /// `moram-bench train` on `case` (`reps` timed calls, or `--serve` when `None`), with bf16
    /// base weights when `bf16`.
    pub(crate) fn moram(&self, case: &str, reps: Option<&str>, bf16: bool) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "--threads",
            &self.threads,
            "--reps",
            reps.unwrap_or("1"),
            "train",
            "--gguf",
            &self.gguf,
            "--case",
            case,
        ]);
        if bf16 {
            c.arg("--bf16");
        }
        if reps.is_none() {
            c.arg("--serve");
        }
        c
    }

    /// `benchmarks/train_pytorch.py` on `case` (`reps` timed calls, or `--serve` when `None`),
    /// with bf16 base weights when `bf16`.
    pub(crate) fn pytorch(&self, case: &str, reps: Option<&str>, bf16: bool) -> Command {
        let mut c = Command::new(&self.python);
        c.arg(&self.script)
            .args(["--threads", &self.threads, "--reps", reps.unwrap_or("1"), "--gguf", &self.gguf, "--case", case])
            .env("HF_HUB_OFFLINE", "1");
        if bf16 {
            c.arg("--bf16");
        }
        if reps.is_none() {
            c.arg("--serve");
        }
        c
    }
}

/// One side's serving process.
struct Server {
    what: String,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    log: std::path::PathBuf,
}

impl Server {
    /// Starts `cmd` with piped stdin/stdout; its stderr goes to `log`.
    fn start(mut cmd: Command, what: &str, log: std::path::PathBuf) -> Result<Self> {
        let err = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{what}: no pipes to the process");
        };
        Ok(Server { what: what.to_string(), child, stdin, stdout: BufReader::new(stdout).lines(), log })
    }

    /// The next JSON line the process prints.
    fn next(&mut self) -> Result<serde_json::Value> {
        match self.stdout.next() {
            Some(line) => {
                let line = line.with_context(|| format!("reading from {}", self.what))?;
                serde_json::from_str(&line).with_context(|| format!("{} printed {line:?}", self.what))
            }
            None => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                let text = std::fs::read_to_string(&self.log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(20)..].join("\n");
                bail!(
                    "{} ended ({status}) before answering; its stderr ({}) ends:\n{tail}",
                    self.what,
                    self.log.display()
                )
            }
        }
    }

    /// Waits for the process's `{"ready": true}` (after its warm-up).
    fn ready(&mut self) -> Result<()> {
        let v = self.next()?;
        if v.get("ready") != Some(&serde_json::Value::Bool(true)) {
            bail!("{} printed {v} where `{{\"ready\": true}}` was expected", self.what);
        }
        Ok(())
    }

    /// Sends one command line and reads the JSON line it answers with.
    fn ask(&mut self, command: &str) -> Result<serde_json::Value> {
        writeln!(self.stdin, "{command}")
            .and_then(|_| self.stdin.flush())
            .with_context(|| format!("writing to {}", self.what))?;
        self.next()
    }

    /// One timed call: `(wall ms, CPU ms)`.
    fn call(&mut self) -> Result<(f64, f64)> {
        let v = self.ask("run")?;
        match (v.get("wall_ms").and_then(|x| x.as_f64()), v.get("cpu_ms").and_then(|x| x.as_f64())) {
            (Some(w), Some(c)) => Ok((w, c)),
            _ => bail!("{} printed {v} where `{{\"wall_ms\": .., \"cpu_ms\": ..}}` was expected", self.what),
        }
    }

    /// Ends the process and returns its row (medians over the served calls, peak RSS).
    fn finish(mut self) -> Result<Row> {
        let row: Row =
            serde_json::from_value(self.ask("done")?).with_context(|| format!("{}'s final row", self.what))?;
        let status = self.child.wait().with_context(|| format!("waiting for {}", self.what))?;
        if !status.success() {
            bail!("{} exited with {status} (stderr: {})", self.what, self.log.display());
        }
        Ok(row)
    }
}

impl Drop for Server {
    /// A run that stops early (an error on the other side) leaves no process computing behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One pair's CPU and wall times, ms.
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Pair {
    moram_cpu_ms: f64,
    pytorch_cpu_ms: f64,
    moram_wall_ms: f64,
    pytorch_wall_ms: f64,
}

/// Summary of the ratios `PyTorch CPU / moram CPU` over a case's pairs.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Debug)]
struct RatioSummary {
    pairs: usize,
    median: f64,
    geometric_mean: f64,
    /// 95% t-interval of the geometric mean (over the pairs' log ratios); NaN for one pair.
    ci95: [f64; 2],
    lowest: f64,
    highest: f64,
}

#[derive(Serialize, Deserialize)]
struct CaseReport {
    command: String,
    machine: String,
    torch: String,
    date: String,
    pairs: Vec<Pair>,
    ratio: RatioSummary,
    /// The two processes' own rows (medians over their served calls, peak RSS).
    moram: Row,
    pytorch: Row,
}

/// `train-pairs.json`: case -> its latest paired measurement.
type Report = BTreeMap<String, CaseReport>;

/// Two-sided 95% quantile of Student's t with `df` degrees of freedom (table to 30, then the
/// Cornish-Fisher expansion around the normal quantile to `1 / df^2`, within 0.001 there).
fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, n) = (1.959_963_985_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * n) + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * n * n)
        }
    }
}

/// Median, geometric mean and its 95% t-interval, range of `ratios` (all positive).
fn summarise(ratios: &[f64]) -> RatioSummary {
    let n = ratios.len();
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / n as f64;
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
    let half = t975(n.saturating_sub(1)) * (var / n as f64).sqrt();
    let (lowest, highest) = range(ratios);
    RatioSummary {
        pairs: n,
        median: median(ratios.to_vec()),
        geometric_mean: mean.exp(),
        ci95: [(mean - half).exp(), (mean + half).exp()],
        lowest,
        highest,
    }
}

/// Runs `pairs` alternating calls per case (both sides with bf16 base weights when `bf16`, the
/// case then recorded as `<case>_bf16`) and writes the report.
pub fn run(sides: &Sides, cases: &[String], pairs: u32, bf16: bool) -> Result<()> {
    let root = paths::workspace_root();
    let logs = root.join("target/bench-pairs");
    std::fs::create_dir_all(&logs)?;
    let json = root.join("benchmarks/results/train-pairs.json");
    let mut report: Report = match std::fs::read_to_string(&json) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{}: not a paired report (move it away to start a new one)", json.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Report::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", json.display())),
    };
    let torch = torch_version(&sides.python);
    for case in cases {
        let key = if bf16 { format!("{case}_bf16") } else { case.clone() };
        eprintln!("{key}: loading both sides and warming up");
        let mut moram = Server::start(
            sides.moram(case, None, bf16),
            &format!("moram {key}"),
            logs.join(format!("{key}-moram.log")),
        )?;
        let mut pytorch = Server::start(
            sides.pytorch(case, None, bf16),
            &format!("pytorch {key}"),
            logs.join(format!("{key}-pytorch.log")),
        )?;
        moram.ready()?;
        pytorch.ready()?;
        let mut done = Vec::new();
        for i in 0..pairs {
            // moram first in odd pairs, PyTorch first in even ones.
            let (m, p) = if i % 2 == 0 {
                let m = moram.call()?;
                (m, pytorch.call()?)
            } else {
                let p = pytorch.call()?;
                (moram.call()?, p)
            };
            eprintln!("  pair {}/{pairs}: moram {:.0} ms, PyTorch {:.0} ms (CPU), {:.2}x", i + 1, m.1, p.1, p.1 / m.1);
            done.push(Pair { moram_cpu_ms: m.1, pytorch_cpu_ms: p.1, moram_wall_ms: m.0, pytorch_wall_ms: p.0 });
        }
        let ratios: Vec<f64> = done.iter().map(|p| p.pytorch_cpu_ms / p.moram_cpu_ms).collect();
        let entry = CaseReport {
            command: format!(
                "cargo xtask bench train --threads {} --pairs {pairs}{} --cases {case}",
                sides.threads,
                if bf16 { " --bf16" } else { "" }
            ),
            machine: machine(),
            torch: torch.clone(),
            date: crate::bench::today(),
            ratio: summarise(&ratios),
            pairs: done,
            moram: moram.finish()?,
            pytorch: pytorch.finish()?,
        };
        report.insert(key, entry);
        // Published after every case, so a failure later loses no finished measurement.
        crate::bench::publish("train-pairs", &report, &markdown(&report), "train-pairs")?;
    }
    Ok(())
}

fn markdown(r: &Report) -> String {
    let distinct = |f: fn(&CaseReport) -> &str| {
        let mut v: Vec<&str> = r.values().map(f).collect();
        v.sort_unstable();
        v.dedup();
        v.join("; ")
    };
    let mut s = format!(
        "`cargo xtask bench train --pairs N [--bf16] --cases CASE` on {}, PyTorch {}: the `bench train` job \
         (train.md) in the paired design. Per case both sides stay loaded and their timed calls alternate one \
         by one (moram first in odd pairs); each pair gives one ratio, PyTorch CPU time / moram CPU time. \
         Geometric mean of the pairs' ratios with its 95% t-interval, median, lowest and highest pair; seconds \
         are medians of the calls, peak RSS each process's own. Cases ending in `_bf16` ran with `--bf16`: \
         both sides with bf16 base weights and activations and f32 atoms (the demo's setting).\n\n\
         | case | date | pairs | moram (s) | PyTorch (s) | ratio: geometric mean [95% CI] | median | lowest-highest | peak RSS moram / PyTorch (MB) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        distinct(|c| &c.machine),
        distinct(|c| &c.torch),
    );
    for (case, c) in r {
        let x = &c.ratio;
        s += &format!(
            "| {case} | {} | {} | {:.2} | {:.2} | {:.2}x [{:.2}, {:.2}] | {:.2}x | {:.2}-{:.2} | {:.0} / {:.0} |\n",
            c.date,
            x.pairs,
            c.moram.median_cpu_ms / 1e3,
            c.pytorch.median_cpu_ms / 1e3,
            x.geometric_mean,
            x.ci95[0],
            x.ci95[1],
            x.median,
            x.lowest,
            x.highest,
            c.moram.peak_rss_mb.unwrap_or(f64::NAN),
            c.pytorch.peak_rss_mb.unwrap_or(f64::NAN),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_summarise_to_their_geometric_mean_and_t_interval() {
        // log ratios ln 1.2, ln 1.5, ln 1.875: mean ln 1.5, sd ln 1.25 -> half-width t(2) sd / sqrt 3.
        let s = summarise(&[1.2, 1.5, 1.875]);
        assert!((s.geometric_mean - 1.5).abs() < 1e-12);
        let half = 4.303 * 1.25f64.ln() / 3f64.sqrt();
        assert!((s.ci95[0] - 1.5 * (-half).exp()).abs() < 1e-12 && (s.ci95[1] - 1.5 * half.exp()).abs() < 1e-12);
        assert_eq!((s.median, s.lowest, s.highest, s.pairs), (1.5, 1.2, 1.875, 3));
        // Equal ratios: a zero-width interval.
        let s = summarise(&[1.4, 1.4]);
        assert!((s.ci95[0] - 1.4).abs() < 1e-12 && (s.ci95[1] - 1.4).abs() < 1e-12);
        // One pair: no interval.
        assert!(summarise(&[1.3]).ci95[0].is_nan());
    }

    #[test]
    fn the_t_quantile_table_joins_its_tail_formula() {
        assert_eq!(t975(1), 12.706);
        assert_eq!(t975(30), 2.042);
        // Exact values: 2.0395 (31), 2.0003 (60), 1.9840 (100).
        for (df, exact) in [(31, 2.0395), (60, 2.0003), (100, 1.9840)] {
            assert!((t975(df) - exact).abs() < 1e-3, "t975({df}) = {}", t975(df));
        }
        assert!(t975(0).is_nan());
    }
}
