//! SARI as Hugging Face's `sari` metric computes it (the tensor2tensor variant with 0/0 := 1 and
//! the fixed keep recall), on texts lower-cased and tokenised with sacrebleu's `13a` tokenizer.
//!
//! Per sentence, for n = 1..4: keep F1 (n-gram counts multiplied by the number of references),
//! deletion precision, addition F1 (sets); SARI = mean over n of (keep + del + add) / 3. The
//! corpus score is the mean over sentences times 100.

use super::text::py_split;
use regex::Regex;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

static RULES: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(p).expect("static regex");
    [
        (re(r"([{-~\[-`\x20-&(-+:-@/])"), " ${1} "),
        (re(r"([^0-9])([.,])"), "${1} ${2} "),
        (re(r"([.,])([^0-9])"), " ${1} ${2}"),
        (re(r"([0-9])(-)"), "${1} ${2} "),
    ]
});

/// sacrebleu's `13a` tokenizer.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"").replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">");
    }
    let mut s = format!(" {line} ");
    for (re, rep) in RULES.iter() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    py_split(&s).collect::<Vec<_>>().join(" ")
}

/// HF `normalize`: lower-case, then `13a`.
pub fn normalize(sentence: &str) -> String {
    tokenize_13a(&sentence.to_lowercase())
}

type Counter = HashMap<String, i64>;

fn count(grams: &[String], times: i64) -> Counter {
    let mut c = Counter::new();
    for g in grams {
        *c.entry(g.clone()).or_default() += times;
    }
    c
}

/// Counter `&`: minimum, positive entries only.
fn and(a: &Counter, b: &Counter) -> Counter {
    a.iter().filter_map(|(k, &x)| b.get(k).map(|&y| (k.clone(), x.min(y)))).filter(|(_, v)| *v > 0).collect()
}

/// Counter `-`: difference, positive entries only.
fn sub(a: &Counter, b: &Counter) -> Counter {
    a.iter().map(|(k, &x)| (k.clone(), x - b.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

fn f1(p: f64, r: f64) -> f64 {
    if p > 0.0 || r > 0.0 {
        2.0 * p * r / (p + r)
    } else {
        0.0
    }
}

fn sari_ngram(s: &[String], c: &[String], refs: &[Vec<String>]) -> (f64, f64, f64) {
    let numref = refs.len() as i64;
    let r_all: Vec<String> = refs.iter().flatten().cloned().collect();
    let rc = count(&r_all, 1);
    let (sc, cc) = (count(s, 1), count(c, 1));
    let (s_rep, c_rep) = (count(s, numref), count(c, numref));

    let keep = and(&s_rep, &c_rep);
    let keep_good = and(&keep, &rc);
    let keep_all = and(&s_rep, &rc);
    let tmp1: f64 = keep_good.iter().map(|(k, &v)| v as f64 / keep[k] as f64).sum();
    let tmp2: f64 = keep_good.values().map(|&v| v as f64).sum();
    let keep_p = if keep.is_empty() { 1.0 } else { tmp1 / keep.len() as f64 };
    let keep_r = if keep_all.is_empty() { 1.0 } else { tmp2 / keep_all.values().sum::<i64>() as f64 };

    let del = sub(&s_rep, &c_rep);
    let del_good = sub(&del, &rc);
    let del_tmp: f64 = del_good.iter().map(|(k, &v)| v as f64 / del[k] as f64).sum();
    let del_p = if del.is_empty() { 1.0 } else { del_tmp / del.len() as f64 };

    let (s_set, c_set, r_set): (HashSet<&String>, HashSet<&String>, HashSet<&String>) =
        (sc.keys().collect(), cc.keys().collect(), rc.keys().collect());
    let add: HashSet<&&String> = c_set.difference(&s_set).collect();
    let add_good = add.iter().filter(|g| r_set.contains(**g)).count() as f64;
    let add_all = r_set.difference(&s_set).count();
    let add_p = if add.is_empty() { 1.0 } else { add_good / add.len() as f64 };
    let add_r = if add_all == 0 { 1.0 } else { add_good / add_all as f64 };
    (f1(keep_p, keep_r), del_p, f1(add_p, add_r))
}

fn ngrams(words: &[String], n: usize) -> Vec<String> {
    if words.len() < n {
        Vec::new()
    } else {
        words.windows(n).map(|w| w.join(" ")).collect()
    }
}

/// SARI of one normalised sentence triple (0-1).
pub fn sari_sentence(source: &str, prediction: &str, references: &[String]) -> f64 {
    let split = |t: &str| t.split(' ').map(String::from).collect::<Vec<_>>();
    let (s1, c1) = (split(source), split(prediction));
    let r1: Vec<Vec<String>> = references.iter().map(|r| split(r)).collect();
    let (mut keep, mut del, mut add) = (0.0, 0.0, 0.0);
    for n in 1..=4 {
        let rs: Vec<Vec<String>> = r1.iter().map(|r| ngrams(r, n)).collect();
        let (k, d, a) = sari_ngram(&ngrams(&s1, n), &ngrams(&c1, n), &rs);
        keep += k;
        del += d;
        add += a;
    }
    (keep / 4.0 + del / 4.0 + add / 4.0) / 3.0
}

/// HF `sari.compute(sources, predictions, references)["sari"]` (0-100).
pub fn sari(sources: &[String], predictions: &[String], references: &[Vec<String>]) -> f64 {
    if sources.is_empty() {
        return 0.0;
    }
    let total: f64 = sources
        .iter()
        .zip(predictions)
        .zip(references)
        .map(|((s, p), r)| {
            let refs: Vec<String> = r.iter().map(|x| normalize(x)).collect();
            sari_sentence(&normalize(s), &normalize(p), &refs)
        })
        .sum();
    100.0 * total / sources.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_13a() {
        assert_eq!(tokenize_13a("Hello, world! It's 3.5-4 km."), "Hello , world ! It's 3.5 - 4 km .");
        assert_eq!(tokenize_13a("a&amp;b"), "a & b");
        assert_eq!(tokenize_13a(""), "");
    }

    #[test]
    fn documented_example() {
        // The example in the metric's documentation: 26.953601953601954.
        let s = sari(
            &["About 95 species are currently accepted .".into()],
            &["About 95 you now get in .".into()],
            &[vec![
                "About 95 species are currently known .".into(),
                "About 95 species are now accepted .".into(),
                "95 species are now accepted .".into(),
            ]],
        );
        assert!((s - 26.953601953601954).abs() < 1e-9, "{s}");
    }
}
