//! Where things live: the workspace root, the download cache outside git, and child processes.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The workspace root (parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Download cache kept outside the repository ([`moram_assets::cache_dir`]: `$MORAM_CACHE`, else
/// `$XDG_CACHE_HOME/moram`, else `~/.cache/moram`).
pub fn cache_dir() -> Result<PathBuf> {
    Ok(moram_assets::cache_dir()?)
}

/// `cargo` as invoked by the user (respects `$CARGO`), run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs a command with inherited stdio and fails with its rendering when it exits non-zero.
pub fn run_checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("could not start {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

/// Builds the `moram` binary (release, or the dev profile with `debug`) and returns its path.
pub fn build_moram(debug: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "moram-cli"]);
    if !debug {
        cmd.arg("--release");
    }
    run_checked(&mut cmd)?;
    Ok(workspace_root().join("target").join(if debug { "debug" } else { "release" }).join("moram"))
}
