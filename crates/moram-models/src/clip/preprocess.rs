//! CLIP image preprocessing, pixel-exact with the reference (open_clip / torchvision on PIL).
//!
//! Eval: resize the shorter side to 224 with Pillow's bicubic resampling (a = -0.5, antialiased
//! when shrinking, 8-bit fixed-point, horizontal pass then vertical, each rounded to 8 bits),
//! centre-crop 224 (offsets rounded half to even, as Python's `round`), to RGB, scale to [0, 1],
//! normalise with CLIP's mean and std. Train (protocol 3.5): `RandomResizedCrop(224, scale =
//! (0.9, 1), ratio = (3/4, 4/3), bicubic)` with torchvision's sampling, then the same tail.
//!
//! Decoding runs in parallel (rayon) and yields plain buffers; tensors are made on the caller's
//! thread. Exactness holds for lossless inputs (PNG, ...); JPEG decoders may differ by one level
//! from libjpeg, and RGBA images are flattened to RGB before resizing (Pillow resizes them with
//! premultiplied alpha).

use crate::error::{Error, Result};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

// The constants are written as OpenAI publishes them; f32 rounds them exactly as torch does.
/// CLIP's normalisation mean (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's normalisation standard deviation (RGB).
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// An 8-bit RGB image, row-major `(height, width, 3)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

impl Rgb8 {
    /// Decodes an image file (PNG, JPEG); grey and alpha images become RGB.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::decode(&bytes, path)
    }

    /// Decodes an image file already in memory (PNG, JPEG); `path` names it in errors. Images
    /// over [`MAX_IMAGE_PIXELS`] are refused from their header, before decoding, as Pillow
    /// refuses decompression bombs.
    pub fn decode(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad =
            |e: image::ImageError| Error::Corrupt { path: path.into(), reason: format!("not a decodable image: {e}") };
        let decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|source| Error::Io { path: path.into(), source })?
            .into_decoder()
            .map_err(bad)?;
        let (w, h) = image::ImageDecoder::dimensions(&decoder);
        if u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS {
            return Err(Error::Corrupt {
                path: path.into(),
                reason: format!("a {w} x {h} image is over the {MAX_IMAGE_PIXELS}-pixel limit (a decompression bomb?)"),
            });
        }
        let rgb = image::DynamicImage::from_decoder(decoder).map_err(bad)?.to_rgb8();
        Ok(Rgb8 { width: rgb.width() as usize, height: rgb.height() as usize, data: rgb.into_raw() })
    }

    fn crop(&self, left: usize, top: usize, width: usize, height: usize) -> Rgb8 {
        let mut data = Vec::with_capacity(width * height * 3);
        for y in top..top + height {
            let row = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[row..row + width * 3]);
        }
        Rgb8 { width, height, data }
    }
}

