//! Where a run config's files are: relative `model.path` and `data.dir` are taken against the
//! config file's folder, and a run folder stores them relative to itself when they sit beside it.

use super::RunConfig;
use std::path::{Path, PathBuf};

impl RunConfig {
    /// The config with `model.path` and `data.dir` absolute: relative ones are taken against `base`
    /// (itself made absolute against the working directory), then `.` and `..` are resolved
    /// lexically. Two configs naming the same files this way compare equal.
    pub fn with_paths_against(mut self, base: &Path) -> Self {
        if let Some(m) = self.model.as_mut() {
            m.path = absolute(&resolve(base, &m.path));
        }
        if let Some(d) = self.data.as_mut() {
            d.dir = absolute(&resolve(base, &d.dir));
        }
        self
    }

    /// The config as a run folder `run` stores it: paths inside the folder's parent (e.g. the
    /// demo's `runs/demo/data` next to `runs/demo/moram`) relative to `run`, so the folders can move
    /// together; others absolute. Either way the stored config works from any directory
    /// ([`crate::checkpoint::read_config`] resolves against `run`).
    pub fn with_paths_for_run(self, run: &Path) -> Self {
        let run = absolute(run);
        let mut c = self.with_paths_against(Path::new("."));
        let near = |p: &Path| -> PathBuf {
            match run.parent() {
                Some(parent) if p.starts_with(parent) => {
                    let up = run.strip_prefix(parent).map(|r| r.components().count()).unwrap_or(0);
                    let mut rel: PathBuf = std::iter::repeat_n("..", up).collect();
                    rel.push(p.strip_prefix(parent).unwrap_or(p));
                    rel
                }
                _ => p.to_path_buf(),
            }
        };
        if let Some(m) = c.model.as_mut() {
            m.path = near(&m.path);
        }
        if let Some(d) = c.data.as_mut() {
            d.dir = near(&d.dir);
        }
        c
    }
}

/// `p` made absolute against the working directory, `.` and `..` resolved lexically (the file
/// need not exist).
fn absolute(p: &Path) -> PathBuf {
    let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
