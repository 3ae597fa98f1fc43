//! CLIP: configuration, checkpoint layouts and the model with MoRAM injection.

pub mod config;
pub mod loader;
pub mod model;
pub mod preprocess;
pub mod tokenizer;

pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use loader::{expected_keys, Layout};
pub use model::{normalize, ClipModel, CLIP_MODULES};
pub use preprocess::{load_eval_batch, load_train_batch, Rgb8, CLIP_MEAN, CLIP_STD};
pub use tokenizer::{clean_text, ClipTokenizer};
