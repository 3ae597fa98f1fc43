//! The error type of moram-models.

use std::path::PathBuf;

/// Result alias used throughout moram-models.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while loading or adapting a model, naming the file, key or pattern.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A checkpoint does not match what the model expects. Every problem is listed at once.
    #[error("{}: checkpoint does not match the model:{}", path.display(), render_mismatch(missing, unexpected, shapes))]
    Mismatch {
        /// The checkpoint (file, folder or index).
        path: PathBuf,
        /// Keys the model needs that the checkpoint lacks.
        missing: Vec<String>,
        /// Keys in the checkpoint the model does not use.
        unexpected: Vec<String>,
        /// `(key, expected shape, found shape)` for tensors of the wrong shape.
        shapes: Vec<(String, Vec<i64>, Vec<i64>)>,
    },
    /// A single tensor is absent.
    #[error("{}: missing tensor `{key}`", path.display())]
    MissingKey {
        /// The checkpoint.
        path: PathBuf,
        /// The absent key.
        key: String,
    },
    /// A tensor has the wrong shape.
    #[error("{}: tensor `{key}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// The expected shape.
        expected: Vec<i64>,
        /// The shape in the file.
        found: Vec<i64>,
    },
    /// A tensor has a dtype moram does not load.
    #[error("{}: tensor `{key}` has dtype {dtype}, expected F32, F16 or BF16", path.display())]
    Dtype {
        /// The checkpoint.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// The dtype in the file.
        dtype: String,
    },
    /// A file is not a valid checkpoint (truncated, corrupt, bad index).
    #[error("{}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model input (pixels, token ids, prompts) has the wrong shape, dtype or values.
    #[error("invalid input: {0}")]
    Input(String),
    /// An adapter target pattern is invalid or matches nothing.
    #[error("adapter targets: {0}")]
    Target(String),
    /// An error from moram-core.
    #[error(transparent)]
    Core(#[from] moram_core::Error),
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

fn render_mismatch(missing: &[String], unexpected: &[String], shapes: &[(String, Vec<i64>, Vec<i64>)]) -> String {
    let mut s = String::new();
    let list = |title: &str, items: Vec<String>, s: &mut String| {
        if !items.is_empty() {
            s.push_str(&format!("\n  {title} ({}):", items.len()));
            for item in items.iter().take(20) {
                s.push_str(&format!("\n    {item}"));
            }
            if items.len() > 20 {
                s.push_str(&format!("\n    ... and {} more", items.len() - 20));
            }
        }
    };
    list("missing keys", missing.to_vec(), &mut s);
    list("unexpected keys", unexpected.to_vec(), &mut s);
    list("wrong shapes", shapes.iter().map(|(k, e, f)| format!("{k}: expected {e:?}, found {f:?}")).collect(), &mut s);
    s
}
