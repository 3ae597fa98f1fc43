//! Text on the figures: DejaVu Sans (the TrueType font matplotlib ships, installed by
//! `cargo xtask setup` as the `fonts` asset; never committed), rasterised with anti-aliasing, so
//! labels keep their case and non-ASCII names show. Without the asset (a plain `cargo run` on a
//! machine that never ran setup) the built-in 5x7 bitmap font ([`super::font`]) draws them in
//! upper case instead, with one warning.
//!
//! Sizes are in the bitmap font's units so the layout code has one scale for both faces: at
//! `scale` s a line is `(font::H + 3) * s` pixels high and capitals are about `font::H * s` tall.

use super::font;
use ab_glyph::{Font, FontArc, PxScale, ScaleFont};
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The font file under the asset folder.
pub const FONT_FILE: &str = "fonts/DejaVuSans.ttf";

/// A font's capital height (of `H`), measured once at load: as a share of what `ab_glyph`'s
/// scale sizes (ascent minus descent) and of the em (what a CSS font size sizes).
#[derive(Clone, Copy, Debug)]
pub struct CapHeight {
    of_height: f32,
    of_em: f32,
}

impl CapHeight {
    fn of(f: &FontArc) -> CapHeight {
        let cap = f.outline(f.glyph_id('H')).map(|o| o.bounds.height()).filter(|h| *h > 0.0);
        // DejaVu Sans' proportions when the font has no usable `H`.
        CapHeight {
            of_height: cap.map_or(0.63, |cap| cap / f.height_unscaled()),
            of_em: cap.zip(f.units_per_em()).map_or(0.729, |(cap, em)| cap / em),
        }
    }
}

/// The face the figures use: the TrueType font when installed, the bitmap font otherwise.
#[derive(Clone)]
pub enum Face {
    /// DejaVu Sans (or another TrueType font), with its `ab_glyph` scale per unit of cap height.
    Ttf(FontArc, CapHeight),
    /// The built-in 5x7 font.
    Bitmap,
}