/// The most pixels an image may have: Pillow's decompression-bomb error threshold
/// (`2 * Image.MAX_IMAGE_PIXELS`), about 537 MB as RGB.
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis resized from `in_size` to
/// `out_size`, for the output positions `range` only: per position the first source index and the
/// fixed-point weights.
fn coefficients(in_size: usize, out_size: usize, range: std::ops::Range<usize>) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    range
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (-0.5 + v) as i32
                    } else {
                        (0.5 + v) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize((width, height), BICUBIC)` on an RGB image, bit for bit.
pub fn resize_bicubic(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    resize_bicubic_window(img, width, height, 0..width, 0..height)
}

/// The pixels `cols x rows` of `resize_bicubic(img, width, height)`, computed without the rest of
/// the resized image (equal bit for bit to resizing, then cropping). Keeps memory proportional
/// to the input and the window, whatever the resized size: a 1 x 100000 image resized so its
/// shorter side is 224 would otherwise need 224 x 22,400,000 pixels.
fn resize_bicubic_window(
    img: &Rgb8,
    width: usize,
    height: usize,
    cols: std::ops::Range<usize>,
    rows: std::ops::Range<usize>,
) -> Rgb8 {
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass (skipped, as Pillow does, when the width is unchanged): every input row,
    // the window's columns.
    let cur = if width != img.width {
        let coeffs = coefficients(img.width, width, cols.clone());
        let w = coeffs.len();
        let mut data = vec![0u8; img.height * w * 3];
        for y in 0..img.height {
            for (xx, (xmin, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut ss = half;
                    for (i, wt) in k.iter().enumerate() {
                        ss += i64::from(img.data[(y * img.width + xmin + i) * 3 + c]) * i64::from(*wt);
                    }
                    data[(y * w + xx) * 3 + c] = clip8(ss);
                }
            }
        }
        Rgb8 { width: w, height: img.height, data }
    } else {
        img.crop(cols.start, 0, cols.len(), img.height)
    };
    if height == img.height {
        return cur.crop(0, rows.start, cur.width, rows.len());
    }
    let coeffs = coefficients(img.height, height, rows);
    let w = cur.width;
    let mut data = vec![0u8; coeffs.len() * w * 3];
    for (yy, (ymin, k)) in coeffs.iter().enumerate() {
        for x in 0..w {
            for c in 0..3 {
                let mut ss = half;
                for (i, wt) in k.iter().enumerate() {
                    ss += i64::from(cur.data[((ymin + i) * w + x) * 3 + c]) * i64::from(*wt);
                }
                data[(yy * w + x) * 3 + c] = clip8(ss);
            }
        }
    }
    Rgb8 { width: w, height: coeffs.len(), data }
}

/// The size torchvision `Resize(size)` gives a `w x h` image: the shorter side becomes `size`, the
/// longer `int(size * long / short)`.
fn shorter_side_size(w: usize, h: usize, size: usize) -> (usize, usize) {
    if w <= h {
        (size, (size as f64 * h as f64 / w as f64) as usize)
    } else {
        ((size as f64 * w as f64 / h as f64) as usize, size)
    }
}

/// torchvision `Resize(size)` on a PIL image: the shorter side becomes `size`, the longer
/// `int(size * long / short)`.
pub fn resize_shorter_side(img: &Rgb8, size: usize) -> Rgb8 {
    let (nw, nh) = shorter_side_size(img.width, img.height, size);
    if (nw, nh) == (img.width, img.height) {
        return img.clone();
    }
    resize_bicubic(img, nw, nh)
}

/// Python's `round` (half to even) of a non-negative half-integer or integer.
fn round_half_even(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc() - 0.5).abs() < 1e-12 && (r as i64) % 2 != 0 { r - 1.0 } else { r };
    r.max(0.0) as usize
}

/// The window torchvision `CenterCrop(size)` keeps of a `width x height` image: columns, rows.
fn center_window(width: usize, height: usize, size: usize) -> (std::ops::Range<usize>, std::ops::Range<usize>) {
    let top = round_half_even((height.saturating_sub(size)) as f64 / 2.0);
    let left = round_half_even((width.saturating_sub(size)) as f64 / 2.0);
    (left..left + size.min(width), top..top + size.min(height))
}

/// torchvision `CenterCrop(size)` (the image must be at least `size` on both sides here).
pub fn center_crop(img: &Rgb8, size: usize) -> Rgb8 {
    let (cols, rows) = center_window(img.width, img.height, size);
    img.crop(cols.start, rows.start, cols.len(), rows.len())
}

/// The eval transform up to 8-bit pixels: resize shorter side, centre crop (only the cropped
/// window is resized, so extreme aspect ratios cost no more than square images).
pub fn eval_pixels(img: &Rgb8, size: usize) -> Rgb8 {
    let (nw, nh) = shorter_side_size(img.width, img.height, size);
    if (nw, nh) == (img.width, img.height) {
        return center_crop(img, size);
    }
    let (cols, rows) = center_window(nw, nh, size);
    resize_bicubic_window(img, nw, nh, cols, rows)
}

/// The train transform up to 8-bit pixels: torchvision `RandomResizedCrop(size, scale, ratio)`
/// with its sampling (10 tries, then a centre crop within the ratio bounds), bicubic.
pub fn train_pixels(img: &Rgb8, size: usize, rng: &mut impl Rng) -> Rgb8 {
    let (w, h) = (img.width as f64, img.height as f64);
    let area = w * h;
    let (scale, ratio) = ((0.9, 1.0), (3.0f64 / 4.0, 4.0f64 / 3.0));
    let (lo, hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..scale.1);
        let aspect = rng.random_range(lo..hi).exp();
        let cw = (target * aspect).sqrt().round() as usize;
        let ch = (target / aspect).sqrt().round() as usize;
        if cw > 0 && ch > 0 && cw <= img.width && ch <= img.height {
            let top = rng.random_range(0..=img.height - ch);
            let left = rng.random_range(0..=img.width - cw);
            return resize_bicubic(&img.crop(left, top, cw, ch), size, size);
        }
    }
    let in_ratio = w / h;
    let (cw, ch) = if in_ratio < ratio.0 {
        (img.width, (w / ratio.0).round() as usize)
    } else if in_ratio > ratio.1 {
        ((h * ratio.1).round() as usize, img.height)
    } else {
        (img.width, img.height)
    };
    let (top, left) = ((img.height - ch) / 2, (img.width - cw) / 2);
    resize_bicubic(&img.crop(left, top, cw, ch), size, size)
}

/// `ToTensor` + `Normalize`: `(3, H, W)` f32 values, channel-major.
pub fn normalize_pixels(img: &Rgb8) -> Vec<f32> {
    let n = img.width * img.height;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (f32::from(px[c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

/// Preprocesses `n` images in parallel into pixels `(n, 3, size, size)` f32: image `i` comes from
/// `image(i)` (a decoded file, an in-memory image, ...). With `seed`, the train transform with a
/// generator seeded from `(seed, i)`, so a batch is reproducible whatever the thread count;
/// without, the eval transform. The first image that fails is the error.
pub fn preprocess_batch<F>(n: usize, size: usize, seed: Option<u64>, image: F) -> Result<Tensor>
where
    F: Fn(usize) -> Result<Rgb8> + Sync,
{
    let planes: Vec<Vec<f32>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let img = image(i)?;
            Ok(normalize_pixels(&match seed {
                Some(s) => {
                    let mut rng =
                        rand_chacha::ChaCha8Rng::seed_from_u64(s ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    train_pixels(&img, size, &mut rng)
                }
                None => eval_pixels(&img, size),
            }))
        })
        .collect::<Result<_>>()?;
    stack(planes, size)
}

/// Decodes and preprocesses `paths` in parallel (eval transform, `size` x `size`) and returns
/// pixels `(B, 3, size, size)` f32. The first file that cannot be read or decoded is an error
/// naming it.
pub fn load_eval_batch(paths: &[PathBuf], size: usize) -> Result<Tensor> {
    preprocess_batch(paths.len(), size, None, |i| Rgb8::open(&paths[i]))
}

/// Like [`load_eval_batch`] with the train transform; image `i` uses a generator seeded from
/// `(seed, i)`, so a batch is reproducible whatever the thread count.
pub fn load_train_batch(paths: &[PathBuf], size: usize, seed: u64) -> Result<Tensor> {
    preprocess_batch(paths.len(), size, Some(seed), |i| Rgb8::open(&paths[i]))
}

fn stack(planes: Vec<Vec<f32>>, size: usize) -> Result<Tensor> {
    let b = planes.len() as i64;
    let flat: Vec<f32> = planes.into_iter().flatten().collect();
    Ok(Tensor::f_from_slice(&flat)?.view([b, 3, size as i64, size as i64]).to_kind(Kind::Float))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(width: usize, height: usize) -> Rgb8 {
        let data = (0..width * height * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        Rgb8 { width, height, data }
    }

    #[test]
    fn windowed_eval_transform_equals_resize_then_crop() {
        // Down- and up-scaling, portrait and landscape, odd crops, unchanged axes.
        for (w, h) in [(300, 200), (200, 300), (225, 224), (224, 224), (31, 17), (1, 9), (500, 501), (224, 900)] {
            let img = pattern(w, h);
            let two_step = center_crop(&resize_shorter_side(&img, 32), 32);
            let windowed = eval_pixels(&img, 32);
            assert_eq!((windowed.width, windowed.height), (32, 32), "{w} x {h}");
            assert!(windowed.data == two_step.data, "{w} x {h}: windowed resize differs");
        }
    }

    #[test]
    fn extreme_aspect_ratios_stay_small() {
        // 1 x 100000 would resize to 224 x 22,400,000 pixels before cropping.
        let out = eval_pixels(&pattern(1, 100_000), 224);
        assert_eq!((out.width, out.height, out.data.len()), (224, 224, 224 * 224 * 3));
    }
}
