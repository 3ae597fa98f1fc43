//! The error type of moram-core.

use std::path::PathBuf;

/// Result alias used throughout moram-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in moram-core, with enough context to name the culprit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid MoRAM config: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, as spelled in TOML/JSON.
        field: &'static str,
        /// What was expected, with the value found.
        reason: String,
    },
    /// A config file or string could not be parsed.
    #[error("cannot parse MoRAM config{}: {reason}", origin.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    ConfigParse {
        /// The file, when the config came from one.
        origin: Option<PathBuf>,
        /// The parser's message (it names the line/key).
        reason: String,
    },
    /// An input tensor has the wrong shape.
    #[error("{what}: expected shape {expected}, found {found:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The expected shape, in words (e.g. `[.., 768]`).
        expected: String,
        /// The shape found.
        found: Vec<i64>,
    },
    /// A tensor has the wrong element type.
    #[error("{what}: expected dtype {expected}, found {found:?}")]
    Dtype {
        /// Which tensor.
        what: String,
        /// The expected dtype(s).
        expected: String,
        /// The dtype found.
        found: tch::Kind,
    },
    /// An operation is not valid in the bank's current state.
    #[error("{0}")]
    State(String),
    /// A required tensor is absent from an adapter file.
    #[error("{path}: missing tensor `{key}`")]
    MissingKey {
        /// The adapter file.
        path: PathBuf,
        /// The absent key.
        key: String,
    },
    /// A tensor in an adapter file has the wrong shape or dtype.
    #[error("{path}: tensor `{key}` expected {expected}, found {found}")]
    BadTensor {
        /// The adapter file.
        path: PathBuf,
        /// The tensor's key.
        key: String,
        /// What was expected (shape and dtype).
        expected: String,
        /// What the file holds.
        found: String,
    },
    /// An adapter file is truncated, corrupt or not a MoRAM adapter.
    #[error("{path}: not a valid MoRAM adapter file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An error reported by libtorch.
    #[error(transparent)]
    Tch(#[from] tch::TchError),
}

impl Error {
    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { field, reason: reason.into() }
    }
}
