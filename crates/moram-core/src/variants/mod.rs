//! Variants of the method that are not in the paper (`docs/method.md`), each in its own file.
//!
//! - [`task_gate`]: sequence-level task recognition that decides which tasks' atoms a sequence
//!   may use (task-gated MoRAM);
//! - [`subspace`]: protected input subspaces (orthogonal keys, novel routing) and [`novelty`]:
//!   novelty-gated routing on top of them;
//! - [`scores`]: normalised scores (centred, standardised);
//! - [`penalty`]: O-LoRA's regularisers.
//!
//! Each extends [`crate::AtomBank`] with its own `impl` block; the bank's routing calls them.

pub mod novelty;
pub mod penalty;
pub mod scores;
pub mod subspace;
pub mod task_gate;

pub use task_gate::{pooled_features, TaskGate};
