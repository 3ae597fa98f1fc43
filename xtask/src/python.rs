//! Locating Python 3 and pip, with errors that say how to get them.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The system Python used for `pip download` (`$PYTHON` overrides `python3`).
pub fn system_python() -> Result<PathBuf> {
    let python = std::env::var_os("PYTHON").map(PathBuf::from).unwrap_or_else(|| "python3".into());
    check_python(&python)?;
    Ok(python)
}

/// Fails with a remedy unless `python` runs and has pip.
pub fn check_python(python: &Path) -> Result<()> {
    let runs = Command::new(python).arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !runs {
        bail!(
            "`{}` was not found or does not run.\n  remedy: install Python 3 with pip \
             (Debian/Ubuntu: `apt-get install -y python3 python3-pip python3-venv`) or point $PYTHON at one",
            python.display()
        );
    }
    require_pip(python)
}

/// Fails with a remedy when `python -m pip` is unavailable.
pub fn require_pip(python: &Path) -> Result<()> {
    let ok =
        Command::new(python).args(["-m", "pip", "--version"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        bail!(
            "`{} -m pip` is not available.\n  remedy: install pip (Debian/Ubuntu: `apt-get install -y python3-pip`)",
            python.display()
        );
    }
    Ok(())
}

/// The HTTP clients `moram serve` is tested with (`crates/moram-cli/tests/serve.rs`): the official
/// `openai` package, in a venv of its own (no PyTorch needed).
pub const CLIENT_REQUIREMENTS: [&str; 1] = ["openai==3.63.0"];

/// Environment variable naming that venv's Python for the tests.
pub const CLIENT_PYTHON_ENV: &str = "MORAM_CLIENT_PYTHON";

/// A virtual environment under the cache with the given pip requirements installed (idempotent:
/// a marker records what was installed).
pub fn venv_with(venv: &Path, requirements: &[&str]) -> Result<PathBuf> {
    let python = venv.join("bin").join("python");
    let marker = venv.join("moram-requirements.txt");
    let wanted = requirements.join("\n");
    if python.exists() && std::fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(python);
    }
    let system = system_python()?;
    if !python.exists() {
        eprintln!("creating Python virtual environment {}", venv.display());
        crate::paths::run_checked(Command::new(&system).args(["-m", "venv"]).arg(venv))
            .context("creating the virtual environment (Debian/Ubuntu need `apt-get install -y python3-venv`)")?;
    }
    let note = if wanted.contains("torch==") { " (PyTorch pulls several GB of CUDA wheels)" } else { "" };
    eprintln!("installing {} into {}{note}", wanted.replace('\n', " "), venv.display());
    crate::paths::run_checked(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(requirements))
        .context("pip install failed; is the PyPI registry reachable?")?;
    std::fs::write(&marker, wanted).with_context(|| format!("writing {}", marker.display()))?;
    Ok(python)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An executable `dir/python3` running the shell `script` (a stand-in interpreter for
    /// error-path tests).
    pub(crate) fn fake_python(dir: &Path, script: &str) -> Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir)?;
        let fake = dir.join("python3");
        std::fs::write(&fake, format!("#!/bin/sh\n{script}\n"))?;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
        Ok(fake)
    }

    #[test]
    fn a_missing_python_is_named_with_a_remedy() {
        let err = check_python(Path::new("/nonexistent/python3")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/python3") && err.contains("remedy: install Python 3"), "{err}");
    }

    #[test]
    fn a_python_without_pip_is_named_with_a_remedy() -> Result<()> {
        // A stand-in interpreter that answers --version but has no pip module.
        let dir = std::env::temp_dir().join(format!("moram-xtask-nopip-{}", std::process::id()));
        let fake = fake_python(&dir, "[ \"$1\" = --version ] && echo 'Python 3.11.0' && exit 0\nexit 1")?;
        let err = check_python(&fake).unwrap_err().to_string();
        assert!(err.contains("-m pip` is not available") && err.contains("python3-pip"), "{err}");
        std::fs::remove_dir_all(dir)?;
        Ok(())
    }
}
