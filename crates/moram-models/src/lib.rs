//! # moram-models
//!
//! Model code that injects [`moram_core::MoramLinear`] into pretrained networks.
//!
//! - [`clip`]: CLIP (Radford et al., 2021): configs and presets, both checkpoint layouts
//!   (Hugging Face, OpenAI/open_clip), the tokenizer, pixel-exact preprocessing, MoRAM injection,
//!   zero-shot classification and activation capture;
//! - [`weights`]: memory-mapped safetensors checkpoints (single file or Hugging Face shards),
//!   loaded tensor by tensor with shape checks and one strict report of missing, unexpected and
//!   mis-shaped keys;
//! - [`target`]: which linear layers get atoms (encoders, modules with aliases and shorthands
//!   such as `qkvoinout`, layer subsets), strict: a pattern that matches nothing is an error;
//! - [`linear`]: a frozen linear layer that injection turns into a `MoramLinear`.
//!
//! - [`llm`]: the GGUF reader (F32/F16/BF16, Q4_0 ... Q8_0 and the K-quants, checked against the
//!   `gguf` Python package), LLM tokenizers (GGUF metadata or `tokenizer.json`), and LLaMA (GQA,
//!   llama3 RoPE), Gemma, Gemma 2, Gemma 3, Qwen2, Qwen3 and Mistral decoders from Hugging Face
//!   or GGUF checkpoints with presets, a KV cache, batched generation, the causal-LM loss and
//!   MoRAM injection.

mod bytes;
pub mod clip;
pub mod error;
pub mod linear;
pub mod llm;
pub mod target;
mod vars;
pub mod weights;

pub use error::{Error, Result};
pub use linear::AdaptableLinear;
pub use target::{LinearSite, ModuleNames, TargetSpec};
pub use weights::WeightSource;
