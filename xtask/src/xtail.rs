//! `cargo xtask xtail`: X-TAIL (protocol 3) on a local CLIP checkpoint and a local copy of the ten
//! datasets; prints Transfer / Average / Last next to the paper's.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// Paper Table 1 (order 1), MoRAM: Transfer, Average, Last.
const PAPER_ORDER_1: (f64, f64, f64) = (63.3, 72.7, 80.9);

/// Arguments of `cargo xtask xtail`.
#[derive(clap::Args)]
pub struct XtailArgs {
    /// The datasets' root (protocol 3.2 layout).
    #[arg(long)]
    data_dir: PathBuf,
    /// A CLIP ViT-B/16 checkpoint folder (config.json + safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Task order: 1 (paper Table 1) or 2 (Table 9).
    #[arg(long, default_value_t = 1)]
    order: u8,
    /// `paper` or `code` settings (configs/xtail/order<N>-<profile>.toml), unless --config.
    #[arg(long, default_value = "paper")]
    profile: String,
    /// Another run config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output folder (default: runs/xtail-order<N>-<profile>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Config overrides passed to `moram train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Runs the sequence (the data check inside `moram train` lists every unusable dataset at once).
pub fn run(args: XtailArgs) -> Result<()> {
    if ![1, 2].contains(&args.order) || !["paper", "code"].contains(&args.profile.as_str()) {
        bail!("--order must be 1 or 2 and --profile `paper` or `code`");
    }
    if !args.model.join("config.json").exists() {
        bail!(
            "{} has no config.json: expected a CLIP checkpoint folder (Hugging Face or OpenAI layout)",
            args.model.display()
        );
    }
    if !args.data_dir.is_dir() {
        bail!("{} is not a folder: expected the X-TAIL datasets' root (see protocol 3.2)", args.data_dir.display());
    }
    let root = crate::paths::workspace_root();
    let config =
        args.config.unwrap_or_else(|| root.join(format!("configs/xtail/order{}-{}.toml", args.order, args.profile)));
    let out = args.out.unwrap_or_else(|| root.join(format!("runs/xtail-order{}-{}", args.order, args.profile)));
    crate::paths::run_checked(crate::paths::cargo().args(["build", "--release", "-p", "moram-cli"]))?;
    let mut cmd = std::process::Command::new(root.join("target/release/moram"));
    cmd.arg("train").arg("--config").arg(&config).arg("--out").arg(&out);
    cmd.arg("--set").arg(format!("model.path={:?}", args.model.display().to_string()));
    cmd.arg("--set").arg(format!("data.dir={:?}", args.data_dir.display().to_string()));
    for s in &args.set {
        cmd.arg("--set").arg(s);
    }
    crate::paths::run_checked(&mut cmd)?;
    let path = out.join("results.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)?;
    let s = &v["summary"]["xtail_official"];
    let f = |k: &str| s[k].as_f64().map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    println!("| X-TAIL order {} | Transfer | Average | Last |\n|---|---:|---:|---:|", args.order);
    println!("| moram (this run) | {} | {} | {} |", f("transfer"), f("average"), f("last"));
    if args.order == 1 {
        let (t, a, l) = PAPER_ORDER_1;
        println!("| MoRAM, paper Table 1 | {t:.1} | {a:.1} | {l:.1} |");
    }
    Ok(())
}
