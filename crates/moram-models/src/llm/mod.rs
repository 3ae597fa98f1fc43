//! Decoder LLMs: GGUF checkpoints (in progress).

pub mod gguf;

pub use gguf::{GgmlType, GgufFile, Value};
