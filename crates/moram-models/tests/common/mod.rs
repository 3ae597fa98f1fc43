//! Helpers shared by moram-models' integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `<assets>/<name>/<file>` as `cargo xtask setup` lays it out ([`moram_assets::test_asset`]):
/// `None` with a printed reason when absent in a plain `cargo test`; a failure under
/// `cargo xtask test`, which set it up.
pub fn asset(name: &str, file: &str) -> Option<PathBuf> {
    moram_assets::test_asset(std::path::Path::new(name).join(file))
}

/// The parity checks every family passes against its `transformers` reference `e`: logits within
/// 1e-4, identical greedy tokens (8 after a 9-token prompt, cached), the masked loss within 1e-5.
/// Returns the logits for family-specific checks.
pub fn assert_matches_transformers(
    name: &str,
    model: &moram_models::llm::CausalLm,
    e: &std::collections::HashMap<String, tch::Tensor>,
) -> anyhow::Result<tch::Tensor> {
    let logits = tch::no_grad(|| model.forward(&e["ids"], &mut moram_models::llm::KvCache::default()))?;
    let diff = (&logits - &e["logits"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "{name}: logits differ by {diff}");
    for row in 0..2 {
        let prompt = Vec::<i64>::try_from(e["ids"].get(row).narrow(0, 0, 9))?;
        let greedy = model.generate_greedy(&prompt, 8, &[])?;
        assert_eq!(greedy, Vec::<i64>::try_from(e["greedy"].get(row))?, "{name}: prompt {row}");
    }
    let loss = model.causal_lm_loss(&e["train_ids"], &e["labels"], Some(&e["train_mask"]))?.double_value(&[]);
    let want = e["loss"].double_value(&[0]);
    assert!((loss - want).abs() <= 1e-5, "{name}: loss {loss} vs {want}");
    // A batch of prompts of different lengths (packed prefill, or the padded batch when a prompt
    // is longer than the attention window) generates what each prompt generates alone.
    let prompts = [(0, 9), (1, 5), (0, 3)]
        .map(|(row, n)| Vec::<i64>::try_from(e["ids"].get(row).narrow(0, 0, n)))
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let config = moram_models::llm::GenerationConfig { max_new_tokens: 6, ..Default::default() };
    let batched = model.generate(&prompts, &config)?;
    for (p, got) in prompts.iter().zip(&batched) {
        assert_eq!(got, &model.generate_greedy(p, 6, &[])?, "{name}: batched prompt of {} tokens", p.len());
    }
    Ok(logits)
}
