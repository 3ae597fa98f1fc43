//! IDX image sets (MNIST, Fashion-MNIST; plain or gzip-compressed) as class-incremental
//! [`ImageTask`]s: the classes are cut into groups of `classes_per_task`, one task per group.
//! Grey 28x28 pixels stay in memory as bytes and go through CLIP's transforms per batch.

use super::{data_error, ImageTask, Images};
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A decoded IDX file: its dimensions and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Row-major unsigned bytes.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes (type 0x08), gzip-compressed or not.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_idx(&raw, path)
}

/// Deflate expands a byte into at most 1032 bytes, so a gzip member of `n` bytes can hold no
/// more than `n * GZIP_MAX_RATIO` bytes; a header that claims more is refused before reading.
const GZIP_MAX_RATIO: u64 = 1032;

/// Parses the bytes of an IDX file (gzip-compressed or not); `path` names it in errors. Memory is
/// bounded by what the header declares, itself bounded by what the file can hold.
pub fn parse_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    let gz = raw.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read + '_> = if gz { Box::new(flate2::read::GzDecoder::new(raw)) } else { Box::new(raw) };
    let read_err = |e: std::io::Error| {
        if gz {
            data_error(path, None, format!("corrupt gzip stream: {e}"))
        } else {
            data_error(path, None, format!("truncated IDX file: {e}"))
        }
    };
    let mut magic = [0u8; 4];
    reader.read_exact(&mut magic).map_err(read_err)?;
    if magic[..3] != [0, 0, 0x08] {
        return Err(data_error(path, None, "not an IDX file of unsigned bytes (magic 0x0000 08 nd expected)"));
    }
    let nd = magic[3] as usize;
    let mut header = vec![0u8; 4 * nd];
    if nd == 0 || reader.read_exact(&mut header).is_err() {
        return Err(data_error(path, None, format!("truncated IDX header ({nd} dimensions)")));
    }
    let dims: Vec<usize> =
        header.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let capacity = if gz { (raw.len() as u64).saturating_mul(GZIP_MAX_RATIO) } else { raw.len() as u64 };
    let expected = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64)).filter(|&n| n <= capacity);
    let Some(expected) = expected else {
        return Err(data_error(
            path,
            None,
            format!("dimensions {dims:?} declare more data than a {}-byte file can hold", raw.len()),
        ));
    };
    let mut data = Vec::with_capacity(expected as usize);
    // One byte more than declared, to tell trailing data from an exact fit.
    reader.take(expected + 1).read_to_end(&mut data).map_err(read_err)?;
    if data.len() as u64 != expected {
        let found = if data.len() as u64 > expected { "more".to_string() } else { data.len().to_string() };
        return Err(data_error(
            path,
            None,
            format!("dimensions {dims:?} need {expected} bytes of data, found {found}"),
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Grey images kept as bytes; [`Images::Grey`] indexes into them.
#[derive(Debug)]
pub struct GreyImages {
    /// `n * height * width` bytes.
    pub pixels: Vec<u8>,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
}

impl GreyImages {
    /// Image `i` as RGB (grey replicated, as open_clip's `_convert_to_rgb`).
    pub fn rgb(&self, i: usize) -> moram_models::clip::Rgb8 {
        let n = self.height * self.width;
        let data = self.pixels[i * n..(i + 1) * n].iter().flat_map(|&g| [g, g, g]).collect();
        moram_models::clip::Rgb8 { width: self.width, height: self.height, data }
    }
}

/// Finds `<dir>/<stem>` or `<dir>/<stem>.gz`.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    [dir.join(stem), dir.join(format!("{stem}.gz"))]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| data_error(&dir.join(stem), None, "missing IDX file (plain or .gz)"))
}

/// `<dir>/<prefix>-images-idx3-ubyte` and `-labels-idx1-ubyte` (plain or .gz), checked to match.
pub(crate) fn load_split(dir: &Path, prefix: &str) -> Result<(Arc<GreyImages>, Vec<u8>)> {
    let (ip, lp) =
        (find(dir, &format!("{prefix}-images-idx3-ubyte"))?, find(dir, &format!("{prefix}-labels-idx1-ubyte"))?);
    let (img, lab) = (read_idx(&ip)?, read_idx(&lp)?);
    if img.dims.len() != 3 || lab.dims.len() != 1 || img.dims[0] != lab.dims[0] {
        return Err(data_error(&ip, None, format!("images {:?} and labels {:?} do not match", img.dims, lab.dims)));
    }
    Ok((Arc::new(GreyImages { pixels: img.data, height: img.dims[1], width: img.dims[2] }), lab.data))
}

/// Class-incremental tasks from an IDX set in `dir` (`train-*` and `t10k-*` files): task `t`
/// holds classes `t*k .. (t+1)*k` with `classnames` as prompts, `shots` training images per class
/// (seeded, without replacement) and at most `test_per_class` test images per class.
#[allow(clippy::too_many_arguments)]
pub fn idx_tasks(
    dir: &Path,
    names: &[String],
    classnames: &[String],
    classes_per_task: usize,
    template: &str,
    shots: usize,
    test_per_class: Option<usize>,
    size: usize,
    seed: u64,
) -> Result<Vec<ImageTask>> {
    if classes_per_task == 0 || names.len() * classes_per_task != classnames.len() {
        return Err(Error::config(
            "data.classes",
            format!("{} classes do not make {} tasks of {classes_per_task}", classnames.len(), names.len()),
        ));
    }
    let (train, train_labels) = load_split(dir, "train")?;
    let (test, test_labels) = load_split(dir, "t10k")?;
    if let Some(&l) = train_labels.iter().chain(&test_labels).find(|&&l| l as usize >= classnames.len()) {
        return Err(data_error(dir, None, format!("label {l} but only {} class names", classnames.len())));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tasks = Vec::new();
    for (t, name) in names.iter().enumerate() {
        let classes: Vec<u8> = (t * classes_per_task..(t + 1) * classes_per_task).map(|c| c as u8).collect();
        let (mut tr_items, mut tr_labels, mut te_items, mut te_labels) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (local, &c) in classes.iter().enumerate() {
            let mut idx: Vec<usize> = (0..train_labels.len()).filter(|&i| train_labels[i] == c).collect();
            idx.shuffle(&mut rng);
            idx.truncate(shots);
            tr_labels.extend(std::iter::repeat_n(local as i64, idx.len()));
            tr_items.extend(idx);
            let te: Vec<usize> = (0..test_labels.len())
                .filter(|&i| test_labels[i] == c)
                .take(test_per_class.unwrap_or(usize::MAX))
                .collect();
            te_labels.extend(std::iter::repeat_n(local as i64, te.len()));
            te_items.extend(te);
        }
        let task = ImageTask {
            name: name.clone(),
            classnames: classes.iter().map(|&c| classnames[c as usize].clone()).collect(),
            template: template.into(),
            train_images: Images::Grey { images: train.clone(), items: tr_items, size },
            train_labels: tr_labels,
            test_images: Images::Grey { images: test.clone(), items: te_items, size },
            test_labels: te_labels,
        };
        task.validate()?;
        tasks.push(task);
    }
    Ok(tasks)
}
