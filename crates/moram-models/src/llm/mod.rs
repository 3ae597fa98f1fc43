//! Decoder LLMs: GGUF and Hugging Face checkpoints, tokenizers and the LLaMA architecture
//! (in progress: Gemma, sampling, batched generation and training losses are not there yet).

pub mod config;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod tokenizer;

pub use config::{Llama3Scaling, LlmConfig};
pub use generate::GenerationConfig;
pub use gguf::{GgmlType, GgufFile, Value};
pub use model::{KvCache, LlamaModel, LLAMA_MODULES};
pub use tokenizer::LlmTokenizer;
