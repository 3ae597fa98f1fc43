//! The TRACE metrics against the Python packages on fixed cases (`tests/fixtures/cl/metric_cases.json`,
//! written by `generate_metrics.py` through `cargo xtask fixtures`): ROUGE-L (`rouge` 1.0.1) with the
//! official and the upstream call, fuzz.ratio (`fuzzywuzzy` + python-Levenshtein), SARI and
//! sacrebleu's 13a tokenizer, and the prefix / letter / NumGLUE / Py150 rules of the official MoRAM
//! evaluation under Python's `re` and `str`.

use moram_cl::metrics::{numglue, rouge, sari, text, TaskMetric};
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
    for c in pairs.iter().filter(|c| c.get("fuzz_ratio").is_some()) {
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
            assert_eq!(numglue::upstream::answer(a), n, "upstream last number {ctx}");
        }
        assert_eq!(numglue::official::correct(a, b), c["numglue_official"].as_bool().unwrap(), "numglue {ctx}");
        assert_eq!(text::py150_similarity(a, b), c["py150"].as_f64().unwrap(), "py150 {ctx}");
    }
    let mut checked = 0;
    for c in pairs {
        let (a, b) = (s(&c["a"]), s(&c["b"]));
        let one = |f: fn(&[String], &[String]) -> f64| f(&[a.to_string()], &[b.to_string()]);
        for (key, got) in
            [("rouge_official", one(rouge::official_rouge_l)), ("rouge_upstream", one(rouge::upstream_rouge_l))]
        {
            // Python: None where the pair is skipped (empty) or rouge raises; both count 0.
            let want = c[key].as_f64().unwrap_or(0.0);
            assert!((got - want).abs() <= 1e-6, "{key} a={a:?} b={b:?}: {got} vs {want}");
            checked += 1;
        }
    }
    assert!(checked >= 140, "{checked}");
    assert!(checked_rouge >= 30, "only {checked_rouge} scored ROUGE cases");
    for t in all["tokenizer_13a"].as_array().unwrap() {
        assert_eq!(sari::tokenize_13a(s(&t["text"])), s(&t["13a"]), "13a of {:?}", t["text"]);
    }
    assert!((all["sari_doc_example"].as_f64().unwrap() - 26.953601953601954).abs() < 1e-9);
}

#[test]
fn numglue_and_py150_follow_the_official_evaluation() {
    let all = cases();
    let numglue_cases = all["numglue"].as_array().unwrap();
    assert!(numglue_cases.len() >= 40);
    for c in numglue_cases {
        let (p, g) = (s(&c["prediction"]), s(&c["gt"]));
        assert_eq!(numglue::official::extract_answer(p.trim()), s(&c["answer"]), "answer of {p:?}");
        assert_eq!(numglue::official::strip_string(g.trim()), s(&c["gt_stripped"]), "strip_string of {g:?}");
        assert_eq!(numglue::official::correct(p, g), c["official"].as_bool().unwrap(), "{p:?} vs {g:?}");
    }
    for c in all["py150"].as_array().unwrap() {
        let (p, t) = (s(&c["prediction"]), s(&c["target"]));
        assert_eq!(text::py150_similarity(p, t), c["similarity"].as_f64().unwrap(), "{p:?} vs {t:?}");
    }
}

/// The examples that showed moram differing from the official code (official value first).
#[test]
fn the_reported_differences_are_gone() {
    let score = |m: TaskMetric, p: &str, t: &str| m.score(&["".into()], &[p.into()], &[t.into()]).unwrap();
    let rouge = TaskMetric::RougeL;
    assert!(
        (score(rouge, "The council approved the budget.", "The council approved the budget.") - 90.909).abs() < 1e-3
    );
    assert!((score(rouge, "a b.", "a b. .") - 100.0).abs() < 1e-5);
    assert!((score(TaskMetric::RougeLUpstream, "a b.", "a b. .") - 80.0).abs() < 1e-5);
    let num = TaskMetric::NumglueAccuracy;
    for (p, g, official) in [
        ("1,234 apples", "1234", 0.0),
        ("It is .5", "0.5", 0.0),
        ("\\boxed{7} so the boxed answer is 8", "7", 0.0),
        ("thousand", "thousand", 0.0),
        ("\u{663}", "3", 100.0),
    ] {
        assert_eq!(score(num, p, g), official, "official {p:?} vs {g:?}");
        assert_eq!(score(TaskMetric::NumglueAccuracyUpstream, p, g), 100.0 - official, "upstream {p:?} vs {g:?}");
    }
    assert_eq!(score(TaskMetric::Py150Similarity, "<STR_LIT>", "<STR_LIT>"), 0.0);
    assert_eq!(text::extract_choice(" no letter here\n"), "no letter here", "no letter: stripped");
    for m in TaskMetric::ALL {
        assert_eq!(TaskMetric::from_name(&m.name()).unwrap(), m, "{}", m.name());
    }
    assert!(TaskMetric::from_name("rouge").unwrap_err().to_string().contains("rouge_l_upstream"));
}
