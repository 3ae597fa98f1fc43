//! Writes the seed corpus of every fuzz target: `moram-fuzz-seeds OUT [ASSETS]` creates
//! `OUT/<target>/seed-<name>` (see `moram_fuzz::seeds`) and `OUT/targets.tsv` (name, longest
//! input, what it covers: one line per target). Run by `cargo xtask fuzz`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first().map(PathBuf::from) else {
        eprintln!("usage: moram-fuzz-seeds OUT [ASSETS]");
        return ExitCode::FAILURE;
    };
    let assets = args.get(1).map(PathBuf::from);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let write = || -> std::io::Result<usize> {
        let seeds = moram_fuzz::seeds::seeds(&root, assets.as_deref())?;
        for s in &seeds {
            let dir = out.join(s.target);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(format!("seed-{}", s.name)), &s.bytes)?;
        }
        let targets: String =
            moram_fuzz::TARGETS.iter().map(|t| format!("{}\t{}\t{}\n", t.name, t.max_len, t.covers)).collect();
        std::fs::write(out.join("targets.tsv"), targets)?;
        Ok(seeds.len())
    };
    match write() {
        Ok(n) => {
            println!("{n} seeds written under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write the seeds under {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
