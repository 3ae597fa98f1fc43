//! Task data: TRACE-style prompt/answer JSON ([`trace`]), image classification tasks
//! ([`ImageTask`], in memory or as files read batch by batch) and the folder-per-class importer
//! ([`folders`]), and the demo's task sequences built from real data ([`demo`], [`wordnet`]).

pub mod demo;
pub mod folders;
pub mod idx;
pub mod trace;
pub mod wordnet;
pub mod xtail;

use crate::error::{Error, Result};
use std::path::PathBuf;
use tch::Tensor;

/// The images of one split.
#[derive(Debug)]
pub enum Images {
    /// Preprocessed pixels `(N, 3, H, W)` f32, already normalised.
    Tensor(Tensor),
    /// Grey images held as bytes (IDX sets): `items` index into `images`; preprocessed per batch.
    Grey {
        /// The decoded set.
        images: std::sync::Arc<idx::GreyImages>,
        /// Which images, in order.
        items: Vec<usize>,
        /// Side of the square model input.
        size: usize,
    },
    /// Image files, decoded and preprocessed per batch (CLIP's train or eval transform at `size`).
    Files {
        /// One file per example.
        paths: Vec<PathBuf>,
        /// Side of the square model input.
        size: usize,
    },
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Images::Tensor(t) => t.size().first().copied().unwrap_or(0) as usize,
            Images::Files { paths, .. } => paths.len(),
            Images::Grey { items, .. } => items.len(),
        }
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels `(B, 3, H, W)` of `indices`: the train transform seeded with `seed` when given
    /// (random resized crop), else the eval transform (resize + centre crop).
    pub fn batch(&self, indices: &[usize], seed: Option<u64>) -> Result<Tensor> {
        match self {
            Images::Tensor(t) => {
                let idx =
                    Tensor::from_slice(&indices.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(t.device());
                Ok(t.index_select(0, &idx))
            }
            Images::Files { paths, size } => {
                let chosen: Vec<PathBuf> = indices.iter().map(|&i| paths[i].clone()).collect();
                Ok(match seed {
                    Some(s) => moram_models::clip::load_train_batch(&chosen, *size, s)?,
                    None => moram_models::clip::load_eval_batch(&chosen, *size)?,
                })
            }
            Images::Grey { images, items, size } => {
                let rgb = |k: usize| Ok(images.rgb(items[indices[k]]));
                Ok(moram_models::clip::preprocess::preprocess_batch(indices.len(), *size, seed, rgb)?)
            }
        }
    }

    fn check_shape(&self) -> std::result::Result<(), String> {
        match self {
            Images::Tensor(t) => {
                let size = t.size();
                if size.len() != 4 || size[1] != 3 {
                    return Err(format!("images must be (N, 3, H, W), found {size:?}"));
                }
                Ok(())
            }
            Images::Files { paths, .. } => match paths.iter().find(|p| !p.is_file()) {
                Some(p) => Err(format!("missing image file {}", p.display())),
                None => Ok(()),
            },
            Images::Grey { images, items, .. } => {
                let n = images.pixels.len() / (images.height * images.width).max(1);
                match items.iter().find(|&&i| i >= n) {
                    Some(i) => Err(format!("image index {i} is outside the {n} images")),
                    None => Ok(()),
                }
            }
        }
    }
}

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
    /// Training images.
    pub train_images: Images,
    /// Training labels in `0..classnames.len()`.
    pub train_labels: Vec<i64>,
    /// Test images.
    pub test_images: Images,
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
            if let Err(m) = images.check_shape() {
                return bad(format!("{split}: {m}"));
            }
            if images.len() != labels.len() {
                return bad(format!("{split}: {} images but {} labels", images.len(), labels.len()));
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

/// `shots` draws from `items`: without replacement when there are enough, else with replacement
/// (X-TAIL's `random.sample` / `random.choices` rule, shared by every image-set reader).
pub(crate) fn draw_shots<T: Clone>(items: &[T], shots: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Vec<T> {
    use rand::seq::IndexedRandom;
    if items.len() >= shots {
        items.choose_multiple(rng, shots).cloned().collect()
    } else {
        (0..shots).filter_map(|_| items.choose(rng).cloned()).collect()
    }
}

/// `Ok` when `problems` is empty, else one error on `dir` listing every problem.
pub(crate) fn all_problems(dir: &std::path::Path, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(data_error(dir, None, format!("{} problem(s):\n  {}", problems.len(), problems.join("\n  "))))
}

pub(crate) fn data_error(path: &std::path::Path, entry: Option<String>, message: impl Into<String>) -> Error {
    Error::Data { path: path.into(), entry, message: message.into() }
}
