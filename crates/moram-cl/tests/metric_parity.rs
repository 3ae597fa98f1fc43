//! The TRACE metrics against the Python packages on fixed cases (`tests/fixtures/cl/metric_cases.json`,
//! written by `generate_metrics.py` through `cargo xtask fixtures`): ROUGE-L (`rouge` 1.0.1), fuzz.ratio
//! (`fuzzywuzzy` + python-Levenshtein), SARI and sacrebleu's 13a tokenizer, and the prefix / letter /
//! last-number rules under Python's `re` and `str`.

use moram_cl::metrics::{rouge, sari, text};
use serde_json::Value;

fn cases() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/cl/metric_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn every_metric_matches_python() {
    let all = cases();
    let pairs = all["pairs"].as_array().unwrap();
    assert!(pairs.len() >= 30);
    let mut checked_rouge = 0;
    for c in pairs {
        let (a, b) = (s(&c["a"]), s(&c["b"]));
        let ctx = format!("a={a:?} b={b:?}");
        match c["rouge_l"].as_f64() {
            Some(want) => {
                let got = rouge::rouge_l_f(a, b).unwrap_or_else(|| panic!("{ctx}: Python scored it"));
                assert!((got - want).abs() <= 1e-6, "rouge {ctx}: {got} vs {want}");
                checked_rouge += 1;
            }
            None => assert_eq!(rouge::rouge_l_f(a, b), None, "rouge {ctx}: Python raises"),
        }
        assert_eq!(text::fuzz_ratio(a, b) as u64, c["fuzz_ratio"].as_u64().unwrap(), "fuzz {ctx}");
        let rev: String = b.chars().rev().collect();
        let got = sari::sari(&[b.to_string()], &[a.to_string()], &[vec![rev]]);
        let want = c["sari"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-6, "sari {ctx}: {got} vs {want}");
        assert_eq!(text::prefix_correct(a, b), c["prefix_correct"].as_bool().unwrap(), "prefix {ctx}");
        assert_eq!(text::extract_choice(a), s(&c["choice"]), "choice {ctx}");
        if let (Some(n), false) = (c["last_number"].as_str(), a.contains("\\boxed")) {
            assert_eq!(text::numglue_answer(a), n, "last number {ctx}");
        }
    }
    assert!(checked_rouge >= 30, "only {checked_rouge} scored ROUGE cases");
    for t in all["tokenizer_13a"].as_array().unwrap() {
        assert_eq!(sari::tokenize_13a(s(&t["text"])), s(&t["13a"]), "13a of {:?}", t["text"]);
    }
    assert!((all["sari_doc_example"].as_f64().unwrap() - 26.953601953601954).abs() < 1e-9);
}
