//! Decoder LLMs: GGUF and Hugging Face checkpoints, tokenizers, and the LLaMA-family decoders
//! (LLaMA, Gemma, Gemma 2, Gemma 3, Qwen2, Qwen3, Mistral): a layout table per family (`layout`), shared modules
//! (`attention`, `mlp`, `norm`, `rope`) composed into a block (`llama`), the model shell with
//! cache, generation and loss (`model`, `generate`), chat templates (`chat`), training batches without padding (`packing`),
//! task-gated atoms (`gating`).

pub mod attention;
pub mod chat;
pub mod config;
pub mod families;
pub mod gating;
pub mod generate;
pub mod gguf;
mod gguf_config;
pub(crate) mod hf_config;
pub mod layout;
pub mod llama;
pub mod mlp;
pub mod model;
pub mod norm;
mod packing;
pub mod quants;
pub mod rope;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTokens};
pub use config::{Activation, Arch, LlmConfig};
pub use generate::{GenerationConfig, PrefixMemo};
pub use gguf::{Array, GgmlType, GgufFile, Value};
pub use model::{AnswerLogits, CausalLm, FrozenPrefix, KvCache, LLAMA_MODULES};
pub use rope::{Llama3Scaling, Rope, RopeScaling, YarnScaling};
pub use tokenizer::LlmTokenizer;
