//! NumGLUE answer matching (`docs/protocol.md`, "NumGLUE").
//!
//! Two rule sets, both with Python string semantics:
//! - [`official`]: the copy of the Qwen2.5-Math parser in the official MoRAM evaluation code, which
//!   produced the paper's TRACE numbers (`extract_answer`, `strip_string`, `math_equal` without the
//!   sympy step). This is the default (`numglue_accuracy`).
//! - [`upstream`]: the upstream Qwen2.5-Math parser as upstream TRACE uses it (comma removal, the
//!   last number of `-?\d*\.?\d+`, trimmed `:` `.` `/`, the last `\boxed{}`), selectable as
//!   `numglue_accuracy_upstream`.

use super::text::{is_py_space, py_strip};
use regex::Regex;
use std::sync::LazyLock;

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).expect("static regex")
}

/// The zero of every run of ten Unicode decimal digits (category Nd, Unicode 14 as Python 3.11
/// knows it): Python's `float()` and `int()` accept any of them.
const DIGIT_ZEROS: [u32; 66] = [
    0x30, 0x660, 0x6f0, 0x7c0, 0x966, 0x9e6, 0xa66, 0xae6, 0xb66, 0xbe6, 0xc66, 0xce6, 0xd66, 0xde6, 0xe50, 0xed0,
    0xf20, 0x1040, 0x1090, 0x17e0, 0x1810, 0x1946, 0x19d0, 0x1a80, 0x1a90, 0x1b50, 0x1bb0, 0x1c40, 0x1c50, 0xa620,
    0xa8d0, 0xa900, 0xa9d0, 0xa9f0, 0xaa50, 0xabf0, 0xff10, 0x104a0, 0x10d30, 0x11066, 0x110f0, 0x11136, 0x111d0,
    0x112f0, 0x11450, 0x114d0, 0x11650, 0x116c0, 0x11730, 0x118e0, 0x11950, 0x11c50, 0x11d50, 0x11da0, 0x16a60,
    0x16ac0, 0x16b50, 0x1d7ce, 0x1d7d8, 0x1d7e2, 0x1d7ec, 0x1d7f6, 0x1e140, 0x1e2f0, 0x1e950, 0x1fbf0,
];

/// The value of a Unicode decimal digit, as Python's `unicodedata.decimal`.
fn decimal_digit(c: char) -> Option<u32> {
    let cp = c as u32;
    DIGIT_ZEROS.iter().find(|&&z| cp >= z && cp < z + 10).map(|z| cp - z)
}

/// `s` with Unicode digits as ASCII and PEP 515 underscores (only between digits) removed; `None`
/// where Python would reject the underscores.
fn python_number_text(s: &str) -> Option<String> {
    let chars: Vec<char> =
        s.chars().map(|c| decimal_digit(c).and_then(|d| char::from_digit(d, 10)).unwrap_or(c)).collect();
    let mut out = String::with_capacity(chars.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            let digit = |j: Option<&char>| j.is_some_and(|c| c.is_ascii_digit());
            if !(i > 0 && digit(chars.get(i - 1)) && digit(chars.get(i + 1))) {
                return None;
            }
            continue;
        }
        out.push(c);
    }
    Some(out)
}

