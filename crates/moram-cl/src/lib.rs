//! # moram-cl
//!
//! The continual-learning engine: learn task after task, evaluate every task after every task,
//! never lose finished work.
//!
//! - [`Learner`]: what is learned (a model with MoRAM layers plus its task data and loss).
//!   [`learners::clip::ClipLearner`] runs X-TAIL on CLIP; [`learners::llm::LlmLearner`] runs
//!   TRACE-style instruction tasks on decoder LLMs. Your own model implements the trait.
//! - [`runner::run`] / [`runner::resume`]: per task, fresh atoms, a fresh Adam/AdamW over exactly
//!   them, schedule, gradient accumulation and clipping, optional pruning, evaluation of every task,
//!   atomic checkpoints ([`checkpoint`]) and reports ([`report`]).
//! - [`metrics`]: the accuracy-matrix summaries (X-TAIL Transfer/Average/Last, TRACE OP and both
//!   BWT conventions, FWT, forgetting, order robustness) and the TRACE task metrics.
//! - [`RunConfig`]: one TOML file per run; the method is one line.

pub mod analysis;
pub mod base_model;
pub mod batches;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
pub mod learner;
pub mod learners;
pub mod methods;
pub mod metrics;
pub mod optim;
pub mod plan;
pub mod plasticity;
pub mod report;
pub mod runner;
pub mod schedule;
pub mod study;
#[cfg(feature = "test-support")]
pub mod synthetic;

pub use checkpoint::RunState;
pub use config::RunConfig;
pub use error::{Error, Result};
pub use learner::Learner;
pub use methods::Method;
pub use runner::{resume, run, RunOptions};
