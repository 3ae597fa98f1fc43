//! CLIP: configuration, checkpoint layouts and the model with MoRAM injection.

pub mod config;
pub mod loader;
pub mod model;

pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use loader::{expected_keys, Layout};
pub use model::{normalize, ClipModel, CLIP_MODULES};
