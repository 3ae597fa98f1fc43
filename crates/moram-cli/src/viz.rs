//! PNG figures drawn with the `image` crate: the accuracy matrix as a heatmap with each cell's
//! value written in a small built-in digit font (no font files needed).

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
            for y in y0 + 1..y0 + ch - 1 {
                for x in x0 + 1..x0 + cw - 1 {
                    img.put_pixel(x, y, c);
                }
            }
            let n = v.round().clamp(0.0, 999.0) as u32;
            let scale = 4;
            let w = (n.to_string().len() as u32 * 4 - 1) * scale;
            let text = if v > 60.0 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) };
            draw_number(&mut img, n, x0 + (cw - w) / 2, y0 + (ch - 5 * scale) / 2, scale, text);
        }
    }
    img.save(path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
