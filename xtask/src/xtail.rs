//! `cargo xtask xtail`: X-TAIL (protocol 3) on a local CLIP checkpoint and a local copy of the ten
//! datasets; prints Transfer / Average / Last next to the paper's.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// MoRAM in the paper: Transfer, Average, Last for order 1 (Table 1) and order 2 (Table 9).
const PAPER: [(f64, f64, f64); 2] = [(63.3, 72.7, 80.9), (59.5, 69.3, 80.7)];

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
    /// An extra custom domain appended to the sequence (repeatable): a folder of class folders, or
    /// IDX files with `classes.txt` (e.g. ~/.cache/moram/assets/fashion-mnist from `setup`).
    #[arg(long, value_name = "DIR")]
    extra: Vec<PathBuf>,
    /// Use the dev-profile `moram` (target/debug) instead of building a release one (tests, quick looks).
    #[arg(long)]
    debug: bool,
    /// Config overrides passed to `moram train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Order 1 (Table 1) and order 2 (Table 9).
const ORDERS: [[&str; 10]; 2] = [
    [
        "aircraft",
        "caltech101",
        "dtd",
        "eurosat",
        "oxford_flowers",
        "food101",
        "mnist",
        "oxford_pets",
        "stanford_cars",
        "sun397",
    ],
    [
        "stanford_cars",
        "aircraft",
        "oxford_pets",
        "food101",
        "sun397",
        "mnist",
        "oxford_flowers",
        "dtd",
        "caltech101",
        "eurosat",
    ],
];

/// The `--set` overrides for the data: the order's datasets plus the extra domains (absolute
/// paths), and the shot cache under the repository's `data/cache/xtail`.
pub fn data_overrides(order: u8, extra: &[PathBuf], root: &std::path::Path) -> Result<Vec<String>> {
    let mut tasks: Vec<String> =
        ORDERS[(order as usize).saturating_sub(1).min(1)].iter().map(|s| s.to_string()).collect();
    for e in extra {
        let abs = std::fs::canonicalize(e).with_context(|| format!("--extra {}: not found", e.display()))?;
        anyhow::ensure!(abs.is_dir(), "--extra {}: not a folder", e.display());
        tasks.push(abs.display().to_string());
    }
    Ok(vec![
        format!("data.tasks={}", serde_json::to_string(&tasks)?),
        format!("data.shot_cache={:?}", root.join("data/cache/xtail").display().to_string()),
    ])
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
    let bin = crate::paths::build_moram(args.debug)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("train").arg("--config").arg(&config).arg("--out").arg(&out);
    cmd.arg("--set").arg(format!("model.path={:?}", args.model.display().to_string()));
    cmd.arg("--set").arg(format!("data.dir={:?}", args.data_dir.display().to_string()));
    for s in data_overrides(args.order, &args.extra, &root)? {
        cmd.arg("--set").arg(s);
    }
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
    let (t, a, l) = PAPER[(args.order as usize).saturating_sub(1).min(1)];
    let table = if args.order == 1 { "Table 1" } else { "Table 9" };
    println!("| MoRAM, paper {table} | {t:.1} | {a:.1} | {l:.1} |");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_domains_follow_the_order_and_shots_are_cached_in_the_repository() {
        let root = std::path::Path::new("/repo");
        let tmp = std::env::temp_dir();
        let sets = data_overrides(2, std::slice::from_ref(&tmp), root).unwrap();
        let tasks: Vec<String> = serde_json::from_str(sets[0].strip_prefix("data.tasks=").unwrap()).unwrap();
        assert_eq!(tasks.len(), 11);
        assert_eq!(tasks[0], "stanford_cars");
        assert_eq!(tasks[10], std::fs::canonicalize(&tmp).unwrap().display().to_string());
        assert_eq!(sets[1], "data.shot_cache=\"/repo/data/cache/xtail\"");
        assert!(data_overrides(1, &[PathBuf::from("/no/such/dir")], root)
            .unwrap_err()
            .to_string()
            .contains("--extra /no/such/dir"));
    }
}
