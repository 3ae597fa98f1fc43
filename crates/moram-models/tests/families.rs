//! Qwen2, Qwen3, Mistral, Gemma 3 and Gemma 2 against `transformers` (`tests/fixtures/llm/generate_families.py`): tiny random
//! `Qwen2ForCausalLM` (q/k/v biases, untied head) and `Qwen3ForCausalLM` (per-head q/k norms,
//! head_dim 24 != hidden / heads, tied head), loaded through the production loader.

mod common;

use common::assert_matches_transformers;
use moram_core::MoramConfig;
use moram_models::llm::{Arch, CausalLm, KvCache, LlmConfig};
use moram_models::{TargetSpec, WeightSource};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm")
}

fn load(name: &str) -> anyhow::Result<(CausalLm, HashMap<String, Tensor>)> {
    let config = LlmConfig::from_hf_json(dir().join(format!("tiny_{name}/config.json")))?;
    let source = WeightSource::open(dir().join(format!("tiny_{name}")))?;
    let model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu)?;
    assert!(source.unused_keys().is_empty(), "{name}: every checkpoint tensor is used");
    let expected =
        Tensor::read_safetensors(dir().join(format!("tiny_{name}_expected.safetensors")))?.into_iter().collect();
    Ok((model, expected))
}

#[test]
fn configs_resolve_as_transformers_does() -> anyhow::Result<()> {
    let (q2, _) = load("qwen2")?;
    let c = q2.config();
    assert_eq!((c.arch, c.head_dim, c.tie_word_embeddings), (Arch::Qwen2, 16, false));
    assert!(c.has_bias("q_proj") && c.has_bias("v_proj") && !c.has_bias("o_proj") && !c.has_bias("up_proj"));
    let (q3, _) = load("qwen3")?;
    let c = q3.config();
    assert_eq!((c.arch, c.head_dim, c.tie_word_embeddings), (Arch::Qwen3, 24, true));
    assert!(!c.has_bias("q_proj"));
    Ok(())
}

#[test]
fn logits_greedy_tokens_and_loss_match_transformers() -> anyhow::Result<()> {
    for name in ["qwen2", "qwen3"] {
        let (model, e) = load(name)?;
        let _logits = assert_matches_transformers(name, &model, &e)?;
    }
    Ok(())
}

#[test]
fn zero_atoms_change_nothing_and_base_tensors_round_trip() -> anyhow::Result<()> {
    for name in ["qwen2", "qwen3"] {
        let (mut model, e) = load(name)?;
        let before = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
        let config = MoramConfig { r: 4, top_k: 2, ..MoramConfig::default() };
        let injected = model.inject(&TargetSpec::all_encoders(&["q", "k", "v", "o", "gate", "up", "down"]), &config)?;
        assert_eq!(injected.len(), 14, "{name}: every linear layer of both blocks");
        model.begin_task(0)?;
        model.set_training(false);
        let after = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
        assert!(before.equal(&after), "{name}: fresh atoms (values 0) must not change the output");
        // base_tensors lists exactly the checkpoint's tensors (q/k norms and biases included).
        let source = WeightSource::open(dir().join(format!("tiny_{name}")))?;
        let mut keys: Vec<String> = model.base_tensors().into_iter().map(|(k, _)| k).collect();
        keys.sort();
        assert_eq!(keys, source.keys(), "{name}");
    }
    Ok(())
}

#[test]
fn sliding_window_configs_are_refused_by_name() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let text = std::fs::read_to_string(dir().join("tiny_qwen2/config.json"))?;
    let path = tmp.path().join("config.json");
    let windowed = text.replace("\"use_sliding_window\": false", "\"use_sliding_window\": true");
    std::fs::write(&path, windowed.replace("\"full_attention\",", "\"sliding_attention\","))?;
    let err = LlmConfig::from_hf_json(&path).unwrap_err().to_string();
    assert!(
        err.contains("sliding-window attention on some layers is not supported yet") && err.contains("config.json"),
        "{err}"
    );
    std::fs::write(&path, text.replace("\"vocab_size\"", "\"attn_logit_softcapping\": 30.0, \"vocab_size\""))?;
    let err = LlmConfig::from_hf_json(&path).unwrap_err().to_string();
    assert!(err.contains("`attn_logit_softcapping` is not a supported Qwen2 config field"), "{err}");
    Ok(())
}

