//! TRACE per-example text rules as the official MoRAM evaluation code applies them
//! (`docs/protocol.md`, "TRACE metrics"): the prefix accuracy rule, the C-STANCE/FOMC letter
//! extraction, ScienceQA's answer letter and the Py150 placeholder clean-up with fuzzywuzzy's
//! `ratio` (NumGLUE is [`super::numglue`]). Strings are compared as Python does: by Unicode code
//! points, with Python's notion of whitespace.

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

/// A word character of Python's `re` on `str` patterns: `_`, or a character for which
/// `str.isalnum()` holds (letters: categories L*; numbers: N*). The `regex` crate's `\b` counts
/// combining marks as word characters and `²`-like numbers as not, so it is not used.
static PY_WORD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[\p{L}\p{N}_]$").expect("static regex"));

fn py_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || (!c.is_ascii() && PY_WORD.is_match(c.encode_utf8(&mut [0; 4])))
}

/// C-STANCE/FOMC post-processing: the first standalone A/B/C (any case, upper-cased: Python's
/// `re.findall(r"\b([ABC])\b", text, re.I)[0]`, with `re`'s word boundaries), else the first
/// character that upper-cases to A/B/C, else the text stripped.
pub fn extract_choice(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let standalone = chars.iter().enumerate().find(|&(i, &c)| {
        matches!(c, 'A' | 'B' | 'C' | 'a' | 'b' | 'c')
            && (i == 0 || !py_word(chars[i - 1]))
            && chars.get(i + 1).is_none_or(|&n| !py_word(n))
    });
    if let Some((_, c)) = standalone {
        return c.to_ascii_uppercase().to_string();
    }
    for c in text.chars() {
        let up: String = c.to_uppercase().collect();
        if matches!(up.as_str(), "A" | "B" | "C") {
            return up;
        }
    }
    py_strip(text).to_string()
}

/// ScienceQA "resolve": the first character of the stripped string, or `N/A` when empty.
pub fn scienceqa_letter(text: &str) -> String {
    py_strip(text).chars().next().map(String::from).unwrap_or_else(|| "N/A".into())
}

static LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<(STR|NUM|CHAR)_LIT:(.*?)>").expect("static regex"));

/// Py150 placeholder clean-up: `<NUM_LIT>` -> `0`, `<STR_LIT>`/`<CHAR_LIT>` -> empty; then every
/// match of `<(STR|NUM|CHAR)_LIT:(.*?)>` is found once on that text and, match by match, all
/// occurrences of its full text are replaced by its inner `x` (Python's `findall` then
/// `str.replace`, so a nested literal can survive).
pub fn py150_clean(code: &str) -> String {
    let mut code = code.replace("<NUM_LIT>", "0").replace("<STR_LIT>", "").replace("<CHAR_LIT>", "");
    let found: Vec<(String, String)> =
        LITERAL.captures_iter(&code).map(|c| (c[0].to_string(), c[2].to_string())).collect();
    for (full, inner) in found {
        code = code.replace(&full, &inner);
    }
    code
}

/// Py150 similarity of one pair: both cleaned ([`py150_clean`]), then 0 when either is empty,
/// else [`fuzz_ratio`] (the official order: the empty check comes after the clean-up).
pub fn py150_similarity(prediction: &str, target: &str) -> f64 {
    let (p, t) = (py150_clean(prediction), py150_clean(target));
    if p.is_empty() || t.is_empty() {
        0.0
    } else {
        fuzz_ratio(&p, &t) as f64
    }
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
        assert_eq!(extract_choice("  xyz \n"), "xyz", "no letter: the prediction stripped");
        assert_eq!(extract_choice("立场是Bx"), "B");
        // Python's `re` word boundaries (checked with Python 3.11): `²` is a word character, a
        // combining accent is not.
        assert_eq!(extract_choice("²A B"), "B");
        assert_eq!(extract_choice("\u{301}A"), "A");
        assert_eq!(extract_choice("x\u{301}A B"), "A");
        assert_eq!(extract_choice("éA B"), "B");
        assert_eq!(extract_choice("٣A B"), "B");
        assert_eq!(extract_choice("_A b"), "B");
        assert_eq!(scienceqa_letter("  B\nbecause"), "B");
        assert_eq!(scienceqa_letter("   "), "N/A");
    }

    #[test]
    fn py150_and_fuzz() {
        assert_eq!(py150_clean("x = <NUM_LIT> + <STR_LIT:hi> <STR_LIT>"), "x = 0 + hi ");
        assert_eq!(py150_similarity("<STR_LIT>", "<STR_LIT>"), 0.0, "empty after the clean-up");
        assert_eq!(py150_clean("<STR_LIT:<NUM_LIT:3>>"), "<NUM_LIT:3>", "a nested literal survives");
        assert_eq!(fuzz_ratio("", ""), 100);
        assert_eq!(fuzz_ratio("abc", ""), 0);
        assert_eq!(fuzz_ratio("this is a test", "this is a test!"), 97);
        // 1 - 1/4 = 0.75 -> 75; 0.5 * 100 ties: "ab" vs "ac": indel 2 of 4 -> 50.
        assert_eq!(fuzz_ratio("ab", "ac"), 50);
    }
}
