//! # moram-cl
//!
//! The continual-learning engine: task sequences, per-task optimizers over the current atoms,
//! evaluation on every task after every task, OP/BWT/Transfer metrics, pruning, checkpoints and
//! resume.
//!
//! **Status:** not implemented yet. This crate currently exports nothing but this notice; the
//! engine issue fills it. `moram-core` already provides the per-layer pieces (atom banks,
//! freezing, statistics, pruning, adapter files).

pub use moram_core;