impl Face {
    /// The TrueType font in the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Face> {
        let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        let font = FontArc::try_from_vec(bytes)
            .map_err(|e| anyhow::anyhow!("{} is not a TrueType/OpenType font: {e}", path.display()))?;
        let cap = CapHeight::of(&font);
        Ok(Face::Ttf(font, cap))
    }

    /// The process's face: [`FONT_FILE`] under the asset folder, loaded once; the bitmap font
    /// (with a warning naming what is missing) when it cannot be read.
    pub fn global() -> &'static Face {
        static FACE: OnceLock<Face> = OnceLock::new();
        FACE.get_or_init(|| match font_path() {
            Some(path) => Face::load(&path).unwrap_or_else(|e| {
                tracing::warn!("figure labels in the built-in bitmap font: {e:#} (`cargo xtask setup` installs the font)");
                Face::Bitmap
            }),
            None => {
                tracing::warn!("figure labels in the built-in bitmap font: no asset folder (`cargo xtask setup` installs the font)");
                Face::Bitmap
            }
        })
    }

    /// The `ab_glyph` scale (which sizes ascent minus descent) at which the font's capitals (`H`)
    /// are `font::H * scale` pixels tall.
    fn px(cap: CapHeight, scale: u32) -> PxScale {
        PxScale::from(font::H as f32 * scale as f32 / cap.of_height)
    }

    /// Width in pixels of `text` at `scale`.
    pub fn width(&self, text: &str, scale: u32) -> u32 {
        match self {
            Face::Bitmap => font::width(text, scale),
            Face::Ttf(f, cap) => {
                let f = f.as_scaled(Self::px(*cap, scale));
                let mut w = 0.0f32;
                let mut prev = None;
                for c in text.chars() {
                    let id = f.glyph_id(c);
                    if let Some(p) = prev {
                        w += f.kern(p, id);
                    }
                    w += f.h_advance(id);
                    prev = Some(id);
                }
                w.ceil() as u32
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)` (the top of the capitals, as the bitmap
    /// font's rows) at `scale`, blending `colour` over what is there by the glyph's coverage.
    pub fn draw(&self, img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, colour: Rgb<u8>) {
        let (f, cap) = match self {
            Face::Bitmap => return font::draw(img, text, x, y, scale, colour),
            Face::Ttf(f, cap) => (f, *cap),
        };
        let px = Self::px(cap, scale);
        let sf = f.as_scaled(px);
        // Baseline below the capitals' top.
        let baseline = y as f32 + font::H as f32 * scale as f32;
        let mut caret = x as f32;
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                caret += sf.kern(p, id);
            }
            let glyph = id.with_scale_and_position(px, ab_glyph::point(caret, baseline));
            caret += sf.h_advance(id);
            prev = Some(id);
            let Some(outline) = f.outline_glyph(glyph) else { continue };
            let b = outline.px_bounds();
            outline.draw(|gx, gy, coverage| {
                let (px, py) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                if px < 0 || py < 0 || px >= img.width() as i64 || py >= img.height() as i64 || coverage <= 0.0 {
                    return;
                }
                let p = img.get_pixel_mut(px as u32, py as u32);
                let a = coverage.clamp(0.0, 1.0);
                for k in 0..3 {
                    p[k] = (p[k] as f32 * (1.0 - a) + colour[k] as f32 * a).round() as u8;
                }
            });
        }
    }
}

/// Where SVG puts the baseline of text whose capitals start at `y`, and the CSS font size (the em)
/// that makes its capitals `font::H * scale` pixels tall, in the process's face's proportions.
pub fn svg_metrics(y: u32, scale: u32) -> (f64, f64) {
    let cap_em = match Face::global() {
        Face::Ttf(_, cap) => cap.of_em as f64,
        Face::Bitmap => 0.729,
    };
    let cap = (font::H * scale) as f64;
    (y as f64 + cap, cap / cap_em)
}

/// `<assets>/fonts/DejaVuSans.ttf` when the asset folder is known.
fn font_path() -> Option<PathBuf> {
    moram_assets::assets_dir().ok().map(|d| d.join(FONT_FILE))
}

/// Width of `text` at `scale` in the process's face.
pub fn width(text: &str, scale: u32) -> u32 {
    Face::global().width(text, scale)
}

/// Draws `text` in the process's face (see [`Face::draw`]).
pub fn draw(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, colour: Rgb<u8>) {
    Face::global().draw(img, text, x, y, scale, colour)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installed font, where setup ran (`cargo xtask test`); `None` with the reason printed
    /// in a plain `cargo test` without setup.
    fn installed() -> Option<Face> {
        moram_assets::test_asset(FONT_FILE).map(|p| Face::load(&p).expect("the installed font loads"))
    }

    fn ink(img: &RgbImage, (x0, x1): (u32, u32)) -> usize {
        (0..img.height())
            .flat_map(|y| (x0..x1).map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 128)
            .count()
    }

    #[test]
    fn the_true_type_face_keeps_case_and_draws_non_ascii() {
        let Some(face) = installed() else { return };
        let white = Rgb([255, 255, 255]);
        let draw = |s: &str| {
            let mut img = RgbImage::from_pixel(120, 30, white);
            face.draw(&mut img, s, 2, 4, 2, Rgb([0, 0, 0]));
            img
        };
        // Mixed case: `op` and `OP` are different pictures, and lower case is narrower.
        assert_ne!(draw("op"), draw("OP"));
        assert!(face.width("op", 2) < face.width("OP", 2));
        // A name with accents is drawn with its accents, not as `?` or the bare letters.
        let (accented, bare) = (draw("café"), draw("cafe"));
        assert_ne!(accented, bare);
        assert!(ink(&accented, (0, 120)) > ink(&bare, (0, 120)));
        // Capitals are about `font::H * scale` = 14 px tall at scale 2, from the given top.
        let t = draw("T");
        let rows: Vec<u32> = (0..30).filter(|&y| (0..120).any(|x| t.get_pixel(x, y)[0] < 128)).collect();
        let (top, bottom) = (rows[0], rows[rows.len() - 1]);
        assert!((3..=5).contains(&top) && (16..=19).contains(&bottom), "capital T spans rows {top}..={bottom}");
        // Widths grow with the scale and the text.
        assert!(face.width("ab", 2) > face.width("a", 2) && face.width("a", 3) > face.width("a", 2));
        assert_eq!(face.width("", 2), 0);
    }

    #[test]
    fn a_missing_or_broken_font_file_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.ttf");
        let e = Face::load(&missing).err().expect("missing").to_string();
        assert!(e.contains("none.ttf"), "{e}");
        let junk = dir.path().join("junk.ttf");
        std::fs::write(&junk, b"not a font").unwrap();
        let e = Face::load(&junk).err().expect("junk").to_string();
        assert!(e.contains("junk.ttf") && e.contains("not a TrueType"), "{e}");
        // The bitmap face measures as the bitmap font does.
        assert_eq!(Face::Bitmap.width("T1", 2), font::width("T1", 2));
    }
}
