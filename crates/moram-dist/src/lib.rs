//! Data parallelism for moram on libtorch's own distributed engine, c10d (the engine under
//! `torch.distributed`): a C++ shim (`csrc/shim.cpp`) creates a `TCPStore` and a Gloo (CPU) or
//! NCCL (GPU, `nccl` feature) process group; [`Group`] offers the collectives the trainer needs.
//!
//! Workers are started by torchrun (`torchrun --nproc-per-node N --no-python moram train ...`) or
//! by [`launch::run_local`]; both set `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`
//! ([`DistEnv`]). One process (`WORLD_SIZE` unset or 1) never touches the shim.

pub mod env;
pub mod error;
mod ffi;
pub mod group;
pub mod launch;

pub use env::DistEnv;
pub use error::{Error, Result};
pub use group::{Backend, Group, ReduceOp};