static PY_FLOAT: LazyLock<Regex> = LazyLock::new(|| re(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"));
static PY_INT: LazyLock<Regex> = LazyLock::new(|| re(r"^[+-]?\d+$"));

/// Python's `float(s)` for a string: surrounding whitespace, any Unicode decimal digits,
/// underscores between digits, `inf`/`infinity`/`nan` in any case.
pub fn py_float(s: &str) -> Option<f64> {
    let t = python_number_text(py_strip(s))?;
    let lower = t.to_ascii_lowercase();
    let (sign, body) = match lower.strip_prefix('-') {
        Some(rest) => (-1.0, rest),
        None => (1.0, lower.strip_prefix('+').unwrap_or(&lower)),
    };
    match body {
        "inf" | "infinity" => return Some(sign * f64::INFINITY),
        "nan" => return Some(f64::NAN),
        _ => {}
    }
    if !PY_FLOAT.is_match(&t) || !t.is_ascii() {
        return None;
    }
    t.parse().ok()
}

/// Python's `int(s)` for a string (as `_fix_a_slash_b` uses it), as its decimal text.
fn py_int_text(s: &str) -> Option<String> {
    let t = python_number_text(py_strip(s))?;
    if !PY_INT.is_match(&t) || !t.is_ascii() {
        return None;
    }
    let negative = t.starts_with('-');
    let digits = t.trim_start_matches(['+', '-']).trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    Some(if negative && digits != "0" { format!("-{digits}") } else { digits.to_string() })
}

/// Python's `math.isclose(a, b, rel_tol)` with `abs_tol = 0`.
fn is_close(a: f64, b: f64, rel_tol: f64) -> bool {
    if a == b {
        return true;
    }
    if a.is_infinite() || b.is_infinite() {
        return false;
    }
    let diff = (a - b).abs();
    diff <= (rel_tol * b.abs()).max(rel_tol * a.abs())
}

/// The official rules (see the module docs).
pub mod official {
    use super::*;

    /// `find_box`: the text after the last `boxed`: brace-matched when it starts with `{` (an
    /// unclosed brace keeps everything read), else up to the first `$`, stripped; "" without `boxed`.
    pub fn find_box(s: &str) -> String {
        let Some(tail) = s.rsplit("boxed").next().filter(|_| s.contains("boxed")) else {
            return String::new();
        };
        let Some(rest) = tail.strip_prefix('{') else {
            return py_strip(tail.split('$').next().unwrap_or("")).to_string();
        };
        let mut depth = 1usize;
        let mut out = String::new();
        for c in rest.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
            out.push(c);
        }
        out
    }

    static LAST_NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"-?\d+\.?\d*"));

    /// `extract_answer`: the normalised content of the last `boxed`, else the last match of
    /// `-?\d+\.?\d*` (no comma removal), else the stripped text.
    pub fn extract_answer(s: &str) -> String {
        let boxed = find_box(s);
        if !boxed.is_empty() {
            return strip_string(&boxed);
        }
        match LAST_NUMBER.find_iter(s).last() {
            Some(m) => m.as_str().to_string(),
            None => py_strip(s).to_string(),
        }
    }

    static ARRAY_BEGIN: LazyLock<Regex> = LazyLock::new(|| re(r"\\begin\{array\}\{.*?\}"));
    static TEXT_AT_END: LazyLock<Regex> = LazyLock::new(|| re(r"\\text\{.*?\}$"));
    static TEXT: LazyLock<Regex> = LazyLock::new(|| re(r"\\text\{(.*?)\}"));
    static MBOX: LazyLock<Regex> = LazyLock::new(|| re(r"\\mbox\{.*?\}"));
    static TRAILING_ZEROS: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+)\.0*([^\d])"));
    static TRAILING_ZEROS_END: LazyLock<Regex> = LazyLock::new(|| re(r"(\d+)\.0*$"));
    static SQRT: LazyLock<Regex> = LazyLock::new(|| re(r"\\sqrt(\w+)"));

    /// `strip_string`: the official normalisation of an answer, in its order of steps.
    pub fn strip_string(x: &str) -> String {
        let mut s = py_strip(x).replace('\n', "");
        s = s.trim_end_matches('.').to_string();
        s = s.replace("\\!", "");
        s = ARRAY_BEGIN.replace_all(&s, "\\begin{pmatrix}").into_owned();
        s = s.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix");
        s = s.replace("tfrac", "frac").replace("dfrac", "frac");
        s = s.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge");
        s = s.replace("\\left", "").replace("\\right", "").replace("\\{", "{").replace("\\}", "}");
        let without_unit = py_strip(&TEXT_AT_END.replace(&s, "")).to_string();
        if !without_unit.is_empty() && without_unit != s {
            s = without_unit;
        }
        s = s.replace("^{\\circ}", "").replace("^\\circ", "");
        s = s.replace("\\$", "").replace('$', "");
        s = s.replace("\\(", "").replace("\\)", "");
        s = TEXT.replace_all(&s, "${1}").into_owned();
        for key in ["x=", "y=", "z=", "x\\in", "y\\in", "z\\in", "x\\to", "y\\to", "z\\to"] {
            s = s.replace(key, "");
        }
        s = s.replace("\\emptyset", "{}").replace("(-\\infty,\\infty)", "\\mathbb{R}");
        s = s.replace("\\%", "").replace('%', "");
        s = s.replace(" .", " 0.").replace("{.", "{0.");
        s = s.replace("infinity", "\\infty");
        if !s.contains("\\infty") {
            s = s.replace("inf", "\\infty");
        }
        s = s.replace("+\\inity", "\\infty");
        s = s.replace("and", "").replace("\\mathbf", "");
        s = MBOX.replace_all(&s, "").into_owned();
        s = s.replace(['\'', '"'], "");
        if s.contains('j') && !s.contains('i') {
            s = s.replace('j', "i");
        }
        s = TRAILING_ZEROS.replace_all(&s, "${1}${2}").into_owned();
        s = TRAILING_ZEROS_END.replace_all(&s, "${1}").into_owned();
        if s.is_empty() {
            return s;
        }
        if s.starts_with('.') {
            s.insert(0, '0');
        }
        let parts: Vec<&str> = s.split('=').collect();
        if parts.len() == 2 && parts[0].chars().count() <= 2 {
            s = parts[1].to_string();
        }
        s = SQRT.replace_all(&s, "\\sqrt{${1}}").into_owned();
        s = s.replace(' ', "");
        s = fix_fracs(&s);
        fix_a_slash_b(&s)
    }

    /// `_fix_fracs`: `\frac12` -> `\frac{1}{2}`, `\frac1{2}` -> `\frac{1}{2}`; a `\frac` followed
    /// by fewer than two characters leaves the string unchanged.
    fn fix_fracs(s: &str) -> String {
        let mut parts = s.split("\\frac");
        let mut out = parts.next().unwrap_or("").to_string();
        for sub in parts {
            out.push_str("\\frac");
            if sub.starts_with('{') {
                out.push_str(sub);
                continue;
            }
            let mut chars = sub.chars();
            let (Some(a), Some(b)) = (chars.next(), chars.next()) else {
                return s.to_string();
            };
            let post: String = chars.collect();
            if b != '{' {
                out.push_str(&format!("{{{a}}}{{{b}}}{post}"));
            } else {
                out.push_str(&format!("{{{a}}}{b}{post}"));
            }
        }
        out
    }

    /// `_fix_a_slash_b`: `a/b` with integers (or `sqrt` expressions) written canonically becomes
    /// `\frac{a}{b}`.
    fn fix_a_slash_b(s: &str) -> String {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() != 2 {
            return s.to_string();
        }
        let side = |t: &str| if t.contains("sqrt") { Some(t.to_string()) } else { py_int_text(t) };
        match (side(parts[0]), side(parts[1])) {
            (Some(a), Some(b)) if format!("{a}/{b}") == s => format!("\\frac{{{a}}}{{{b}}}"),
            _ => s.to_string(),
        }
    }

    /// `parse_digits`: `float` of the text without commas, else (after a trailing `%`, then `\`)
    /// that float / 100.
    fn parse_digits(v: &str) -> Option<f64> {
        let t = v.replace(',', "");
        if let Some(x) = py_float(&t) {
            return Some(x);
        }
        let t = t.strip_suffix('%')?;
        let t = t.strip_suffix('\\').unwrap_or(t);
        py_float(t).map(|x| x / 100.0)
    }

    /// `math_equal(prediction, reference)` with percentages and closeness on, without the sympy
    /// step (a documented deviation: `2*4` against `8` is not recognised).
    pub fn math_equal(p: &str, r: &str) -> bool {
        if py_strip(p).to_lowercase() == py_strip(r).to_lowercase() {
            return true;
        }
        if let (Some(pv), Some(rv)) = (parse_digits(p), parse_digits(r)) {
            return [rv / 100.0, rv, rv * 100.0].into_iter().any(|t| is_close(t, pv, 1e-4));
        }
        if p.is_empty() {
            return false;
        }
        let (r, p) = (py_strip(r), py_strip(p));
        let (mut ps, mut rs) = (p.to_string(), r.to_string());
        let wrapped = |s: &str, o: char, c: char| s.starts_with(o) && s.ends_with(c);
        if (wrapped(p, '[', ']') && !r.starts_with('(')) || (wrapped(p, '(', ')') && !r.starts_with('[')) {
            let brackets = |c: char| matches!(c, '[' | ']' | '(' | ')');
            ps = ps.trim_matches(brackets).to_string();
            rs = rs.trim_matches(brackets).to_string();
        }
        let drop = |s: &str| s.replace(['{', '}', '(', ')'], "");
        if drop(&ps).to_lowercase() == drop(&rs).to_lowercase() {
            return true;
        }
        let lhs_short =
            |s: &str| s.matches('=').count() == 1 && py_strip(s.split('=').next().unwrap_or("")).chars().count() <= 2;
        let rhs = |s: &str| s.split('=').nth(1).unwrap_or("").to_string();
        if lhs_short(p) && !r.contains('=') {
            return math_equal(&rhs(p), r);
        }
        if lhs_short(r) && !p.contains('=') {
            return math_equal(p, &rhs(r));
        }
        false
    }

    /// `calculate_math_accuracy` on one pair: both stripped; the prediction's answer
    /// ([`extract_answer`]) against the normalised ground truth ([`strip_string`]).
    pub fn correct(prediction: &str, ground_truth: &str) -> bool {
        math_equal(&extract_answer(py_strip(prediction)), &strip_string(py_strip(ground_truth)))
    }
}

