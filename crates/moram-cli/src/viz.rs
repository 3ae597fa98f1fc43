//! PNG figures drawn with the `image` crate (numbers in a small built-in digit font, no font files):
//! the accuracy matrix, per-atom activation ratios across tasks (paper Fig. 5), cumulative
//! activation-mass curves with the 99% mark (Fig. 8) and atoms needed per layer (Fig. 10).

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// 3x5 bitmaps of `0`-`9` (rows top to bottom, 3 bits each, MSB left).
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

/// Viridis-like colour for `t` in [0, 1].
pub fn colour(t: f64) -> Rgb<u8> {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [68.0, 1.0, 84.0]),
        (0.25, [59.0, 82.0, 139.0]),
        (0.5, [33.0, 145.0, 140.0]),
        (0.75, [94.0, 201.0, 98.0]),
        (1.0, [253.0, 231.0, 37.0]),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.iter().rposition(|(s, _)| *s <= t).unwrap_or(0).min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let f = (t - a) / (b - a);
    Rgb([0, 1, 2].map(|k| (ca[k] + (cb[k] - ca[k]) * f).round() as u8))
}

/// Draws the integer `n` with its top-left corner at (x, y), `scale` pixels per font pixel.
fn draw_number(img: &mut RgbImage, n: u32, x: u32, y: u32, scale: u32, c: Rgb<u8>) {
    for (k, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (0b100 >> col) != 0 {
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let (px, py) = (x + (k as u32 * 4 + col) * scale + dx, y + row as u32 * scale + dy);
                            if px < img.width() && py < img.height() {
                                img.put_pixel(px, py, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Writes `matrix` (0-100; rows = after task i, columns = task j) as a heatmap PNG, one 72x48 cell
/// per entry with its rounded value.
pub fn matrix_heatmap(matrix: &[Vec<f64>], path: &Path) -> Result<()> {
    let (cw, ch) = (72u32, 48u32);
    let rows = matrix.len() as u32;
    let cols = matrix.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let mut img = RgbImage::from_pixel(cols.max(1) * cw, rows.max(1) * ch, Rgb([255, 255, 255]));
    for (i, row) in matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let c = colour(v / 100.0);
            let (x0, y0) = (j as u32 * cw, i as u32 * ch);
            fill(&mut img, x0 + 1, y0 + 1, x0 + cw - 1, y0 + ch - 1, c);
            let n = v.round().clamp(0.0, 999.0) as u32;
            let scale = 4;
            let w = (n.to_string().len() as u32 * 4 - 1) * scale;
            let text = if v > 60.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) };
            draw_number(&mut img, n, x0 + (cw - w) / 2, y0 + (ch - 5 * scale) / 2, scale, text);
        }
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Fills the rectangle `[x0, x1) x [y0, y1)`.
fn fill(img: &mut RgbImage, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
    for y in y0..y1.min(img.height()) {
        for x in x0..x1.min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

/// Per-atom heatmap: one row per task's data, one column per atom (`values[row][atom]` in [0, 1]),
/// thin black separators between the atoms of successive tasks (`block` atoms each).
pub fn atom_heatmap(values: &[Vec<f64>], block: usize, path: &Path) -> Result<()> {
    let (cw, ch) = (12u32, 36u32);
    let cols = values.iter().map(Vec::len).max().unwrap_or(0) as u32;
    let mut img = RgbImage::from_pixel(cols.max(1) * cw + 1, values.len().max(1) as u32 * ch, Rgb([255, 255, 255]));
    for (i, row) in values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (x, y) = (j as u32 * cw, i as u32 * ch);
            fill(&mut img, x, y + 1, x + cw, y + ch - 1, colour(v));
        }
    }
    if block > 0 {
        for b in (0..=cols as usize).step_by(block) {
            let (x, h) = (b as u32 * cw, img.height());
            fill(&mut img, x, 0, x + 1, h, Rgb([0, 0, 0]));
        }
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Draws a line segment (Bresenham), 2 px thick.
fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        for (ox, oy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x + ox, y + oy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Curves of cumulative share (each `curves[k]` rises from 0 to 1 over its points, x scaled to
/// the plot width), one colour per curve from dark to light, and a dashed red line at `mark`.
pub fn cumulative_curves(curves: &[Vec<f64>], mark: f64, path: &Path) -> Result<()> {
    let (w, h, pad) = (480i64, 320i64, 20i64);
    let mut img = RgbImage::from_pixel(w as u32, h as u32, Rgb([255, 255, 255]));
    let to_y = |v: f64| h - pad - ((v.clamp(0.0, 1.0)) * (h - 2 * pad) as f64).round() as i64;
    line(&mut img, (pad, h - pad), (w - pad, h - pad), Rgb([0, 0, 0]));
    line(&mut img, (pad, pad), (pad, h - pad), Rgb([0, 0, 0]));
    let ym = to_y(mark);
    for x in (pad..w - pad).step_by(12) {
        line(&mut img, (x, ym), ((x + 6).min(w - pad), ym), Rgb([220, 30, 30]));
    }
    for (k, c) in curves.iter().enumerate() {
        let colour = colour(k as f64 / curves.len().max(2) as f64 * 0.9);
        let n = c.len().max(1) as f64;
        let mut prev = (pad, to_y(0.0));
        for (i, &v) in c.iter().enumerate() {
            let p = (pad + (((i + 1) as f64 / n) * (w - 2 * pad) as f64).round() as i64, to_y(v));
            line(&mut img, prev, p, colour);
            prev = p;
        }
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// A bar per value (0..=`max`), its integer value written above it.
pub fn bar_chart(values: &[f64], max: f64, path: &Path) -> Result<()> {
    let (bw, h, pad) = (24u32, 240u32, 24u32);
    let w = values.len().max(1) as u32 * bw + 2 * pad;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    fill(&mut img, pad, h - pad, w - pad, h - pad + 2, Rgb([0, 0, 0]));
    for (i, &v) in values.iter().enumerate() {
        let top = h - pad - ((v / max.max(1e-9)).clamp(0.0, 1.0) * (h - 3 * pad) as f64).round() as u32;
        let x = pad + i as u32 * bw;
        fill(&mut img, x + 3, top, x + bw - 3, h - pad, colour(0.35));
        let n = v.round().max(0.0) as u32;
        let scale = if n >= 100 { 1 } else { 2 };
        let tw = (n.to_string().len() as u32 * 4 - 1) * scale;
        draw_number(
            &mut img,
            n,
            x + (bw.saturating_sub(tw)) / 2,
            top.saturating_sub(6 * scale + 2),
            scale,
            Rgb([0, 0, 0]),
        );
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

/// CLIP-normalised pixels `(3, H, W)` back to an 8-bit image.
pub fn denormalize(x: &tch::Tensor) -> Result<RgbImage> {
    let size = x.size();
    anyhow::ensure!(size.len() == 3 && size[0] == 3, "expected pixels (3, H, W), found {size:?}");
    let (h, w) = (size[1] as u32, size[2] as u32);
    let v = Vec::<f32>::try_from(x.to_kind(tch::Kind::Float).contiguous().view([-1]))?;
    let plane = (h * w) as usize;
    Ok(RgbImage::from_fn(w, h, |px, py| {
        let i = (py * w + px) as usize;
        Rgb([0, 1, 2].map(|c| {
            let m = moram_models::clip::CLIP_MEAN[c];
            let s = moram_models::clip::CLIP_STD[c];
            ((v[c * plane + i] * s + m) * 255.0).round().clamp(0.0, 255.0) as u8
        }))
    }))
}

/// The image, then one copy per map with each patch tinted by its value (`maps[k]` holds
/// `grid * grid` values, row-major; colours scaled to the largest value over all maps), side by
/// side with 4 px white gaps.
pub fn patch_panel(image: &RgbImage, maps: &[Vec<f64>], grid: usize, path: &Path) -> Result<()> {
    let (w, h) = image.dimensions();
    let gap = 4u32;
    let mut out = RgbImage::from_pixel((w + gap) * (maps.len() as u32 + 1), h, Rgb([255, 255, 255]));
    image::imageops::replace(&mut out, image, 0, 0);
    let max = maps.iter().flatten().copied().fold(0.0f64, f64::max).max(1e-12);
    for (k, map) in maps.iter().enumerate() {
        let x0 = (k as u32 + 1) * (w + gap);
        for y in 0..h {
            for x in 0..w {
                let (gx, gy) = ((x as usize * grid) / w as usize, (y as usize * grid) / h as usize);
                let v = map.get(gy * grid + gx).copied().unwrap_or(0.0) / max;
                let (p, c) = (image.get_pixel(x, y), colour(v));
                let blend = |a: u8, b: u8| ((a as f64 * 0.35) + (b as f64 * 0.65)).round() as u8;
                out.put_pixel(x0 + x, y, Rgb([blend(p[0], c[0]), blend(p[1], c[1]), blend(p[2], c[2])]));
            }
        }
    }
    out.save(path).with_context(|| format!("writing {}", path.display()))
}

/// Grouped bars with 95% whiskers: `groups[g][k] = (mean, half-width)` on a 0..=`max` scale, one
/// colour per bar position `k` (the same method in every group), the rounded mean above each bar.
pub fn interval_bars(groups: &[Vec<(f64, Option<f64>)>], max: f64, path: &Path) -> Result<()> {
    let (bw, gap, h, pad) = (28u32, 20u32, 280u32, 24u32);
    let per = groups.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let w = 2 * pad + groups.len().max(1) as u32 * (per * bw + gap);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    fill(&mut img, pad, h - pad, w - pad, h - pad + 2, Rgb([0, 0, 0]));
    let plot = (h - 3 * pad) as f64;
    let to_y = |v: f64| h - pad - ((v / max.max(1e-9)).clamp(0.0, 1.0) * plot).round() as u32;
    for (g, bars) in groups.iter().enumerate() {
        for (k, &(mean, ci)) in bars.iter().enumerate() {
            let x = pad + g as u32 * (per * bw + gap) + k as u32 * bw;
            let top = to_y(mean);
            fill(&mut img, x + 3, top, x + bw - 3, h - pad, colour(k as f64 / per.max(2) as f64 * 0.9));
            if let Some(ci) = ci {
                let (y0, y1) = (to_y(mean + ci) as i64, to_y(mean - ci) as i64);
                let xc = (x + bw / 2) as i64;
                line(&mut img, (xc, y0), (xc, y1), Rgb([0, 0, 0]));
                line(&mut img, (xc - 5, y0), (xc + 5, y0), Rgb([0, 0, 0]));
                line(&mut img, (xc - 5, y1), (xc + 5, y1), Rgb([0, 0, 0]));
            }
            let n = mean.round().max(0.0) as u32;
            let tw = (n.to_string().len() as u32 * 4 - 1) * 2;
            let ty = to_y(mean + ci.unwrap_or(0.0)).saturating_sub(14);
            draw_number(&mut img, n, x + bw.saturating_sub(tw) / 2, ty, 2, Rgb([0, 0, 0]));
        }
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_panel_tints_the_strongest_patch_yellow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let img = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        patch_panel(&img, &[vec![0.0, 1.0, 0.0, 0.0]], 2, &p).unwrap();
        let out = image::open(&p).unwrap().to_rgb8();
        assert_eq!(out.dimensions(), (24, 8));
        let c = colour(1.0);
        let tint = |v: u8| ((v as f64) * 0.65).round() as u8;
        assert_eq!(*out.get_pixel(12 + 6, 1), Rgb([tint(c[0]), tint(c[1]), tint(c[2])]), "top-right patch of the map");
        let x = tch::Tensor::zeros([3, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
        let back = denormalize(&x).unwrap();
        assert_eq!(*back.get_pixel(0, 0), Rgb([123, 117, 104]), "the CLIP mean colour");
    }

    #[test]
    fn atom_figures_are_drawn_where_the_data_says() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        atom_heatmap(&[vec![1.0, 0.0, 0.5, 0.0], vec![0.0, 0.0, 0.0, 1.0]], 2, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (4 * 12 + 1, 72));
        assert_eq!(*img.get_pixel(6, 18), colour(1.0));
        assert_eq!(*img.get_pixel(30, 18), colour(0.5));
        assert_eq!(*img.get_pixel(42, 54), colour(1.0));
        assert_eq!(*img.get_pixel(24, 10), Rgb([0, 0, 0]), "block separator after 2 atoms");
        let p = dir.path().join("b.png");
        bar_chart(&[10.0, 5.0], 10.0, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // The full bar reaches the top of the plot area, the half bar only half way.
        let bar = |x: u32, y: u32| *img.get_pixel(x, y) == colour(0.35);
        assert!(bar(36, 3 * 24 + 2) && !bar(60, 3 * 24 + 2) && bar(60, 240 - 24 - 10));
        let p = dir.path().join("c.png");
        cumulative_curves(&[vec![0.5, 0.9, 1.0]], 0.99, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(*img.get_pixel(21, 20 + 3), Rgb([220, 30, 30]), "the 99% mark");
    }

    #[test]
    fn heatmap_cells_have_the_colour_of_their_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        matrix_heatmap(&[vec![0.0, 100.0], vec![50.0, 7.0]], &path).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (144, 96));
        // Corners of each cell (away from the digits) carry the value's colour.
        assert_eq!(*img.get_pixel(3, 3), colour(0.0));
        assert_eq!(*img.get_pixel(72 + 3, 3), colour(1.0));
        assert_eq!(*img.get_pixel(3, 48 + 3), colour(0.5));
        // The digit "7" is drawn: its top bar is text-coloured (white on a dark cell).
        let ink = (0..72).filter(|&x| *img.get_pixel(72 + x, 48 + 14) == Rgb([255, 255, 255])).count();
        assert!(ink >= 8, "{ink}");
        assert_eq!(colour(0.0), Rgb([68, 1, 84]));
        assert_eq!(colour(1.0), Rgb([253, 231, 37]));
    }

    #[test]
    fn interval_bars_have_their_height_and_whiskers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.png");
        interval_bars(&[vec![(100.0, None), (50.0, Some(10.0))]], 100.0, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // Two bars of 28 px in one group: width 2 * 24 + 2 * 28 + 20, height 280.
        assert_eq!(img.dimensions(), (124, 280));
        let (floor, plot) = (280 - 24, 280.0 - 72.0);
        let y = |v: f64| floor - (v / 100.0 * plot).round() as u32;
        // Bar 1 (full) is filled at the top of the plot; bar 2 only up to 50.
        assert_eq!(*img.get_pixel(24 + 5, y(100.0) + 2), colour(0.0));
        assert_eq!(*img.get_pixel(24 + 28 + 5, y(50.0) + 2), colour(0.45));
        assert_eq!(*img.get_pixel(24 + 28 + 5, y(50.0) - 4), Rgb([255, 255, 255]));
        // The whisker of bar 2 spans 40..60 at its centre.
        let xc = 24 + 28 + 14;
        assert_eq!(*img.get_pixel(xc, y(58.0)), Rgb([0, 0, 0]));
        assert_eq!(*img.get_pixel(xc + 4, y(60.0)), Rgb([0, 0, 0]), "cap");
    }
}
