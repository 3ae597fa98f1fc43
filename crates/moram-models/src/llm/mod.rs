//! Decoder LLMs: GGUF checkpoints (in progress).

pub mod gguf;
pub mod tokenizer;

pub use gguf::{GgmlType, GgufFile, Value};
pub use tokenizer::LlmTokenizer;
