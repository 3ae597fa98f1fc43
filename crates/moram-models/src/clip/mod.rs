//! CLIP: configuration, checkpoint layouts and the model with MoRAM injection.

pub mod config;
pub mod loader;
pub mod model;
pub mod tokenizer;

pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use loader::{expected_keys, Layout};
pub use model::{normalize, ClipModel, CLIP_MODULES};
pub use tokenizer::{clean_text, ClipTokenizer};
