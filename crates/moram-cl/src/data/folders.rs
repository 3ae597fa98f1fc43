//! Folder-per-class image sets as [`ImageTask`]s (custom X-TAIL domains).
//!
//! Layouts: `<dir>/train/<class>/*` and `<dir>/test/<class>/*` (splits as given), or
//! `<dir>/<class>/*` (split here, seeded). Class names are the folder names with `_` read as a
//! space, labels in sorted order. Training takes `shots` images per class as X-TAIL does: drawn
//! without replacement, or with replacement when a class has fewer.

use super::{data_error, draw_shots, ImageTask, Images};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// How a folder becomes a task.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    /// Training images per class (X-TAIL: 16).
    pub shots: usize,
    /// Test images per class kept (all when `None`).
    pub test_per_class: Option<usize>,
    /// Prompt template with `{}`.
    pub template: String,
    /// Model input side.
    pub size: usize,
    /// Seed of the split and the shots.
    pub seed: u64,
}

const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

fn sorted_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| data_error(dir, None, format!("cannot read the folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

fn images_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        })
        .collect();
    v.sort();
    Ok(v)
}

fn class_name(dir: &Path) -> String {
    dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().replace('_', " ")
}

/// Reads a folder-per-class image set as a task named `name`.
pub fn folder_task(name: &str, dir: &Path, opts: &FolderOptions) -> Result<ImageTask> {
    if !dir.is_dir() {
        return Err(data_error(dir, None, "missing image folder"));
    }
    let (train_dir, test_dir) = (dir.join("train"), dir.join("test"));
    let split_given = train_dir.is_dir() && test_dir.is_dir();
    let class_dirs = sorted_dirs(if split_given { &train_dir } else { dir })?;
    if class_dirs.is_empty() {
        return Err(data_error(
            dir,
            None,
            "no class folders (expected <dir>/<class>/*.png|jpg or <dir>/{train,test}/<class>/*)",
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut train, mut train_labels, mut test, mut test_labels) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut problems = Vec::new();
    let mut classnames = Vec::new();
    for (label, cdir) in class_dirs.iter().enumerate() {
        let cname = class_name(cdir);
        let folder = cdir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let (tr, te) = if split_given {
            (images_in(cdir)?, images_in(&test_dir.join(&folder))?)
        } else {
            let mut all = images_in(cdir)?;
            if all.len() < 2 {
                problems.push(format!(
                    "class `{cname}` has {} image(s); at least 2 are needed (training and test)",
                    all.len()
                ));
                classnames.push(cname);
                continue;
            }
            all.shuffle(&mut rng);
            let k = opts.shots.min(all.len().saturating_sub(1));
            let rest = all.split_off(k);
            (all, rest)
        };
        if tr.is_empty() {
            problems.push(format!("class `{cname}` has no training image"));
        }
        if te.is_empty() {
            problems.push(format!("class `{cname}` has no test image"));
        }
        let shots = draw_shots(&tr, opts.shots, &mut rng);
        train_labels.extend(std::iter::repeat_n(label as i64, shots.len()));
        train.extend(shots);
        let keep = opts.test_per_class.unwrap_or(te.len()).min(te.len());
        test_labels.extend(std::iter::repeat_n(label as i64, keep));
        test.extend(te.into_iter().take(keep));
        classnames.push(cname);
    }
    if !problems.is_empty() {
        return Err(data_error(dir, None, problems.join("; ")));
    }
    let task = ImageTask {
        name: name.into(),
        classnames,
        template: opts.template.clone(),
        train_images: Images::Files { paths: train, size: opts.size },
        train_labels,
        test_images: Images::Files { paths: test, size: opts.size },
        test_labels,
    };
    task.validate()?;
    Ok(task)
}
