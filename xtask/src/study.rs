//! `cargo xtask study`: set-up, a release `moram`, the real-data task sequence, then `moram study`.

use crate::{paths, setup};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The studies behind the README's findings, by name: the study file and the `moram demo-data`
/// sequence it runs on (a real model, SmolLM2 by default, and the assets; model and data paths
/// are filled in).
const STUDIES: [(&str, &str, &str, usize); 3] = [
    ("demo", "configs/study/demo.toml", "demo", 64),
    ("formats", "configs/study/formats.toml", "formats", 64),
    ("paper-budget", "configs/study/paper-budget.toml", "demo", 240),
];

/// Arguments of `cargo xtask study`.
#[derive(clap::Args)]
pub struct StudyArgs {
    /// `demo` (the demo's sequence, default), `formats` (four formats of the BBC topic question),
    /// `paper-budget` (the paper's settings on the demo's data; hours on a CPU), `cl-benchmark`
    /// and `cl-benchmark-paper` (the standard CL benchmark, orders 1-3; needs `--data-dir`), or a
    /// study file of your own (its paths as given).
    #[arg(long, default_value = "demo")]
    study: String,
    /// Output folder (default: runs/study-<name>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start no new run after this many minutes; the same command continues later.
    #[arg(long)]
    max_minutes: Option<f64>,
    /// libtorch threads per run (default: libtorch's choice; with --jobs, cores / jobs).
    #[arg(long)]
    threads: Option<u32>,
    /// Train this many runs at once as worker processes (`moram study --jobs`; default: one run
    /// at a time, as the README's studies ran).
    #[arg(long)]
    jobs: Option<usize>,
    /// Config overrides for every run (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The real model of the named studies: `smollm2-135m` (default, the README's findings) or
    /// `gemma3-270m`.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    /// Study these methods instead of the study file's (comma-separated config names; its
    /// baseline must stay).
    #[arg(long, value_name = "METHOD,..")]
    methods: Option<String>,
    /// Study these seeds instead of the study file's (`1-8`, `4,5,6`). Finished runs in the output
    /// folder are skipped: `--seeds 1-8` after a 3-seed study runs seeds 4-8 and reports all eight.
    #[arg(long, value_name = "SEEDS")]
    seeds: Option<String>,
    /// Use the dev-profile `moram` (tests, quick looks).
    #[arg(long)]
    debug: bool,
    /// The data of a study whose data is not shipped (`cl-benchmark`, `cl-benchmark-paper`): a
    /// folder with `dbpedia/`, `amazon/`, `yahoo/` and `agnews/` of TRACE's LLM-CL-Benchmark_500
    /// (in the official MoRAM repository, `TRACE/data/LLM-CL-Benchmark/LLM-CL-Benchmark_500/`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The studies on data that is not shipped (the user's copy, `--data-dir`): name, study file.
const EXTERNAL: [(&str, &str); 2] = [
    ("cl-benchmark", "configs/study/cl-benchmark.toml"),
    ("cl-benchmark-paper", "configs/study/cl-benchmark-paper.toml"),
];

/// The task folders the standard CL benchmark studies read.
const CL_TASKS: [&str; 4] = ["dbpedia", "amazon", "yahoo", "agnews"];

/// Runs (or continues) the study.
pub fn run(args: StudyArgs) -> Result<()> {
    let root = paths::workspace_root();
    let bin = paths::build_moram(args.debug)?;
    let mut sets = Vec::new();
    let mut model = None;
    let study = match STUDIES.iter().find(|(name, ..)| *name == args.study) {
        Some((name, file, sequence, train)) => {
            setup::install_demo_assets()?;
            if args.model != "smollm2-135m" {
                setup::install_assets()?;
            }
            let assets = setup::assets_dir()?;
            let data = root.join("data/cache").join(format!("study-{name}"));
            if !data.join(".complete").exists() {
                let mut cmd = std::process::Command::new(&bin);
                cmd.args(["demo-data", "--sequence", sequence, "--assets"]).arg(&assets).arg("--out").arg(&data);
                // The demo's draw (64 evaluation examples, 32 article words, seed 42).
                cmd.args(["--train", &train.to_string(), "--eval", "64", "--words", "32", "--seed", "42"]);
                paths::run_checked(&mut cmd).with_context(|| format!("writing the {sequence} sequence"))?;
                std::fs::write(data.join(".complete"), "")?;
            }
            // `moram study --model` resolves the model's file and target layers (one table, in
            // moram-cli's demo module).
            model = Some((args.model.clone(), assets));
            sets.push(format!("data.dir=\"{}\"", data.display()));
            root.join(file)
        }
        None if EXTERNAL.iter().any(|(n, _)| *n == args.study) => {
            let dir = args.data_dir.clone().with_context(|| {
                format!(
                    "--study {} needs --data-dir DIR: the four tasks of TRACE's LLM-CL-Benchmark_500 ({}), from \
                     the official MoRAM repository (TRACE/data/LLM-CL-Benchmark/LLM-CL-Benchmark_500/); see \
                     benchmarks/results/study-cl-benchmark/README.md",
                    args.study,
                    CL_TASKS.join(", ")
                )
            })?;
            let missing: Vec<&str> =
                CL_TASKS.iter().copied().filter(|t| !dir.join(t).join("train.json").exists()).collect();
            if !missing.is_empty() {
                bail!(
                    "{}: no {}/train.json (expected the LLM-CL-Benchmark_500 task folders)",
                    dir.display(),
                    missing.join("/train.json, no ")
                );
            }
            setup::install_demo_assets()?;
            model = Some((args.model.clone(), setup::assets_dir()?));
            sets.push(format!("data.dir=\"{}\"", std::path::absolute(&dir)?.display()));
            let file = EXTERNAL.iter().find(|(n, _)| *n == args.study).map(|(_, f)| *f).unwrap_or_default();
            root.join(file)
        }
        None if args.study.ends_with(".toml") => PathBuf::from(&args.study),
        None => {
            let names: Vec<&str> = STUDIES.iter().map(|(n, ..)| *n).chain(EXTERNAL.iter().map(|(n, _)| *n)).collect();
            bail!("--study must be {} or a study file (.toml), found `{}`", names.join(", "), args.study)
        }
    };
    sets.extend(args.set);
    let mut cmd = std::process::Command::new(&bin);
    if let Some(t) = args.threads {
        cmd.arg("--threads").arg(t.to_string());
    }
    cmd.arg("study").arg(&study);
    if let Some((name, assets)) = &model {
        cmd.arg("--model").arg(name).arg("--assets").arg(assets);
    }
    if let Some(out) = &args.out {
        cmd.arg("--out").arg(out);
    }
    if let Some(m) = args.max_minutes {
        cmd.arg("--max-minutes").arg(m.to_string());
    }
    if let Some(n) = args.jobs {
        cmd.arg("--jobs").arg(n.to_string());
    }
    if let Some(m) = &args.methods {
        cmd.arg("--methods").arg(m);
    }
    if let Some(seeds) = &args.seeds {
        cmd.arg("--seeds").arg(seeds);
    }
    for s in &sets {
        cmd.arg("--set").arg(s);
    }
    cmd.current_dir(&root);
    paths::run_checked(&mut cmd)
}
