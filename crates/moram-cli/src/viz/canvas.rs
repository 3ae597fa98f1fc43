//! Where the figures are drawn: a [`Canvas`] is either a raster image (the PNG) or an SVG
//! document (the same figure as vector shapes and text, next to the PNG), so each figure is
//! written once and comes out in both formats.

use super::text;
use base64::Engine;
use image::{Rgb, RgbImage};

/// The drawing operations the figures use. Coordinates are pixels from the top-left corner.
pub trait Canvas {
    /// Fills the rectangle `[x0, x1) x [y0, y1)`.
    fn rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>);
    /// A line segment from `a` to `b`, 2 px thick.
    fn line(&mut self, a: (i64, i64), b: (i64, i64), c: Rgb<u8>);
    /// `s` with the top of its capitals at `y` and its left edge at `x`, at `scale` (see
    /// [`text`]).
    fn text(&mut self, s: &str, x: u32, y: u32, scale: u32, c: Rgb<u8>);
    /// A raster picture with its top-left corner at `(x, y)`.
    fn image(&mut self, img: &RgbImage, x: u32, y: u32);
}

impl Canvas for RgbImage {
    fn rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
        for y in y0..y1.min(self.height()) {
            for x in x0..x1.min(self.width()) {
                self.put_pixel(x, y, c);
            }
        }
    }

    /// Bresenham, with the pixels right of and below each point also set.
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            for (ox, oy) in [(0, 0), (1, 0), (0, 1)] {
                let (px, py) = (x + ox, y + oy);
                if px >= 0 && py >= 0 && (px as u32) < self.width() && (py as u32) < self.height() {
                    self.put_pixel(px as u32, py as u32, c);
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

    fn text(&mut self, s: &str, x: u32, y: u32, scale: u32, c: Rgb<u8>) {
        text::draw(self, s, x, y, scale, c);
    }

    fn image(&mut self, img: &RgbImage, x: u32, y: u32) {
        image::imageops::replace(self, img, x as i64, y as i64);
    }
}

/// An SVG document of `width` x `height` pixels on a white background.
pub struct Svg {
    width: u32,
    height: u32,
    body: String,
}

fn hex(c: Rgb<u8>) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// `s` with the characters XML gives a meaning escaped.
fn escape(s: &str) -> String {
    s.chars()
        .map(|ch| match ch {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

impl Svg {
    /// An empty (white) document.
    pub fn new(width: u32, height: u32) -> Svg {
        Svg { width, height, body: String::new() }
    }

    /// The document's text.
    pub fn finish(self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
             <rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>\n{body}</svg>\n",
            w = self.width,
            h = self.height,
            body = self.body
        )
    }
}

impl Canvas for Svg {
    fn rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
        if x1 > x0 && y1 > y0 {
            self.body += &format!(
                "<rect x=\"{x0}\" y=\"{y0}\" width=\"{}\" height=\"{}\" fill=\"{}\"/>\n",
                x1 - x0,
                y1 - y0,
                hex(c)
            );
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
        // The raster line covers [x, x + 2) around each point: centre the 2 px stroke there.
        self.body += &format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\" stroke-linecap=\"square\"/>\n",
            x0 as f64 + 0.5,
            y0 as f64 + 0.5,
            x1 as f64 + 0.5,
            y1 as f64 + 0.5,
            hex(c)
        );
    }

    fn text(&mut self, s: &str, x: u32, y: u32, scale: u32, c: Rgb<u8>) {
        let (baseline, size) = text::svg_metrics(y, scale);
        self.body += &format!(
            "<text x=\"{x}\" y=\"{baseline:.1}\" font-family=\"DejaVu Sans, Verdana, sans-serif\" font-size=\"{size:.2}\" fill=\"{}\">{}</text>\n",
            hex(c),
            escape(s)
        );
    }

    fn image(&mut self, img: &RgbImage, x: u32, y: u32) {
        let mut png = Vec::new();
        let encoded = image::DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png);
        if encoded.is_ok() {
            self.body += &format!(
                "<image x=\"{x}\" y=\"{y}\" width=\"{}\" height=\"{}\" href=\"data:image/png;base64,{}\"/>\n",
                img.width(),
                img.height(),
                base64::engine::general_purpose::STANDARD.encode(&png)
            );
        }
    }
}

/// A canvas seen with its origin moved to `(dx, dy)`: a plot body drawn at its own origin lands
/// inside the figure's margins.
pub struct Offset<'a> {
    /// The canvas drawn on.
    pub inner: &'a mut dyn Canvas,
    /// Where the origin goes.
    pub dx: u32,
    /// See `dx`.
    pub dy: u32,
}

impl Canvas for Offset<'_> {
    fn rect(&mut self, x0: u32, y0: u32, x1: u32, y1: u32, c: Rgb<u8>) {
        self.inner.rect(x0 + self.dx, y0 + self.dy, x1 + self.dx, y1 + self.dy, c);
    }
    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb<u8>) {
        let (dx, dy) = (self.dx as i64, self.dy as i64);
        self.inner.line((x0 + dx, y0 + dy), (x1 + dx, y1 + dy), c);
    }
    fn text(&mut self, s: &str, x: u32, y: u32, scale: u32, c: Rgb<u8>) {
        self.inner.text(s, x + self.dx, y + self.dy, scale, c);
    }
    fn image(&mut self, img: &RgbImage, x: u32, y: u32) {
        self.inner.image(img, x + self.dx, y + self.dy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_holds_the_shapes_and_escaped_text() {
        let mut svg = Svg::new(100, 50);
        {
            let mut c = Offset { inner: &mut svg, dx: 10, dy: 5 };
            c.rect(0, 0, 20, 10, Rgb([255, 0, 0]));
            c.line((0, 0), (5, 5), Rgb([0, 0, 0]));
            c.text("a<b & café", 1, 2, 2, Rgb([0, 0, 0]));
            c.image(&RgbImage::from_pixel(2, 2, Rgb([1, 2, 3])), 0, 0);
        }
        let s = svg.finish();
        assert!(s.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\" height=\"50\""), "{s}");
        assert!(s.contains("<rect x=\"10\" y=\"5\" width=\"20\" height=\"10\" fill=\"#ff0000\"/>"), "{s}");
        assert!(s.contains("<line x1=\"10.5\" y1=\"5.5\" x2=\"15.5\" y2=\"10.5\""), "{s}");
        assert!(s.contains(">a&lt;b &amp; café</text>"), "{s}");
        assert!(
            s.contains("<image x=\"10\" y=\"5\" width=\"2\" height=\"2\" href=\"data:image/png;base64,iVBOR"),
            "{s}"
        );
        assert!(s.trim_end().ends_with("</svg>"));
        // The raster canvas gets the same shapes.
        let mut img = RgbImage::from_pixel(100, 50, Rgb([255, 255, 255]));
        Offset { inner: &mut img, dx: 10, dy: 5 }.rect(0, 0, 20, 10, Rgb([255, 0, 0]));
        assert_eq!(*img.get_pixel(10, 5), Rgb([255, 0, 0]));
        assert_eq!(*img.get_pixel(29, 14), Rgb([255, 0, 0]));
        assert_eq!(*img.get_pixel(30, 14), Rgb([255, 255, 255]));
    }
}