/// Mistral: the sliding window (5 tokens, prompts of 21) masks as transformers does, in the full
/// forward pass, in cached generation and in the loss.
#[test]
fn mistral_sliding_window_matches_transformers() -> anyhow::Result<()> {
    let (model, e) = load("mistral")?;
    assert_eq!((model.config().arch, model.config().sliding_window), (Arch::Mistral, Some(5)));
    let _logits = assert_matches_transformers("mistral", &model, &e)?;
    // Without the window the same weights give other logits: the test above is not vacuous.
    let mut full = model.config().clone();
    full.sliding_window = None;
    let source = WeightSource::open(dir().join("tiny_mistral"))?;
    let unwindowed = CausalLm::from_hf(&source, &full, Kind::Float, Device::Cpu)?;
    let other = tch::no_grad(|| unwindowed.forward(&e["ids"], &mut KvCache::default()))?;
    assert!((&other - &e["logits"]).abs().max().double_value(&[]) > 1e-3);
    Ok(())
}

/// Gemma 3: norms around attention and MLP, q/k norms, a local-global-local pattern with a 4-token
/// window and its own RoPE base, scores scaled by query_pre_attn_scalar (24) rather than head_dim
/// (32): logits, cached greedy generation and the loss equal transformers'.
#[test]
fn gemma3_matches_transformers() -> anyhow::Result<()> {
    let (model, e) = load("gemma3")?;
    let c = model.config();
    assert_eq!(
        (c.arch, c.sliding_window, c.sliding_layers.clone()),
        (Arch::Gemma3, Some(4), Some(vec![true, false, true]))
    );
    let _logits = assert_matches_transformers("gemma3", &model, &e)?;
    let source = WeightSource::open(dir().join("tiny_gemma3"))?;
    let mut keys: Vec<String> = model.base_tensors().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(keys, source.keys(), "base_tensors lists the four norms and q/k norms of every block");
    Ok(())
}

/// Gemma 2: the sandwich block, alternating windowed and global layers, attention scores and logits
/// soft-capped (at 0.5 and 2.0 here, so the caps change the result): logits, cached greedy tokens
/// and the loss equal transformers' eager attention.
#[test]
fn gemma2_matches_transformers() -> anyhow::Result<()> {
    let (model, e) = load("gemma2")?;
    let c = model.config();
    assert_eq!((c.arch, c.sliding_layers.clone()), (Arch::Gemma2, Some(vec![true, false, true])));
    assert_eq!((c.attn_logit_softcapping, c.final_logit_softcapping), (Some(0.5), Some(2.0)));
    let logits = assert_matches_transformers("gemma2", &model, &e)?;
    assert!(logits.abs().max().double_value(&[]) <= 2.0, "the final cap bounds every logit");
    Ok(())
}

/// YaRN RoPE scaling as transformers 4.57.1 computes it: Qwen2 with the defaults (as Qwen2.5 and
/// Qwen3 long-context configs set it) and LLaMA with every option (`mscale` / `mscale_all_dim`,
/// betas, no truncation), on prompts past the original context: logits, greedy tokens and loss.
#[test]
fn yarn_matches_transformers() -> anyhow::Result<()> {
    use moram_models::llm::RopeScaling;
    for (name, attention) in [
        ("qwen2_yarn", 0.1 * 4f64.ln() + 1.0),
        ("llama_yarn", (0.1 * 1.2 * 4f64.ln() + 1.0) / (0.1 * 0.6 * 4f64.ln() + 1.0)),
    ] {
        let (model, e) = load(name)?;
        let Some(RopeScaling::Yarn(y)) = model.config().rope_scaling else { panic!("{name}: not yarn") };
        assert!((y.attention_factor - attention).abs() < 1e-12, "{name}: {y:?}");
        let _logits = assert_matches_transformers(name, &model, &e)?;
    }
    Ok(())
}

