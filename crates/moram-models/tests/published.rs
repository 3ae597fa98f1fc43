//! The `config.json` files the checkpoints users train publish (`tests/fixtures/llm/published/`,
//! where each came from in its README): each loads, resolves to the published size, and a tiny
//! random checkpoint built from it (shrunk in size, every other field kept;
//! `generate_published.py`) gives `transformers`' logits, greedy tokens and loss.

mod common;

use moram_models::llm::{Arch, CausalLm, LlmConfig, RopeScaling};
use moram_models::WeightSource;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/published")
}

/// Loads `published/<name>.json`, checks its family and parameter count (the Hub's count of the
/// checkpoint's language-model tensors), then the shrunk checkpoint against `transformers`.
fn check(name: &str, arch: Arch, parameters: i64) -> anyhow::Result<LlmConfig> {
    let config = LlmConfig::from_hf_json(dir().join(format!("{name}.json")))?;
    assert_eq!(config.arch, arch, "{name}");
    assert_eq!(config.parameter_count(), parameters, "{name}: parameters");
    let tiny = dir().join("tiny").join(name);
    let small = LlmConfig::from_hf_json(tiny.join("config.json"))?;
    let source = WeightSource::open(&tiny)?;
    let model = CausalLm::from_hf(&source, &small, Kind::Float, Device::Cpu)?;
    assert!(source.unused_keys().is_empty(), "{name}: every checkpoint tensor is used");
    let e: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir().join("tiny").join(format!("{name}_expected.safetensors")))?
            .into_iter()
            .collect();
    let _logits = common::assert_matches_transformers(name, &model, &e)?;
    Ok(config)
}

macro_rules! published {
    ($($test:ident: $name:literal, $arch:ident, $params:literal;)*) => {$(
        #[test]
        fn $test() -> anyhow::Result<()> {
            check($name, Arch::$arch, $params).map(|_| ())
        }
    )*};
}

published! {
    llama_2_7b: "llama-2-7b-hf", Llama, 6_738_415_616;
    mistral_7b_v0_1: "mistral-7b-v0.1", Mistral, 7_241_732_096;
    mistral_7b_v0_3: "mistral-7b-v0.3", Mistral, 7_248_023_552;
    gemma_2b: "gemma-2b", Gemma, 2_506_172_416;
    gemma_7b: "gemma-7b-it", Gemma, 8_537_680_896;
    gemma_2_2b: "gemma-2-2b", Gemma2, 2_614_341_888;
    gemma_2_9b: "gemma-2-9b", Gemma2, 9_241_705_984;
    gemma_3_1b: "gemma-3-1b-it", Gemma3, 999_885_952;
    qwen2_5_0_5b: "qwen2.5-0.5b", Qwen2, 494_032_768;
    qwen2_5_7b: "qwen2.5-7b-instruct", Qwen2, 7_615_616_512;
    qwen3_0_6b: "qwen3-0.6b", Qwen3, 596_049_920;
    qwen3_8b: "qwen3-8b", Qwen3, 8_190_735_360;
    smollm2_135m: "smollm2-135m", Llama, 134_515_008;
}

/// LLaMA 3.x: the `llama3` RoPE scaling (factor 8 for 3.1, 32 for 3.2) and three end tokens.
fn llama_3(name: &str, params: i64, factor: f64) -> anyhow::Result<()> {
    let c = check(name, Arch::Llama, params)?;
    let Some(RopeScaling::Llama3(s)) = c.rope_scaling else { panic!("{name}: {:?}", c.rope_scaling) };
    assert_eq!((s.factor, s.original_max_position_embeddings), (factor, 8192.0), "{name}");
    assert_eq!(c.eos_token_ids, vec![128001, 128008, 128009], "{name}");
    Ok(())
}

macro_rules! llama_3 {
    ($($test:ident: $name:literal, $params:literal, $factor:literal;)*) => {$(
        #[test]
        fn $test() -> anyhow::Result<()> {
            llama_3($name, $params, $factor)
        }
    )*};
}

llama_3! {
    llama_3_1_8b: "llama-3.1-8b-instruct", 8_030_261_248, 8.0;
    llama_3_2_1b: "llama-3.2-1b-instruct", 1_235_814_400, 32.0;
    llama_3_2_3b: "llama-3.2-3b-instruct", 3_212_749_824, 32.0;
}

/// Gemma 3 270M lists `layer_types` (and the `_sliding_window_pattern` transformers ignores).
#[test]
fn gemma_3_270m() -> anyhow::Result<()> {
    let c = check("gemma-3-270m", Arch::Gemma3, 268_098_176)?;
    let full: Vec<usize> = (0..18).filter(|&i| !c.sliding_layers.as_ref().expect("layers")[i]).collect();
    assert_eq!(full, [5, 11, 17]);
    Ok(())
}

/// Gemma 3 4B is `Gemma3ForConditionalGeneration`: its `text_config` (linear RoPE scaling, factor
/// 8, on the global layers) is the language model; the end tokens sit at the top level.
#[test]
fn gemma_3_4b() -> anyhow::Result<()> {
    let c = check("gemma-3-4b-it", Arch::Gemma3, 3_880_263_168)?;
    assert_eq!(c.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 }));
    assert_eq!((c.sliding_window, c.eos_token_ids.clone()), (Some(1024), vec![1, 106]));
    assert_eq!(c.rope_local_theta, Some(10_000.0));
    Ok(())
}
