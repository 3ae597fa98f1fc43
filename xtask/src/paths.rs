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
    build_binary("moram-cli", "moram", debug)
}

/// Builds binary `bin` of `package` and returns its path as cargo reports it (so a
/// `CARGO_TARGET_DIR`, `--target-dir` in a config or a build directory elsewhere is honoured).
pub fn build_binary(package: &str, bin: &str, debug: bool) -> Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", package, "--bin", bin, "--message-format=json-render-diagnostics"]);
    if !debug {
        cmd.arg("--release");
    }
    let shown = format!("{cmd:?}");
    let out =
        cmd.stderr(std::process::Stdio::inherit()).output().with_context(|| format!("could not start {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed with {}", out.status);
    }
    executable_in(&String::from_utf8_lossy(&out.stdout), bin)
        .with_context(|| format!("{shown} reported no executable named `{bin}`"))
}

/// The path of executable `bin` in cargo's JSON build messages (one object per line).
fn executable_in(messages: &str, bin: &str) -> Option<PathBuf> {
    messages
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_executable_comes_from_cargos_messages() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"moram_cl"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"name":"moram"},"executable":"/x/target-elsewhere/release/moram"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#
        );
        assert_eq!(super::executable_in(messages, "moram"), Some("/x/target-elsewhere/release/moram".into()));
        assert_eq!(super::executable_in(messages, "moram-bench"), None);
    }
}
