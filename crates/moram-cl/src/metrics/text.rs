//! TRACE per-example text rules (protocol 4.6-4.7): the prefix accuracy rule, the C-STANCE/FOMC
//! letter extraction, ScienceQA's answer letter, the NumGLUE number parser and the Py150
//! placeholder clean-up with fuzzywuzzy's `ratio`. Strings are compared as Python does: by Unicode
//! code points, with Python's notion of whitespace.

use regex::Regex;
use std::sync::LazyLock;

/// Python's `str.isspace` (Unicode White_Space plus the ASCII separators U+001C..U+001F).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_space)
}

/// Python's `str.split()` (no argument).
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|w| !w.is_empty())
}

/// TRACE `caculate_accuracy` on one pair: the stripped prediction must start with the (unstripped)
/// target; an empty prediction or target is wrong.
pub fn prefix_correct(prediction: &str, target: &str) -> bool {
    let p = py_strip(prediction);
    !p.is_empty() && !target.is_empty() && p.starts_with(target)
}

static CHOICE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\b([ABC])\b").expect("static regex"));

/// C-STANCE/FOMC post-processing: the first standalone A/B/C (any case, upper-cased), else the
/// first character that upper-cases to A/B/C, else the text unchanged.
pub fn extract_choice(text: &str) -> String {
    if let Some(m) = CHOICE.captures(text).and_then(|c| c.get(1)) {
        return m.as_str().to_uppercase();
    }
    for c in text.chars() {
        let up: String = c.to_uppercase().collect();
        if matches!(up.as_str(), "A" | "B" | "C") {
            return up;
        }
    }
    text.to_string()
}

/// ScienceQA "resolve": the first character of the stripped string, or `N/A` when empty.
pub fn scienceqa_letter(text: &str) -> String {
    py_strip(text).chars().next().map(String::from).unwrap_or_else(|| "N/A".into())
}

static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\d*\.?\d+").expect("static regex"));

/// The content of the last `\boxed{...}` (braces balanced), if any.
fn last_boxed(text: &str) -> Option<String> {
    let start = text.rfind("\\boxed")? + "\\boxed".len();
    let rest = &text[start..];
    let rest = rest.strip_prefix('{')?;
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

/// The NumGLUE answer a prediction gives (Qwen2.5-Math parser, as the MoRAM TRACE code uses it):
/// the last `\boxed{}` content, else the last number (commas removed), else the stripped text;
/// then line breaks removed and a leading `:` / trailing `.` or `/` dropped.
pub fn numglue_answer(prediction: &str) -> String {
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

/// `math_equal` without its symbolic (sympy) step: case-insensitive string equality, then numeric
/// equality within relative tolerance 1e-4 against `gt`, `gt/100` and `gt*100`, then equality after
/// stripping brackets, then `x = v` forms on either side.
pub fn numglue_equal(prediction: &str, gt: &str) -> bool {
    let (p, g) = (strip_answer(prediction), strip_answer(gt));
    if p.to_lowercase() == g.to_lowercase() {
        return true;
    }
    if let (Some(pv), Some(gv)) = (parse_number(&p), parse_number(&g)) {
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * a.abs().max(b.abs());
        if [gv, gv / 100.0, gv * 100.0].into_iter().any(|t| close(pv, t)) {
            return true;
        }
    }
    let unbracket = |s: &str| s.trim_matches(|c| matches!(c, '(' | ')' | '[' | ']' | '{' | '}')).to_lowercase();
    if !p.is_empty() && unbracket(&p) == unbracket(&g) {
        return true;
    }
    let rhs = |s: &str| s.split_once('=').and_then(|(l, r)| (py_strip(l).len() <= 2).then(|| py_strip(r).to_string()));
    match (rhs(&p), rhs(&g)) {
        (Some(a), None) => numglue_equal(&a, &g),
        (None, Some(b)) => numglue_equal(&p, &b),
        _ => false,
    }
}

static LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<(STR|NUM|CHAR)_LIT:(.*?)>").expect("static regex"));

/// Py150 placeholder clean-up: `<NUM_LIT>` -> `0`, `<STR_LIT>`/`<CHAR_LIT>` -> empty, and
/// `<STR_LIT:x>`/`<NUM_LIT:x>`/`<CHAR_LIT:x>` -> `x`.
pub fn py150_clean(code: &str) -> String {
    let code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "");
    LITERAL.replace_all(&code, "${2}").into_owned()
}

/// fuzzywuzzy `fuzz.ratio` with python-Levenshtein: 100 for equal strings, 0 when one is empty,
/// otherwise `round(100 * (1 - indel_distance / (len1 + len2)))` with Python's round-half-even.
pub fn fuzz_ratio(a: &str, b: &str) -> u32 {
    if a == b {
        return 100;
    }
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    let sim = rapidfuzz::distance::indel::normalized_similarity(a.chars(), b.chars());
    (100.0 * sim).round_ties_even() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rule() {
        assert!(prefix_correct("  A\n", "A"));
        assert!(prefix_correct("A. dovish", "A"));
        assert!(!prefix_correct("", "A"));
        assert!(!prefix_correct("B", ""));
        assert!(!prefix_correct("A", "A "), "the target is not stripped");
        assert!(!prefix_correct("Ab", "Abc"));
    }

    #[test]
    fn choice_extraction_follows_the_regex_then_the_first_letter() {
        assert_eq!(extract_choice("The answer is b."), "B");
        assert_eq!(extract_choice("a dovish stance"), "A", "a standalone article counts (A3)");
        assert_eq!(extract_choice("hawkish(C)"), "C");
        assert_eq!(extract_choice("Cautious"), "C", "no standalone letter: first A/B/C character");
        assert_eq!(extract_choice("xyz"), "xyz");
        assert_eq!(extract_choice("立场是Bx"), "B");
        assert_eq!(scienceqa_letter("  B\nbecause"), "B");
        assert_eq!(scienceqa_letter("   "), "N/A");
    }

    #[test]
    fn numglue_parser() {
        assert_eq!(numglue_answer("So the total is 1,234 apples."), "1234");
        assert_eq!(numglue_answer("x = \\boxed{42} or 7"), "42");
        assert_eq!(numglue_answer("-3.5 then 7."), "7");
        assert_eq!(numglue_answer("Friday"), "Friday");
        assert_eq!(numglue_answer("it is .5"), ".5");
        assert!(numglue_equal("12.0", "12"));
        assert!(numglue_equal("0.25", "25"), "percentage tolerance");
        assert!(numglue_equal("friday", "Friday"));
        assert!(numglue_equal("x = 5", "5"));
        assert!(!numglue_equal("13", "12"));
        assert!(numglue_equal("100000", "100001"), "relative tolerance 1e-4");
        assert!(!numglue_equal("", "12"));
    }

    #[test]
    fn py150_and_fuzz() {
        assert_eq!(py150_clean("x = <NUM_LIT> + <STR_LIT:hi> <STR_LIT>"), "x = 0 + hi ");
        assert_eq!(fuzz_ratio("", ""), 100);
        assert_eq!(fuzz_ratio("abc", ""), 0);
        assert_eq!(fuzz_ratio("this is a test", "this is a test!"), 97);
        // 1 - 1/4 = 0.75 -> 75; 0.5 * 100 ties: "ab" vs "ac": indel 2 of 4 -> 50.
        assert_eq!(fuzz_ratio("ab", "ac"), 50);
    }
}