/// The upstream rules (see the module docs).
pub mod upstream {
    use super::*;

    static NUMBER: LazyLock<Regex> = LazyLock::new(|| re(r"-?\d*\.?\d+"));

    /// The content of the last `\boxed{...}` (braces balanced), if any.
    fn last_boxed(text: &str) -> Option<String> {
        let start = text.rfind("\\boxed")? + "\\boxed".len();
        let rest = text[start..].strip_prefix('{')?;
        let mut depth = 1usize;
        let mut out = String::new();
        for c in rest.chars() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(out);
                    }
                }
                _ => {}
            }
            out.push(c);
        }
        None
    }

    /// The answer a prediction gives: the last `\boxed{}` content, else the last number (commas
    /// removed), else the stripped text; then line breaks removed and a leading `:` / trailing `.`
    /// or `/` dropped.
    pub fn answer(prediction: &str) -> String {
        let mut a = if let Some(b) = last_boxed(prediction) {
            strip_answer(&b)
        } else {
            let no_commas = prediction.replace(',', "");
            match NUMBER.find_iter(&no_commas).last() {
                Some(m) => m.as_str().to_string(),
                None => py_strip(prediction).to_string(),
            }
        };
        a = a.split('\n').map(|l| l.trim_start_matches(is_py_space)).collect();
        if let Some(s) = a.strip_prefix(':') {
            a = s.to_string();
        }
        if let Some(s) = a.strip_suffix('.') {
            a = s.to_string();
        }
        if let Some(s) = a.strip_suffix('/') {
            a = s.to_string();
        }
        a
    }

    /// The parts of the parser's `strip_string` that matter for numeric answers: whitespace, `$`,
    /// `\%`/`%`, `\text{...}` wrappers, thousands commas between digits, a trailing `.`.
    pub fn strip_answer(s: &str) -> String {
        let mut t = py_strip(s).replace("\\!", "").replace("\\$", "").replace('$', "");
        t = t.replace("\\%", "").replace('%', "");
        if let (Some(i), true) = (t.find("\\text{"), t.ends_with('}')) {
            t = format!("{}{}", &t[..i], &t[i + 6..t.len() - 1]);
        }
        let chars: Vec<char> = t.chars().collect();
        let mut out = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let between_digits =
                i > 0 && i + 1 < chars.len() && chars[i - 1].is_ascii_digit() && chars[i + 1].is_ascii_digit();
            if c == ',' && between_digits {
                continue;
            }
            out.push(c);
        }
        let out = py_strip(&out).trim_end_matches('.').to_string();
        py_strip(&out).to_string()
    }

    fn parse_number(s: &str) -> Option<f64> {
        let t = strip_answer(s);
        if t.is_empty() || t.contains(|c: char| c.is_alphabetic() && c != 'e' && c != 'E') {
            return None;
        }
        t.parse::<f64>().ok().filter(|x| x.is_finite())
    }

    /// `math_equal` without its symbolic step: case-insensitive string equality, then numeric
    /// equality within relative tolerance 1e-4 against `gt`, `gt/100` and `gt*100`, then equality
    /// after stripping brackets, then `x = v` forms on either side.
    pub fn equal(prediction: &str, gt: &str) -> bool {
        let (p, g) = (strip_answer(prediction), strip_answer(gt));
        if p.to_lowercase() == g.to_lowercase() {
            return true;
        }
        if let (Some(pv), Some(gv)) = (parse_number(&p), parse_number(&g)) {
            if [gv, gv / 100.0, gv * 100.0].into_iter().any(|t| is_close(pv, t, 1e-4)) {
                return true;
            }
        }
        let unbracket = |s: &str| s.trim_matches(|c| matches!(c, '(' | ')' | '[' | ']' | '{' | '}')).to_lowercase();
        if !p.is_empty() && unbracket(&p) == unbracket(&g) {
            return true;
        }
        let rhs =
            |s: &str| s.split_once('=').and_then(|(l, r)| (py_strip(l).len() <= 2).then(|| py_strip(r).to_string()));
        match (rhs(&p), rhs(&g)) {
            (Some(a), None) => equal(&a, &g),
            (None, Some(b)) => equal(&p, &b),
            _ => false,
        }
    }

    /// One pair under the upstream rules.
    pub fn correct(prediction: &str, ground_truth: &str) -> bool {
        equal(&answer(prediction), ground_truth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_float_and_int() {
        assert_eq!(py_float(" 1_000.5 "), Some(1000.5));
        assert_eq!(py_float("٣"), Some(3.0));
        assert_eq!(py_float("1__0"), None);
        assert_eq!(py_float("_1"), None);
        assert_eq!(py_float(".5"), Some(0.5));
        assert_eq!(py_float("5."), Some(5.0));
        assert_eq!(py_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(py_float("nan").is_some_and(f64::is_nan));
        assert_eq!(py_float("1e3"), Some(1000.0));
        assert_eq!(py_float("1,0"), None);
        assert_eq!(py_int_text("+007"), Some("7".into()));
        assert_eq!(py_int_text("-0"), Some("0".into()));
        assert_eq!(py_int_text("3.0"), None);
    }

    #[test]
    fn official_examples_of_the_issue() {
        use official::correct;
        assert!(!correct("1,234 apples", "1234"), "no comma removal: the last number is 234");
        assert!(!correct("It is .5", "0.5"), "the regex needs a digit first: 5");
        assert!(!correct("\\boxed{7} so the boxed answer is 8", "7"), "the text after the last `boxed`");
        assert!(!correct("thousand", "thousand"), "the ground truth loses its `and`");
        assert!(correct("٣", "3"), "Python's float reads Unicode digits");
        assert!(correct("The answer is \\boxed{\\frac{1}{2}}", "1/2"));
        assert!(correct("x = 12.0", "12"));
        assert!(correct("So 25%", "0.25"));
    }

    #[test]
    fn upstream_examples() {
        use upstream::correct;
        assert!(correct("1,234 apples", "1234"));
        assert!(correct("It is .5", "0.5"));
        assert!(correct("\\boxed{7} so the boxed answer is 8", "7"));
        assert!(correct("thousand", "thousand"));
        assert!(!correct("٣", "3"));
    }
}
