//! Task data: TRACE-style prompt/answer JSON ([`trace`]) and in-memory image classification tasks
//! ([`ImageTask`]).

pub mod trace;

use crate::error::{Error, Result};
use tch::Tensor;

/// One image-classification domain (an X-TAIL task): class names, a prompt template, and
/// preprocessed images with labels.
#[derive(Debug)]
pub struct ImageTask {
    /// Domain name.
    pub name: String,
    /// Class names, label order.
    pub classnames: Vec<String>,
    /// Prompt template with one `{}` for the class name (X-TAIL: the dataset's template 0).
    pub template: String,
    /// Training images `(N, 3, H, W)` f32, preprocessed.
    pub train_images: Tensor,
    /// Training labels in `0..classnames.len()`.
    pub train_labels: Vec<i64>,
    /// Test images `(M, 3, H, W)`.
    pub test_images: Tensor,
    /// Test labels.
    pub test_labels: Vec<i64>,
}

impl ImageTask {
    /// The class prompts.
    pub fn prompts(&self) -> Vec<String> {
        self.classnames.iter().map(|c| self.template.replacen("{}", c, 1)).collect()
    }

    /// Checks shapes, counts and label ranges; errors name the task and what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::task(&self.name, m));
        if self.classnames.is_empty() {
            return bad("has no class".into());
        }
        if !self.template.contains("{}") {
            return bad(format!("template `{}` has no `{{}}` for the class name", self.template));
        }
        for (split, images, labels) in
            [("train", &self.train_images, &self.train_labels), ("test", &self.test_images, &self.test_labels)]
        {
            let size = images.size();
            if size.len() != 4 || size[1] != 3 {
                return bad(format!("{split} images must be (N, 3, H, W), found {size:?}"));
            }
            if size[0] as usize != labels.len() {
                return bad(format!("{split}: {} images but {} labels", size[0], labels.len()));
            }
            if labels.is_empty() {
                return bad(format!("the {split} split is empty"));
            }
            if let Some((i, l)) =
                labels.iter().enumerate().find(|(_, l)| **l < 0 || **l as usize >= self.classnames.len())
            {
                return bad(format!("{split} label {l} at index {i} is outside 0..{}", self.classnames.len()));
            }
        }
        Ok(())
    }
}

pub(crate) fn data_error(path: &std::path::Path, entry: Option<String>, message: impl Into<String>) -> Error {
    Error::Data { path: path.into(), entry, message: message.into() }
}
