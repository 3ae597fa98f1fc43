//! ROUGE-L as the `rouge` package (pltrdy, 1.0.1) computes it, averaged over pairs as the official
//! MoRAM evaluation code does ([`official_rouge_l`]) or as upstream TRACE does ([`upstream_rouge_l`]).
//!
//! Texts are cut into "sentences" on `.`, whitespace-normalised, and split into words on single
//! spaces. The score is the summary-level union-LCS F-measure with set semantics: the overlap is
//! the number of distinct words in the union of the LCS reconstructions of every (reference
//! sentence, candidate sentence) pair; `m`/`n` are the distinct words of reference/candidate;
//! `F = 2PR / (P + R + 1e-8)`. No lower-casing, no stemming.

use super::text::py_split;
use std::collections::HashSet;

fn sentences(text: &str) -> Vec<String> {
    text.split('.').filter(|s| !s.is_empty()).map(|s| py_split(s).collect::<Vec<_>>().join(" ")).collect()
}

fn words(sentence: &str) -> Vec<&str> {
    sentence.split(' ').collect()
}

/// The LCS of `x` and `y` as pltrdy reconstructs it (diagonal on a match, else up when strictly
/// longer, else left), as the set of its words.
fn recon_lcs<'a>(x: &[&'a str], y: &[&str]) -> Vec<&'a str> {
    let (n, m) = (x.len(), y.len());
    let mut t = vec![vec![0u32; m + 1]; n + 1];
    for i in 1..=n {
        for j in 1..=m {
            t[i][j] = if x[i - 1] == y[j - 1] { t[i - 1][j - 1] + 1 } else { t[i - 1][j].max(t[i][j - 1]) };
        }
    }
    let (mut i, mut j) = (n, m);
    let mut out = Vec::new();
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            out.push(x[i - 1]);
            i -= 1;
            j -= 1;
        } else if t[i - 1][j] > t[i][j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out
}

/// `Rouge().get_scores(hyp, ref)[0]["rouge-l"]["f"]`; `None` where the package raises (a text with
/// no sentence, e.g. empty or only dots).
pub fn rouge_l_f(hyp: &str, reference: &str) -> Option<f64> {
    let (hs, rs) = (sentences(hyp), sentences(reference));
    if hs.is_empty() || rs.is_empty() {
        return None;
    }
    let distinct = |ss: &[String]| ss.iter().flat_map(|s| words(s)).collect::<HashSet<_>>().len();
    let (m, n) = (distinct(&rs), distinct(&hs));
    let mut union: HashSet<&str> = HashSet::new();
    for r in &rs {
        let rw = words(r);
        for h in &hs {
            union.extend(recon_lcs(&rw, &words(h)));
        }
    }
    let llcs = union.len() as f64;
    let (r, p) = (llcs / m as f64, llcs / n as f64);
    Some(2.0 * ((p * r) / (p + r + 1e-8)))
}

/// The official MoRAM evaluation's ROUGE-L: per pair, the **prediction** is the hypothesis, with
/// `"\n"` appended when it has none; pairs with an empty prediction or target are skipped but
/// counted; mean over all pairs. Pairs the package cannot score (it raises, and the official code
/// crashes) count 0 here. Returns 0-1.
pub fn official_rouge_l(predictions: &[String], targets: &[String]) -> f64 {
    mean_over_pairs(predictions, targets, official_pair)
}

/// One pair of [`official_rouge_l`] (0-1; 0 for a skipped or unscorable pair).
pub fn official_pair(prediction: &str, target: &str) -> f64 {
    pair(prediction, target, |p, t| {
        let hyp = if p.contains('\n') { p.to_string() } else { format!("{p}\n") };
        rouge_l_f(&hyp, t)
    })
}

/// One pair of [`upstream_rouge_l`] (0-1; 0 for a skipped or unscorable pair).
pub fn upstream_pair(prediction: &str, target: &str) -> f64 {
    pair(prediction, target, |p, t| rouge_l_f(t, p))
}

fn pair(p: &str, t: &str, score: impl Fn(&str, &str) -> Option<f64>) -> f64 {
    if p.is_empty() || t.is_empty() {
        0.0
    } else {
        score(p, t).unwrap_or(0.0)
    }
}

/// Upstream TRACE's `caculate_rouge`: `score_rouge(target, prediction)` (the **target** is passed as
/// the hypothesis, nothing appended), otherwise as [`official_rouge_l`]. Returns 0-1.
pub fn upstream_rouge_l(predictions: &[String], targets: &[String]) -> f64 {
    mean_over_pairs(predictions, targets, upstream_pair)
}

fn mean_over_pairs(predictions: &[String], targets: &[String], score: fn(&str, &str) -> f64) -> f64 {
    if predictions.is_empty() {
        return 0.0;
    }
    let total: f64 = predictions.iter().zip(targets).map(|(p, t)| score(p, t)).sum();
    total / predictions.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_cases() {
        // Identical single sentence: P = R = 1 -> F = 2 / (2 + 1e-8).
        let f = rouge_l_f("the cat sat", "the cat sat").unwrap();
        assert!((f - 2.0 / (2.0 + 1e-8)).abs() < 1e-15);
        // LCS "the sat" of 3 and 4 distinct words: P = 2/3, R = 2/4.
        let f = rouge_l_f("the cat sat", "the dog really sat").unwrap();
        let (p, r) = (2.0 / 3.0, 0.5);
        assert!((f - 2.0 * p * r / (p + r + 1e-8)).abs() < 1e-12);
        assert_eq!(rouge_l_f("...", "a"), None);
        assert_eq!(
            upstream_rouge_l(&["".into(), "a b".into()], &["x".into(), "a b".into()]),
            rouge_l_f("a b", "a b").unwrap() / 2.0
        );
        // The official call: the prediction's appended "\n" adds an empty sentence (one more
        // distinct "word"), so identical texts score 10/11, and "a b." vs "a b. ." scores 1.
        let same = ["The council approved the budget.".to_string()];
        assert!((official_rouge_l(&same, &same) - 2.0 * (5.0 / 6.0) / (11.0 / 6.0 + 1e-8)).abs() < 1e-12);
        let (p, t) = (["a b.".to_string()], ["a b. .".to_string()]);
        assert!((official_rouge_l(&p, &t) - 1.0).abs() < 1e-7);
        assert!((upstream_rouge_l(&p, &t) - 0.8).abs() < 1e-7);
    }
}
