//! # moram-core
//!
//! Atom banks and routing math of MoRAM (Mixture of Rank-1 Associative Memory experts,
//! "Little By Little", ICML 2026) on tch/libtorch tensors. No model knowledge: model crates wrap
//! their linear layers in [`MoramLinear`].
//!
//! Where to find each concept:
//! - [`config`]: hyper-parameters, profiles, routing variants, compat flags;
//! - [`routing`]: Eqs. 4-8 as pure tensor functions (scores, top-k, softmax, gate, values);
//! - [`bank`]: the growing atom bank of one layer, task growth and freezing;
//! - [`linear`]: the adapted linear layer (frozen base + bank);
//! - [`stats`] and [`prune`]: activation statistics and post-pruning;
//! - [`state`]: adapter files (safetensors + metadata);
//! - [`runtime`]: process-level CPU allocator tuning for libtorch;
//! - [`variants`]: variants not in the paper (task-gated atoms).
//!
//! For one token `x`: `z = A x`; `s = z / ||z||` (Eq. 5); keep the top-k scores (Eq. 6);
//! `w = softmax(s / tau)` (Eq. 7); at inference `w_i = 0` where `s_i < delta` (Eq. 8);
//! output `W0 x + B (w * z)` (Eq. 4). Each new task appends `r` atoms and freezes the older ones.

pub mod bank;
pub mod config;
pub mod error;
pub mod linear;
pub mod prune;
pub mod routing;
pub mod runtime;
pub mod state;
pub mod stats;
pub mod variants;

pub use bank::{AtomBank, Routed};
pub use config::{
    CompatFlags, KeyInit, KeySubspace, MoramConfig, Penalty, Profile, Routing, ScoreInput, SubspaceMode,
    TaskGateConfig, ValuePath,
};
pub use error::{Error, Result};
pub use linear::{InputStatistics, MoramLinear};
pub use prune::{atoms_for_share, plan_pruning, PrunePlan, PruneScope};
pub use state::{save_adapter, save_adapter_with_gate, AdapterFile};
pub use stats::{ActivationStats, StatsMode};
pub use variants::TaskGate;