/// GGUF files written by llama.cpp's own `convert_hf_to_gguf.py` (llama.cpp commit `0c1e57098`;
/// `generate_llamacpp_gguf.py`) from the tiny checkpoint of every family moram reads from GGUF give
/// the logits, greedy tokens and loss `transformers` computes from what was converted; the config
/// read from `{arch}.*` metadata is the checkpoint's. LLaMA 3.2 covers llama.cpp's q/k row
/// permutation and its `rope_freqs.weight` (the llama3 RoPE scaling as per-frequency divisors);
/// two more files carry `rope.scaling.*` metadata: YaRN (Qwen2) and linear (Gemma 3, factor 8).
#[test]
fn llama_cpp_converter_files_match_transformers() -> anyhow::Result<()> {
    use moram_models::llm::{GgufFile, RopeScaling};
    for (name, source) in [
        ("llama32", "llama32"),
        ("gemma", "gemma"),
        ("gemma2", "gemma2"),
        ("gemma3", "gemma3"),
        ("qwen2", "qwen2"),
        ("qwen3", "qwen3"),
        ("qwen2_yarn", "qwen2_yarn"),
        ("gemma3_linear", "gemma3"),
    ] {
        let (hf, _) = load(source)?;
        let file = GgufFile::open(dir().join(format!("llamacpp/tiny_{name}.gguf")))?;
        let model = CausalLm::from_gguf(&file, Kind::Float, Device::Cpu)?;
        let (a, b) = (hf.config(), model.config());
        assert_eq!(
            (a.arch, a.head_dim, a.num_key_value_heads, a.tie_word_embeddings, a.sliding_window),
            (b.arch, b.head_dim, b.num_key_value_heads, b.tie_word_embeddings, b.sliding_window),
            "{name}: config from metadata"
        );
        assert_eq!(
            (a.attn_logit_softcapping, a.final_logit_softcapping, a.activation, a.rope_theta),
            (b.attn_logit_softcapping, b.final_logit_softcapping, b.activation, b.rope_theta),
            "{name}"
        );
        assert_eq!(a.rope_local_theta, b.rope_local_theta, "{name}");
        if source.starts_with("gemma") && source != "gemma" {
            // What llama.cpp assumes instead of storing, and the converted checkpoint therefore set.
            assert_eq!(b.query_pre_attn_scalar, Some(b.head_dim as f64), "{name}");
        }
        if source == "gemma3" {
            // Six layers, five windowed then a global one (the pattern llama.cpp assumes), with
            // fresh weights: the generator's Gemma 3 source differs from `tiny_gemma3` there only.
            assert_eq!(b.sliding_layers, Some(vec![true, true, true, true, true, false]), "{name}");
        }
        match name {
            "llama32" => {
                let factors = b.rope_freq_factors.clone().expect("rope_freqs read");
                assert_eq!(factors.len(), 8);
                assert_eq!((factors[0], factors[7]), (1.0, 32.0), "short wavelengths kept, long ones slowed");
                assert!(a.rope_scaling.is_some() && b.rope_scaling.is_none());
            }
            "gemma3_linear" => assert_eq!(b.rope_scaling, Some(RopeScaling::Linear { factor: 8.0 })),
            _ => assert_eq!(a.rope_scaling, b.rope_scaling, "{name}: RoPE scaling from metadata"),
        }
        if name == "qwen2_yarn" {
            assert!(matches!(b.rope_scaling, Some(RopeScaling::Yarn(_))));
        }
        let e: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir().join(format!("llamacpp/tiny_{name}_expected.safetensors")))?
                .into_iter()
                .collect();
        let logits = assert_matches_transformers(&format!("llama.cpp {name}"), &model, &e)?;
        if name == "gemma3_linear" {
            // Same weights as `gemma3`: the scaling of the global layer changes the result.
            let plain = Tensor::read_safetensors(dir().join("llamacpp/tiny_gemma3_expected.safetensors"))?;
            let plain = &plain.iter().find(|(k, _)| k == "logits").expect("logits").1;
            assert!((&logits - plain).abs().max().double_value(&[]) > 1e-3);
        }
    }
    Ok(())
}
