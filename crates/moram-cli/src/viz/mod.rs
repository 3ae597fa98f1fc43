//! Figures, each written as a PNG and as an SVG next to it (one drawing on a [`Canvas`]), their
//! labels in DejaVu Sans ([`text`]; the built-in 5x7 [`font`] when the font asset is not
//! installed):
//! the accuracy matrix and routing matrices, per-atom activation ratios across tasks (paper
//! Fig. 5), cumulative activation-mass curves with the 99% mark (Fig. 8), atoms needed per layer
//! (Fig. 10), CLIP per-patch maps and the study's bars with 95% whiskers. Every figure carries a
//! title and its row, column or axis labels.
//!
//! Each figure is a plot body (the `*_body` functions, tested pixel by pixel on the raster canvas)
//! drawn inside a [`Frame`]: the white margins the title and labels are written in.

pub mod canvas;
pub mod font;
pub mod text;

use anyhow::{Context, Result};
use canvas::{Canvas, Offset, Svg};
use image::{Rgb, RgbImage};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const INK: Rgb<u8> = Rgb([0, 0, 0]);
/// The 99% mark of the cumulative curves.
const MARK: Rgb<u8> = Rgb([220, 30, 30]);
/// Pixels per font pixel of titles and labels.
const S: u32 = 2;
/// Height of one line of labels.
const LINE: u32 = (font::H + 3) * S;
/// Characters per line of a column label before it wraps.
const COL_CHARS: usize = 10;
/// Characters per line of a row label before it wraps.
const ROW_CHARS: usize = 14;

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

/// Margins around a plot body, in pixels.
#[derive(Debug, Clone, Copy, Default)]
struct Margins {
    left: u32,
    top: u32,
    right: u32,
    bottom: u32,
}

/// The layout of a figure: a body of the given size with margins around it and a title (wrapped
/// to the figure's width) at the top-left, whose lines are added above the top margin.
struct Frame {
    width: u32,
    height: u32,
    /// The body's top-left corner.
    x0: u32,
    y0: u32,
    title: Vec<String>,
}

impl Frame {
    fn new((body_w, body_h): (u32, u32), title: &str, m: Margins) -> Frame {
        let width = m.left + body_w + m.right;
        let chars = ((width.saturating_sub(16)) / ((font::W + 1) * S)).max(8) as usize;
        let lines = if title.is_empty() { Vec::new() } else { font::wrap(title, chars) };
        let title_h = if lines.is_empty() { 0 } else { lines.len() as u32 * LINE + 8 };
        let width = width.max(lines.iter().map(|l| text::width(l, S) + 16).max().unwrap_or(0));
        let (x0, y0) = (m.left, title_h + m.top);
        Frame { width, height: y0 + body_h + m.bottom, x0, y0, title: lines }
    }

    /// The body's view of canvas `c`: its origin at the body's corner.
    fn body<'a>(&self, c: &'a mut dyn Canvas) -> Offset<'a> {
        Offset { inner: c, dx: self.x0, dy: self.y0 }
    }

    /// Draws the title and then `draw` (in the figure's coordinates) on a white raster canvas
    /// saved as `path` (PNG) and on an SVG document saved next to it (`.svg`).
    fn write(&self, path: &Path, draw: impl Fn(&mut dyn Canvas)) -> Result<()> {
        let mut img = RgbImage::from_pixel(self.width, self.height, WHITE);
        let mut svg = Svg::new(self.width, self.height);
        for c in [&mut img as &mut dyn Canvas, &mut svg] {
            for (k, line) in self.title.iter().enumerate() {
                c.text(line, 8, 6 + k as u32 * LINE, S, INK);
            }
            draw(c);
        }
        img.save(path).with_context(|| format!("writing {}", path.display()))?;
        let svg_path = path.with_extension("svg");
        std::fs::write(&svg_path, svg.finish()).with_context(|| format!("writing {}", svg_path.display()))
    }
}

/// Writes the lines of a label centred horizontally on `cx` from `y` down.
fn label_centred(c: &mut dyn Canvas, lines: &[String], cx: u32, y: u32) {
    for (k, l) in lines.iter().enumerate() {
        c.text(l, cx.saturating_sub(text::width(l, S) / 2), y + k as u32 * LINE, S, INK);
    }
}

