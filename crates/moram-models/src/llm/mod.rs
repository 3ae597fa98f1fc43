//! Decoder LLMs: GGUF and Hugging Face checkpoints, tokenizers and LLaMA / Gemma decoders
//! (presets and the LLM benchmark are not there yet).

pub mod config;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod tokenizer;

pub use config::{Arch, Llama3Scaling, LlmConfig};
pub use generate::GenerationConfig;
pub use gguf::{GgmlType, GgufFile, Value};
pub use model::{CausalLm, KvCache, LLAMA_MODULES};
pub use tokenizer::LlmTokenizer;
