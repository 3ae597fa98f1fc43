//! Runs one harness on files, without the fuzzer (stable toolchain, no sanitizer):
//! `moram-fuzz-replay TARGET FILE...` prints each outcome, the time it took and the process's
//! peak resident memory, to reproduce a finding or measure what a hostile file costs.

use std::process::ExitCode;
use std::time::Instant;

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(target), files) = (args.first(), &args[1.min(args.len())..]) else {
        eprintln!("usage: moram-fuzz-replay TARGET FILE...");
        return ExitCode::FAILURE;
    };
    if files.is_empty() || moram_fuzz::run(target, &[]).is_none() {
        let names: Vec<&str> = moram_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: moram-fuzz-replay TARGET FILE... (targets: {})", names.join(", "));
        return ExitCode::FAILURE;
    }
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let started = Instant::now();
        let outcome = moram_fuzz::run(target, &bytes).unwrap_or(Ok(()));
        let rss = peak_rss_mib().map_or("?".to_string(), |m| format!("{m:.0}"));
        let what = match outcome {
            Ok(()) => "accepted".to_string(),
            Err(m) => format!("refused: {m}"),
        };
        println!(
            "{file} ({} bytes): {what} [{:.3} s, peak RSS {rss} MiB]",
            bytes.len(),
            started.elapsed().as_secs_f64()
        );
    }
    ExitCode::SUCCESS
}
