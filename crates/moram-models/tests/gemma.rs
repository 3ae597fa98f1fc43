//! Gemma against `transformers` (`tests/fixtures/llm/generate_gemma.py`): multi-query attention,
//! head_dim 32 with hidden 48 / 2 heads, tanh GeGLU, (1 + w) RMSNorm, sqrt(hidden) embedding
//! scale, tied head.

use moram_models::llm::{Arch, CausalLm, KvCache, LlmConfig};
use moram_models::WeightSource;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[test]
fn gemma_logits_and_greedy_tokens_match_transformers() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm");
    let config = LlmConfig::from_hf_json(dir.join("tiny_gemma/config.json"))?;
    assert_eq!(config.arch, Arch::Gemma);
    assert!(config.tie_word_embeddings && config.num_key_value_heads == 1 && config.head_dim == 32);
    let model = CausalLm::from_hf(&WeightSource::open(dir.join("tiny_gemma"))?, &config, Kind::Float, Device::Cpu)?;
    let e: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("tiny_gemma_expected.safetensors"))?.into_iter().collect();
    let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
    let diff = (&logits - &e["logits"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "logits differ by {diff}");
    let prompt = Vec::<i64>::try_from(e["ids"].get(0).narrow(0, 0, 6))?;
    assert_eq!(model.generate_greedy(&prompt, 8, &[])?, Vec::<i64>::try_from(&e["greedy"])?);

    let tmp = tempfile::tempdir()?;
    let text = std::fs::read_to_string(dir.join("tiny_gemma/config.json"))?;
    std::fs::write(
        tmp.path().join("config.json"),
        text.replace("\"hidden_activation\": \"gelu_pytorch_tanh\"", "\"hidden_activation\": \"relu\""),
    )?;
    let err = LlmConfig::from_hf_json(tmp.path().join("config.json")).unwrap_err().to_string();
    assert!(err.contains("`hidden_activation` `relu` is not supported"), "{err}");
    Ok(())
}
