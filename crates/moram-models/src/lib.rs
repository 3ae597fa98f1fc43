//! # moram-models
//!
//! Model code that injects [`moram_core::MoramLinear`] into pretrained networks.
//!
//! **Available now** (shared by every model):
//! - [`weights`]: memory-mapped safetensors checkpoints (single file or Hugging Face shards),
//!   loaded tensor by tensor with shape checks and one strict report of missing, unexpected and
//!   mis-shaped keys;
//! - [`target`]: which linear layers get atoms (encoders, modules with aliases and shorthands
//!   such as `qkvoinout`, layer subsets), strict: a pattern that matches nothing is an error.
//!
//! **Not yet:** the CLIP (vision and text towers, HF and OpenAI/open_clip layouts) and decoder-LLM
//! (LLaMA-2/3.x, Gemma; HF and GGUF) model code. Until then, use `moram-core` directly on your own
//! linear layers.

pub mod clip;
pub mod error;
pub mod linear;
pub mod target;
pub mod weights;

pub use error::{Error, Result};
pub use linear::AdaptableLinear;
pub use target::{LinearSite, ModuleNames, TargetSpec};
pub use weights::WeightSource;
