//! # moram-models
//!
//! Model code that injects [`moram_core::MoramLinear`] into pretrained networks: CLIP (vision and
//! text towers, Hugging Face and OpenAI/open_clip checkpoints) and decoder LLMs (LLaMA-2,
//! LLaMA-3.x, Gemma; Hugging Face safetensors and GGUF).
//!
//! **Status:** not implemented yet. This crate currently exports nothing but this notice; the
//! CLIP and LLM issues fill it. Use `moram-core` directly to adapt your own linear layers.

pub use moram_core;