/// Writes the lines of a label right-aligned at `right`, centred vertically on `cy`.
fn label_right(c: &mut dyn Canvas, lines: &[String], right: u32, cy: u32) {
    let h = lines.len() as u32 * LINE;
    for (k, l) in lines.iter().enumerate() {
        let y = (cy + 3 * S).saturating_sub(h / 2) + k as u32 * LINE;
        c.text(l, right.saturating_sub(text::width(l, S)), y, S, INK);
    }
}

/// Labels wrapped at `chars` characters per line, and the widest line's width.
fn wrapped(labels: &[String], chars: usize) -> (Vec<Vec<String>>, u32) {
    let lines: Vec<Vec<String>> = labels.iter().map(|l| font::wrap(l, chars)).collect();
    let w = lines.iter().flatten().map(|l| text::width(l, S)).max().unwrap_or(0);
    (lines, w)
}

/// Size of [`matrix_body`].
fn matrix_size(matrix: &[Vec<f64>], cw: u32, ch: u32) -> (u32, u32) {
    let cols = matrix.iter().map(Vec::len).max().unwrap_or(0) as u32;
    (cols.max(1) * cw, (matrix.len() as u32).max(1) * ch)
}

/// A heatmap of `matrix` (0-100) with `cw` x `ch` cells, each with its rounded value.
fn matrix_body(c: &mut dyn Canvas, matrix: &[Vec<f64>], cw: u32, ch: u32) {
    for (i, row) in matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (x0, y0) = (j as u32 * cw, i as u32 * ch);
            c.rect(x0 + 1, y0 + 1, x0 + cw - 1, y0 + ch - 1, colour(v / 100.0));
            let value = format!("{}", v.round().clamp(0.0, 999.0) as u32);
            let scale = 3;
            let ink = if v > 60.0 { INK } else { WHITE };
            let (tw, th) = (text::width(&value, scale), font::H * scale);
            c.text(&value, x0 + (cw.saturating_sub(tw)) / 2, y0 + (ch - th) / 2, scale, ink);
        }
    }
}

/// Writes `matrix` (0-100; row `i`, column `j`) as a heatmap with each cell's rounded value,
/// `rows` written left of the rows, `cols` above the columns and `title` on top (PNG at `path`,
/// SVG next to it).
pub fn matrix_heatmap(matrix: &[Vec<f64>], rows: &[String], cols: &[String], title: &str, path: &Path) -> Result<()> {
    let (col_lines, col_w) = wrapped(cols, COL_CHARS);
    let (row_lines, row_w) = wrapped(rows, ROW_CHARS);
    let row_h = row_lines.iter().map(Vec::len).max().unwrap_or(0) as u32 * LINE + 8;
    let (cw, ch) = ((col_w + 12).max(72), row_h.max(48));
    let header = col_lines.iter().map(Vec::len).max().unwrap_or(0) as u32 * LINE;
    let m = Margins { left: row_w + 16, top: header + 6, right: 8, bottom: 8 };
    let f = Frame::new(matrix_size(matrix, cw, ch), title, m);
    f.write(path, |c| {
        matrix_body(&mut f.body(c), matrix, cw, ch);
        for (j, lines) in col_lines.iter().enumerate() {
            // Bottom-aligned, so every label ends right above its column.
            let y = f.y0 - 4 - lines.len() as u32 * LINE;
            label_centred(c, lines, f.x0 + j as u32 * cw + cw / 2, y);
        }
        for (i, lines) in row_lines.iter().enumerate() {
            label_right(c, lines, f.x0 - 8, f.y0 + i as u32 * ch + ch / 2);
        }
    })
}

/// Size of [`atom_body`].
fn atom_size(values: &[Vec<f64>]) -> (u32, u32) {
    let cols = values.iter().map(Vec::len).max().unwrap_or(0) as u32;
    (cols.max(1) * 12 + 1, values.len().max(1) as u32 * 36)
}

