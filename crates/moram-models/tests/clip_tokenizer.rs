//! ClipTokenizer against open_clip 3.3.0's SimpleTokenizer on 35 varied strings
//! (`tests/fixtures/clip/generate_tokenizer.py`).

use moram_models::clip::ClipTokenizer;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
}

#[test]
fn token_ids_equal_open_clip_on_every_case() -> anyhow::Result<()> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip/tokenizer_cases.json");
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    assert!(cases.cases.len() >= 30);
    let tok = ClipTokenizer::new();
    let mut failures = Vec::new();
    for case in &cases.cases {
        let mut ids = tok.encode(&case.text);
        ids.resize(77, 0);
        if ids != case.ids {
            failures.push(format!("{:?}\n  rust:   {:?}\n  python: {:?}", case.text, ids, case.ids));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.cases.len(), failures.join("\n"));
    let batch = tok.tokenize_batch(&["a photo of a cat.", "Hi there"]);
    assert_eq!(batch.size(), vec![2, 77]);
    assert_eq!(Vec::<i64>::try_from(batch.get(1).narrow(0, 0, 5))?, vec![49406, 1883, 997, 49407, 0]);
    Ok(())
}

#[test]
fn long_texts_keep_the_end_token() {
    let tok = ClipTokenizer::new();
    let ids = tok.encode(&"word ".repeat(200));
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], tok.start_of_text());
    assert_eq!(ids[76], tok.end_of_text());
}
