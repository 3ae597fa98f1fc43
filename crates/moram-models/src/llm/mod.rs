//! Decoder LLMs: GGUF and Hugging Face checkpoints, tokenizers and LLaMA / Gemma decoders
//! (presets and the LLM benchmark are not there yet).

pub mod attention;
pub mod config;
pub mod generate;
pub mod gguf;
pub mod layout;
pub mod llama;
pub mod mlp;
pub mod model;
pub mod norm;
pub mod quants;
pub mod rope;
pub mod tokenizer;
mod vars;

pub use config::{Activation, Arch, LlmConfig};
pub use generate::{GenerationConfig, PrefixMemo};
pub use gguf::{Array, GgmlType, GgufFile, Value};
pub use model::{CausalLm, FrozenPrefix, KvCache, LLAMA_MODULES};
pub use rope::{Llama3Scaling, Rope, RopeScaling};
pub use tokenizer::LlmTokenizer;
