//! `cargo xtask study`: set-up, a release `moram`, the BBC formats data, then `moram study`.

use crate::{paths, setup};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The README's study: four formats of the BBC topic question on SmolLM2.
const DEFAULT_STUDY: &str = "configs/study/bbc-formats.toml";

/// Arguments of `cargo xtask study`.
#[derive(clap::Args)]
pub struct StudyArgs {
    /// The study file (default: configs/study/bbc-formats.toml, on SmolLM2 and BBC News from the
    /// assets; its model and data paths are filled in).
    #[arg(long)]
    study: Option<PathBuf>,
    /// Output folder (default: runs/study-<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start no new run after this many minutes; the same command continues later.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// libtorch threads per run (default: libtorch's choice).
    #[arg(long)]
    threads: Option<u32>,
    /// Config overrides for every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Use the dev-profile `moram` (tests, quick looks).
    #[arg(long)]
    debug: bool,
}

/// Runs (or continues) the study.
pub fn run(args: StudyArgs) -> Result<()> {
    let root = paths::workspace_root();
    let bin = paths::build_moram(args.debug)?;
    let mut sets = Vec::new();
    let study = match args.study {
        Some(s) => s,
        None => {
            setup::install_assets()?;
            let assets = setup::assets_dir()?;
            let data = root.join("data/cache/bbc-formats");
            if !data.join("headline/eval.json").exists() {
                let mut cmd = std::process::Command::new(&bin);
                cmd.arg("demo-data").arg("--assets").arg(&assets).arg("--out").arg(&data);
                cmd.args(["--train", "64", "--eval", "64", "--words", "24", "--seed", "42"]);
                paths::run_checked(&mut cmd).context("writing the BBC formats data")?;
            }
            let model = assets.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
            sets.push(format!("model.path=\"{}\"", model.display()));
            sets.push(format!("data.dir=\"{}\"", data.display()));
            root.join(DEFAULT_STUDY)
        }
    };
    sets.extend(args.set);
    let mut cmd = std::process::Command::new(&bin);
    if let Some(t) = args.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    cmd.arg("study").arg(&study);
    if let Some(out) = &args.out {
        cmd.arg("--out").arg(out);
    }
    if let Some(m) = args.max_minutes {
        cmd.arg("--max-minutes").arg(m.to_string());
    }
    for s in &sets {
        cmd.arg("--set").arg(s);
    }
    cmd.current_dir(&root);
    paths::run_checked(&mut cmd)
}