/// Per-atom heatmap body: one row per task's data, one 12 px column per atom (`values[row][atom]`
/// in [0, 1]), thin black separators between the atoms of successive tasks (`block` atoms each).
fn atom_body(c: &mut dyn Canvas, values: &[Vec<f64>], block: usize) {
    let (cw, ch) = (12u32, 36u32);
    for (i, row) in values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let (x, y) = (j as u32 * cw, i as u32 * ch);
            c.rect(x, y + 1, x + cw, y + ch - 1, colour(v));
        }
    }
    if block > 0 {
        let (w, h) = atom_size(values);
        for b in (0..=((w - 1) / cw) as usize).step_by(block) {
            let x = b as u32 * cw;
            c.rect(x, 0, x + 1, h, INK);
        }
    }
}

/// Per-atom heatmap (see [`atom_body`]) with `rows` (the tasks whose data each row is) at the
/// left, the number of the task that owns each block of atoms below, and `title` on top.
pub fn atom_heatmap(values: &[Vec<f64>], block: usize, rows: &[String], title: &str, path: &Path) -> Result<()> {
    let (bw, bh) = atom_size(values);
    let (row_lines, row_w) = wrapped(rows, ROW_CHARS);
    let m = Margins { left: row_w + 16, top: 6, right: 8, bottom: 2 * LINE + 8 };
    let f = Frame::new((bw, bh), title, m);
    f.write(path, |c| {
        atom_body(&mut f.body(c), values, block);
        for (i, lines) in row_lines.iter().enumerate() {
            label_right(c, lines, f.x0 - 8, f.y0 + i as u32 * 36 + 18);
        }
        let below = f.y0 + bh + 6;
        if block > 0 {
            let blocks = (bw - 1) / (12 * block as u32);
            for b in 0..blocks {
                let cx = f.x0 + b * 12 * block as u32 + 6 * block as u32;
                label_centred(c, &[format!("{}", b + 1)], cx, below);
            }
        }
        label_centred(c, &["atoms of task".to_string()], f.x0 + bw / 2, below + LINE);
    })
}

/// Size of [`curves_body`].
const CURVES: (u32, u32) = (480, 320);

/// Plot body of 480 x 320 px with a 20 px inner pad: axes, a dashed red line at `mark`, and one
/// curve of cumulative share per entry of `curves` (rising from 0 to 1 over its points, x scaled
/// to the plot width), coloured from dark to light.
fn curves_body(c: &mut dyn Canvas, curves: &[Vec<f64>], mark: f64) {
    let (w, h, pad) = (CURVES.0 as i64, CURVES.1 as i64, 20i64);
    let to_y = |v: f64| h - pad - ((v.clamp(0.0, 1.0)) * (h - 2 * pad) as f64).round() as i64;
    c.line((pad, h - pad), (w - pad, h - pad), INK);
    c.line((pad, pad), (pad, h - pad), INK);
    let ym = to_y(mark);
    for x in (pad..w - pad).step_by(12) {
        c.line((x, ym), ((x + 6).min(w - pad), ym), MARK);
    }
    for (k, curve) in curves.iter().enumerate() {
        let colour = colour(k as f64 / curves.len().max(2) as f64 * 0.9);
        let n = curve.len().max(1) as f64;
        let mut prev = (pad, to_y(0.0));
        for (i, &v) in curve.iter().enumerate() {
            let p = (pad + (((i + 1) as f64 / n) * (w - 2 * pad) as f64).round() as i64, to_y(v));
            c.line(prev, p, colour);
            prev = p;
        }
    }
}

/// Cumulative-share curves (see [`curves_body`]) with the y axis marked 0 and 100%, the mark's
/// share written at its line, the x axis explained by `x_label`, and `title` on top.
pub fn cumulative_curves(curves: &[Vec<f64>], mark: f64, x_label: &str, title: &str, path: &Path) -> Result<()> {
    let left = text::width("100%", S) + 12;
    let m = Margins { left, top: 6, right: text::width("99%", S) + 12, bottom: LINE + 8 };
    let f = Frame::new(CURVES, title, m);
    let (w, h, pad) = (CURVES.0, CURVES.1, 20u32);
    f.write(path, |c| {
        curves_body(&mut f.body(c), curves, mark);
        label_right(c, &["0".to_string()], f.x0 + pad - 4, f.y0 + h - pad);
        label_right(c, &["100%".to_string()], f.x0 + pad - 4, f.y0 + pad);
        let ym = f.y0 + h - pad - (mark.clamp(0.0, 1.0) * (h - 2 * pad) as f64).round() as u32;
        let mark_text = format!("{:.0}%", mark * 100.0);
        c.text(&mark_text, f.x0 + w + 4, ym.saturating_sub(3 * S), S, MARK);
        label_centred(c, &[x_label.to_string()], f.x0 + w / 2, f.y0 + h + 4);
    })
}

