//! Errors of process-group setup and collectives.

use std::path::PathBuf;

/// What went wrong in distributed setup or communication.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A launcher variable (`RANK`, `WORLD_SIZE`, `MASTER_PORT`, ...) is missing or malformed.
    #[error("environment variable {var}={value:?}: expected {expected}")]
    Env { var: String, value: String, expected: String },
    /// The rendezvous store could not be created or reached.
    #[error("rank {rank}/{world}: rendezvous store at {addr}: {message}")]
    Store { rank: usize, world: usize, addr: String, message: String },
    /// A collective failed (a peer died, hung past the timeout, or disagreed on shapes).
    #[error("rank {rank}/{world}: {op} failed{peers}: {message}")]
    Collective { rank: usize, world: usize, op: String, peers: String, message: String },
    /// Tensors handed to a collective do not fit it.
    #[error("{op}: {message}")]
    Tensor { op: String, message: String },
    /// Another rank reported a failure (non-finite loss, bad data) through a collective.
    #[error("rank {rank} stopped the run: {message}")]
    Peer { rank: usize, message: String },
    /// Starting or watching a local worker process failed.
    #[error("worker {rank}: {message}")]
    Worker { rank: usize, message: String },
    /// I/O on a file.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A libtorch error from tensor handling around a collective.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
