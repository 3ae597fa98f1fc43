//! Variants of the method that are not in the paper (`docs/method.md`), each in its own file.
//!
//! - [`task_gate`]: sequence-level task recognition that decides which tasks' atoms a sequence
//!   may use (task-gated MoRAM).

pub mod task_gate;

pub use task_gate::{pooled_features, TaskGate};