/// Size of [`bars_body`].
fn bars_size(values: &[f64]) -> (u32, u32) {
    (values.len().max(1) as u32 * 24 + 2 * 24, 240)
}

/// Bars of 24 px (0..=`max` over the plot height), each with its integer value above it.
fn bars_body(c: &mut dyn Canvas, values: &[f64], max: f64) {
    let (bw, pad) = (24u32, 24u32);
    let (w, h) = bars_size(values);
    c.rect(pad, h - pad, w - pad, h - pad + 2, INK);
    for (i, &v) in values.iter().enumerate() {
        let top = h - pad - ((v / max.max(1e-9)).clamp(0.0, 1.0) * (h - 3 * pad) as f64).round() as u32;
        let x = pad + i as u32 * bw;
        c.rect(x + 3, top, x + bw - 3, h - pad, colour(0.35));
        let value = format!("{}", v.round().max(0.0) as u32);
        let scale = if value.len() >= 3 { 1 } else { 2 };
        let tw = text::width(&value, scale);
        c.text(&value, x + bw.saturating_sub(tw) / 2, top.saturating_sub(font::H * scale + 3), scale, INK);
    }
}

/// A bar per value (see [`bars_body`]) with `x_label` under the axis and `title` on top.
pub fn bar_chart(values: &[f64], max: f64, x_label: &str, title: &str, path: &Path) -> Result<()> {
    let (bw, bh) = bars_size(values);
    // The label wraps to the figure's width, as wide as the body or the title.
    let width = Frame::new((bw, bh), title, Margins { left: 8, right: 8, ..Margins::default() }).width;
    let lines = font::wrap(x_label, (width / ((font::W + 1) * S)).max(8) as usize);
    let bottom = LINE + 4 + (lines.len() as u32).saturating_sub(1) * LINE;
    let f = Frame::new((bw, bh), title, Margins { left: 8, top: 0, right: 8, bottom });
    f.write(path, |c| {
        bars_body(&mut f.body(c), values, max);
        label_centred(c, &lines, f.x0 + bw / 2, f.y0 + bh);
    })
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

/// Gap between the panels of [`patch_body`].
const PATCH_GAP: u32 = 4;

/// `image` with each patch tinted by its value in `map` (`grid * grid` values, row-major; colours
/// scaled by `max`).
fn tinted(image: &RgbImage, map: &[f64], grid: usize, max: f64) -> RgbImage {
    let (w, h) = image.dimensions();
    RgbImage::from_fn(w, h, |x, y| {
        let (gx, gy) = ((x as usize * grid) / w as usize, (y as usize * grid) / h as usize);
        let v = map.get(gy * grid + gx).copied().unwrap_or(0.0) / max;
        let (p, c) = (image.get_pixel(x, y), colour(v));
        let blend = |a: u8, b: u8| ((a as f64 * 0.35) + (b as f64 * 0.65)).round() as u8;
        Rgb([blend(p[0], c[0]), blend(p[1], c[1]), blend(p[2], c[2])])
    })
}

/// The image, then one copy per map with each patch tinted by its value (`maps[k]` holds
/// `grid * grid` values, row-major; colours scaled to the largest value over all maps), side by
/// side with 4 px white gaps.
fn patch_body(c: &mut dyn Canvas, image: &RgbImage, maps: &[Vec<f64>], grid: usize) {
    let w = image.width();
    c.image(image, 0, 0);
    let max = maps.iter().flatten().copied().fold(0.0f64, f64::max).max(1e-12);
    for (k, map) in maps.iter().enumerate() {
        c.image(&tinted(image, map, grid, max), (k as u32 + 1) * (w + PATCH_GAP), 0);
    }
}

/// The image and its per-patch maps (see [`patch_body`]), `labels[k]` above panel `k` (the image
/// first), and `title` on top.
pub fn patch_panel(
    image: &RgbImage,
    maps: &[Vec<f64>],
    grid: usize,
    labels: &[String],
    title: &str,
    path: &Path,
) -> Result<()> {
    let panel = image.width() + PATCH_GAP;
    let size = (panel * (maps.len() as u32 + 1), image.height());
    let chars = (panel / ((font::W + 1) * S)).max(4) as usize;
    let lines: Vec<Vec<String>> = labels.iter().map(|l| font::wrap(l, chars)).collect();
    let header = lines.iter().map(Vec::len).max().unwrap_or(0) as u32 * LINE;
    let f = Frame::new(size, title, Margins { left: 8, top: header + 6, right: 8, bottom: 8 });
    f.write(path, |c| {
        patch_body(&mut f.body(c), image, maps, grid);
        for (k, l) in lines.iter().enumerate() {
            label_centred(c, l, f.x0 + k as u32 * panel + image.width() / 2, f.y0 - header - 4);
        }
    })
}

/// Bar width, gap between groups, height and pad of [`interval_body`].
const IV: (u32, u32, u32, u32) = (28, 20, 280, 24);

/// Size of [`interval_body`].
fn interval_size(groups: &[Vec<(f64, Option<f64>)>]) -> (u32, u32) {
    let (bw, gap, h, pad) = IV;
    let per = groups.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    (2 * pad + groups.len().max(1) as u32 * (per * bw + gap), h)
}

/// Grouped bars with 95% whiskers: `groups[g][k] = (mean, half-width)` on a 0..=`max` scale, one
/// colour per bar position `k` (the same series in every group), the rounded mean above each bar.
fn interval_body(c: &mut dyn Canvas, groups: &[Vec<(f64, Option<f64>)>], max: f64) {
    let (bw, gap, h, pad) = IV;
    let per = groups.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let (w, _) = interval_size(groups);
    c.rect(pad, h - pad, w - pad, h - pad + 2, INK);
    let plot = (h - 3 * pad) as f64;
    let to_y = |v: f64| h - pad - ((v / max.max(1e-9)).clamp(0.0, 1.0) * plot).round() as u32;
    for (g, bars) in groups.iter().enumerate() {
        for (k, &(mean, ci)) in bars.iter().enumerate() {
            let x = pad + g as u32 * (per * bw + gap) + k as u32 * bw;
            let top = to_y(mean);
            c.rect(x + 3, top, x + bw - 3, h - pad, series_colour(k, per as usize));
            if let Some(ci) = ci {
                let (y0, y1) = (to_y(mean + ci) as i64, to_y(mean - ci) as i64);
                let xc = (x + bw / 2) as i64;
                c.line((xc, y0), (xc, y1), INK);
                c.line((xc - 5, y0), (xc + 5, y0), INK);
                c.line((xc - 5, y1), (xc + 5, y1), INK);
            }
            let value = format!("{}", mean.round().max(0.0) as u32);
            let tw = text::width(&value, 1);
            let ty = to_y(mean + ci.unwrap_or(0.0)).saturating_sub(font::H + 4);
            c.text(&value, x + bw.saturating_sub(tw) / 2, ty, 1, INK);
        }
    }
}

/// Colour of series `k` of `n` in [`interval_bars`].
fn series_colour(k: usize, n: usize) -> Rgb<u8> {
    colour(k as f64 / n.max(2) as f64 * 0.9)
}

/// Grouped bars with 95% whiskers (see [`interval_body`]): `group_names[g]` under group `g`, a
/// legend of `series` (one colour per bar position) below, and `title` on top.
pub fn interval_bars(
    groups: &[Vec<(f64, Option<f64>)>],
    group_names: &[String],
    series: &[String],
    max: f64,
    title: &str,
    path: &Path,
) -> Result<()> {
    let (bw, bh) = interval_size(groups);
    let legend_h = series.len() as u32 * LINE;
    let legend_w = 24 + 12 * S + series.iter().map(|s| text::width(s, S)).max().unwrap_or(0) + 8;
    let right = legend_w.saturating_sub(bw).max(8);
    let m = Margins { left: 8, top: 4, right, bottom: 2 * LINE + legend_h + 8 };
    let f = Frame::new((bw, bh), title, m);
    let per = groups.iter().map(Vec::len).max().unwrap_or(1).max(1) as u32;
    let chars = ((per * 28) / ((font::W + 1) * S)).max(4) as usize;
    f.write(path, |c| {
        interval_body(&mut f.body(c), groups, max);
        for (g, name) in group_names.iter().enumerate() {
            let cx = f.x0 + 24 + g as u32 * (per * 28 + 20) + per * 14;
            label_centred(c, &font::wrap(name, chars), cx, f.y0 + bh - 20);
        }
        let top = f.y0 + bh + LINE + 4;
        for (k, name) in series.iter().enumerate() {
            let y = top + k as u32 * LINE;
            c.rect(f.x0 + 24, y, f.x0 + 24 + 7 * S, y + 7 * S, series_colour(k, per as usize));
            c.text(name, f.x0 + 24 + 12 * S, y, S, INK);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `draw` puts on a white raster canvas of `size`.
    fn raster(size: (u32, u32), draw: impl FnOnce(&mut dyn Canvas)) -> RgbImage {
        let mut img = RgbImage::from_pixel(size.0, size.1, WHITE);
        draw(&mut img);
        img
    }

    /// Whether any pixel of the rectangle has colour `c`.
    fn any(img: &RgbImage, (x0, y0, x1, y1): (u32, u32, u32, u32), c: Rgb<u8>) -> bool {
        (y0..y1.min(img.height())).any(|y| (x0..x1.min(img.width())).any(|x| *img.get_pixel(x, y) == c))
    }

    #[test]
    fn patch_panel_tints_the_strongest_patch_yellow() {
        let img = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let out = raster((24, 8), |c| patch_body(c, &img, &[vec![0.0, 1.0, 0.0, 0.0]], 2));
        assert_eq!(out.dimensions(), (24, 8));
        let c = colour(1.0);
        let tint = |v: u8| ((v as f64) * 0.65).round() as u8;
        assert_eq!(*out.get_pixel(12 + 6, 1), Rgb([tint(c[0]), tint(c[1]), tint(c[2])]), "top-right patch of the map");
        let x = tch::Tensor::zeros([3, 2, 2], (tch::Kind::Float, tch::Device::Cpu));
        let back = denormalize(&x).unwrap();
        assert_eq!(*back.get_pixel(0, 0), Rgb([123, 117, 104]), "the CLIP mean colour");
        // Framed: the labels are written above the panels, the panels are unchanged below them.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.png");
        let big = RgbImage::from_pixel(64, 64, Rgb([0, 0, 0]));
        patch_panel(&big, &[vec![0.0, 1.0, 0.0, 0.0]], 2, &["image".into(), "t1".into()], "", &p).unwrap();
        let framed = image::open(&p).unwrap().to_rgb8();
        let header = LINE + 6;
        assert_eq!(framed.dimensions(), (8 + 2 * 68 + 8, header + 64 + 8));
        assert!(any(&framed, (8, 0, 8 + 64, header - 4), INK), "the image's label");
        assert!(any(&framed, (8 + 68, 0, 8 + 68 + 64, header - 4), INK), "the map's label");
        assert_eq!(*framed.get_pixel(8 + 68 + 48, header + 8), Rgb([tint(c[0]), tint(c[1]), tint(c[2])]));
    }

    #[test]
    fn atom_figures_are_drawn_where_the_data_says() {
        let v = [vec![1.0, 0.0, 0.5, 0.0], vec![0.0, 0.0, 0.0, 1.0]];
        let img = raster(atom_size(&v), |c| atom_body(c, &v, 2));
        assert_eq!(img.dimensions(), (4 * 12 + 1, 72));
        assert_eq!(*img.get_pixel(6, 18), colour(1.0));
        assert_eq!(*img.get_pixel(30, 18), colour(0.5));
        assert_eq!(*img.get_pixel(42, 54), colour(1.0));
        assert_eq!(*img.get_pixel(24, 10), Rgb([0, 0, 0]), "block separator after 2 atoms");
        let img = raster(bars_size(&[10.0, 5.0]), |c| bars_body(c, &[10.0, 5.0], 10.0));
        // The full bar reaches the top of the plot area, the half bar only half way.
        let bar = |x: u32, y: u32| *img.get_pixel(x, y) == colour(0.35);
        assert!(bar(36, 3 * 24 + 2) && !bar(60, 3 * 24 + 2) && bar(60, 240 - 24 - 10));
        let img = raster(CURVES, |c| curves_body(c, &[vec![0.5, 0.9, 1.0]], 0.99));
        assert_eq!(*img.get_pixel(21, 20 + 3), Rgb([220, 30, 30]), "the 99% mark");

        // Framed figures: row labels left of the body, block numbers and axis labels below it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.png");
        let values = [vec![1.0, 0.0, 0.5, 0.0], vec![0.0, 0.0, 0.0, 1.0]];
        atom_heatmap(&values, 2, &["first".into(), "second".into()], "", &p).unwrap();
        let a = image::open(&p).unwrap().to_rgb8();
        let left = text::width("second", S) + 16;
        assert_eq!(a.dimensions(), (left + 49 + 8, 6 + 72 + 2 * LINE + 8));
        assert_eq!(*a.get_pixel(left + 6, 6 + 18), colour(1.0), "the body sits after the labels");
        assert!(any(&a, (0, 6, left - 8, 6 + 36), INK) && any(&a, (0, 6 + 36, left - 8, 6 + 72), INK));
        assert!(any(&a, (left, 6 + 72, left + 24, 6 + 72 + LINE), INK), "block number 1");
        let p = dir.path().join("c.png");
        cumulative_curves(&[vec![0.5, 0.9, 1.0]], 0.99, "atoms", "mass", &p).unwrap();
        let c = image::open(&p).unwrap().to_rgb8();
        assert!(any(&c, (0, 0, c.width(), LINE), INK), "the title");
        let p = dir.path().join("b.png");
        bar_chart(&[10.0, 5.0], 10.0, "layers", "atoms for 99%", &p).unwrap();
        let b = image::open(&p).unwrap().to_rgb8();
        assert!(any(&b, (0, b.height() - LINE, b.width(), b.height()), INK), "the x label");
    }

    #[test]
    fn heatmap_cells_have_the_colour_of_their_value() {
        let v = [vec![0.0, 100.0], vec![50.0, 7.0]];
        let img = raster(matrix_size(&v, 72, 48), |c| matrix_body(c, &v, 72, 48));
        assert_eq!(img.dimensions(), (144, 96));
        // Corners of each cell (away from the digits) carry the value's colour.
        assert_eq!(*img.get_pixel(3, 3), colour(0.0));
        assert_eq!(*img.get_pixel(72 + 3, 3), colour(1.0));
        assert_eq!(*img.get_pixel(3, 48 + 3), colour(0.5));
        // The value "7" is written in the cell, in white on its dark colour, away from the corners.
        let white = (48 + 8..96 - 8).flat_map(|y| (72 + 8..144 - 8).map(move |x| (x, y)));
        assert!(white.filter(|&(x, y)| img.get_pixel(x, y)[0] > 200).count() > 10, "the digit");
        assert_eq!(colour(0.0), Rgb([68, 1, 84]));
        assert_eq!(colour(1.0), Rgb([253, 231, 37]));

        // Framed: the title on top, column labels above their columns, row labels at the left.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.png");
        let names = ["bbc-topic".to_string(), "wordnet-verb-base".to_string()];
        matrix_heatmap(&[vec![0.0, 100.0], vec![50.0, 7.0]], &names, &names, "score", &path).unwrap();
        let m = image::open(&path).unwrap().to_rgb8();
        // Column width: the widest wrapped column label ("bbc-topic", "wordnet-", "verb-base").
        let widest = ["bbc-topic", "wordnet-", "verb-base"].map(|l| text::width(l, S)).into_iter().max().unwrap();
        let (row_w, cw) = (text::width("wordnet-verb-", S), (widest + 12).max(72));
        let (x0, y0) = (row_w + 16, LINE + 8 + 2 * LINE + 6);
        assert_eq!(*m.get_pixel(x0 + 3, y0 + 3), colour(0.0), "cell (0, 0) after the margins");
        assert_eq!(*m.get_pixel(x0 + cw + 3, y0 + 48 + 3), colour(0.07));
        assert_eq!(m.width(), x0 + 2 * cw + 8);
        assert!(any(&m, (0, 0, m.width(), LINE), INK), "the title");
        // "wordnet-verb-base" wraps onto two lines above the second column.
        assert!(any(&m, (x0 + cw, y0 - 2 * LINE - 4, x0 + 2 * cw, y0 - LINE - 4), INK));
        assert!(any(&m, (x0 + cw, y0 - LINE - 4, x0 + 2 * cw, y0 - 4), INK));
        assert!(!any(&m, (x0, y0 - 2 * LINE - 4, x0 + cw, y0 - LINE - 4), INK), "bbc-topic: one line, at the bottom");
        assert!(any(&m, (x0, y0 - LINE - 4, x0 + cw, y0 - 4), INK));
        assert!(any(&m, (0, y0, x0 - 8, y0 + 48), INK), "row label");
        // The SVG next to it: the same size, the four cells, the labels and values as text.
        let svg = std::fs::read_to_string(path.with_extension("svg")).unwrap();
        assert!(svg.contains(&format!("width=\"{}\" height=\"{}\"", m.width(), m.height())), "{svg}");
        assert_eq!(svg.matches("<rect ").count(), 1 + 4, "background and cells");
        for label in ["score", "bbc-topic", "wordnet-", "verb-base", ">100<", ">7<"] {
            assert!(svg.contains(label), "{label} in {svg}");
        }
    }

    #[test]
    fn interval_bars_have_their_height_and_whiskers() {
        let g = [vec![(100.0, None), (50.0, Some(10.0))]];
        let img = raster(interval_size(&g), |c| interval_body(c, &g, 100.0));
        // Two bars of 28 px in one group: width 2 * 24 + 2 * 28 + 20, height 280.
        assert_eq!(img.dimensions(), (124, 280));
        let (floor, plot) = (280 - 24, 280.0 - 72.0);
        let y = |v: f64| floor - (v / 100.0 * plot).round() as u32;
        // Bar 1 (full) is filled at the top of the plot; bar 2 only up to 50.
        assert_eq!(*img.get_pixel(24 + 5, y(100.0) + 2), colour(0.0));
        assert_eq!(*img.get_pixel(24 + 28 + 5, y(50.0) + 2), colour(0.45));
        assert_eq!(*img.get_pixel(24 + 28 + 5, y(50.0) - 4), WHITE);
        // The whisker of bar 2 spans 40..60 at its centre.
        let xc = 24 + 28 + 14;
        assert_eq!(*img.get_pixel(xc, y(58.0)), INK);
        assert_eq!(*img.get_pixel(xc + 4, y(60.0)), INK, "cap");

        // Framed: a legend entry per series with its colour, the group's name under the axis.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.png");
        let series = ["seq-lora".to_string(), "moram-novelty-gated".to_string()];
        interval_bars(&[vec![(100.0, None), (50.0, Some(10.0))]], &["OP".into()], &series, 100.0, "", &p).unwrap();
        let f = image::open(&p).unwrap().to_rgb8();
        let (x0, y0) = (8, 4);
        assert_eq!(*f.get_pixel(x0 + 24 + 5, y0 + y(100.0) + 2), colour(0.0));
        let legend = y0 + 280 + LINE + 4;
        assert_eq!(*f.get_pixel(x0 + 24 + 2, legend + 2), colour(0.0));
        assert_eq!(*f.get_pixel(x0 + 24 + 2, legend + LINE + 2), colour(0.45));
        assert_eq!(f.width(), x0 + 24 + 12 * S + text::width("moram-novelty-gated", S) + 8);
        assert!(any(&f, (x0 + 24, y0 + 260, x0 + 24 + 56, y0 + 276), INK), "the group name OP");
    }
}
