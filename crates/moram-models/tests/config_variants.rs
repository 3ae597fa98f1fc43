//! Config fields real checkpoints carry, against `transformers`
//! (`tests/fixtures/llm/generate_config_variants.py`): q/k/v/o and MLP biases, RoPE scaling
//! `linear`, `dynamic` (recomputed past the trained length, also step by step in generation) and
//! `default`, and Gemma's activation as transformers 4.45.2 picks it.

use moram_models::llm::{Activation, Arch, CausalLm, KvCache, LlmConfig, RopeScaling};
use moram_models::WeightSource;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm")
}

fn expected(file: &str) -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(dir().join(file))?.into_iter().collect())
}

/// `config.json` of `model` with `edit` applied, written into `tmp`.
fn config_with(model: &str, tmp: &Path, edit: impl FnOnce(&mut serde_json::Value)) -> anyhow::Result<LlmConfig> {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join(model).join("config.json"))?)?;
    edit(&mut json);
    let path = tmp.join("config.json");
    std::fs::write(&path, serde_json::to_string(&json)?)?;
    Ok(LlmConfig::from_hf_json(&path)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn biases_and_rope_scalings_match_transformers() -> anyhow::Result<()> {
    let e = expected("tiny_llama_bias_expected.safetensors")?;
    let tmp = tempfile::tempdir()?;
    let source = WeightSource::open(dir().join("tiny_llama_bias"))?;
    for (name, scaling) in [
        ("none", serde_json::Value::Null),
        ("linear", serde_json::json!({"rope_type": "linear", "factor": 2.0})),
        ("dynamic", serde_json::json!({"type": "dynamic", "factor": 2.0})),
        ("default", serde_json::json!({"rope_type": "default"})),
    ] {
        let config = config_with("tiny_llama_bias", tmp.path(), |j| j["rope_scaling"] = scaling)?;
        assert!(config.attention_bias && config.mlp_bias);
        match name {
            "linear" => assert_eq!(config.rope_scaling, Some(RopeScaling::Linear { factor: 2.0 })),
            "dynamic" => assert_eq!(config.rope_scaling, Some(RopeScaling::Dynamic { factor: 2.0 })),
            _ => assert_eq!(config.rope_scaling, None, "{name} is the plain RoPE"),
        }
        let model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu)?;
        let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
        let diff = max_diff(&logits, &e[&format!("logits_{name}")]);
        assert!(diff <= 1e-4, "{name}: logits differ by {diff}");
        if name == "dynamic" {
            // 21 positions > 16: the recomputed base changes the result.
            assert!(max_diff(&logits, &e["logits_none"]) > 1e-3);
            let prompt = Vec::<i64>::try_from(e["ids"].get(0).narrow(0, 0, 12))?;
            assert_eq!(model.generate_greedy(&prompt, 8, &[])?, Vec::<i64>::try_from(&e["greedy_dynamic"])?);
        }
    }
    // The biases are base tensors: listed, and never trained.
    let config = config_with("tiny_llama_bias", tmp.path(), |_| {})?;
    let model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu)?;
    let names: Vec<String> = model.base_tensors().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"model.layers.1.self_attn.o_proj.bias".to_string()));
    assert!(names.contains(&"model.layers.0.mlp.down_proj.bias".to_string()));
    let with_biases = config.parameter_count();
    let without = LlmConfig { attention_bias: false, mlp_bias: false, ..config.clone() }.parameter_count();
    // Per block: q 64, k 32, v 32, o 64 and gate 96, up 96, down 64.
    assert_eq!(with_biases - without, 2 * (64 + 32 + 32 + 64 + 96 + 96 + 64));
    Ok(())
}

#[test]
fn gemma_activation_follows_transformers_4_45_2() -> anyhow::Result<()> {
    let tanh = expected("tiny_gemma_expected.safetensors")?;
    let exact = expected("tiny_gemma_gelu_expected.safetensors")?;
    let tmp = tempfile::tempdir()?;
    let source = WeightSource::open(dir().join("tiny_gemma"))?;
    // (hidden_act, hidden_activation) as real Gemma checkpoints carry them; 4.45.2 reads only the
    // second, tanh GELU when absent.
    for (act, activation, want) in [
        (Some("gelu"), None, Activation::GeluTanh),
        (Some("gelu"), Some("gelu_pytorch_tanh"), Activation::GeluTanh),
        (None, None, Activation::GeluTanh),
        (Some("gelu_pytorch_tanh"), Some("gelu"), Activation::Gelu),
        (Some("gelu"), Some("gelu"), Activation::Gelu),
    ] {
        let config = config_with("tiny_gemma", tmp.path(), |j| {
            let o = j.as_object_mut().expect("an object");
            o.remove("hidden_act");
            o.remove("hidden_activation");
            if let Some(a) = act {
                o.insert("hidden_act".into(), a.into());
            }
            if let Some(a) = activation {
                o.insert("hidden_activation".into(), a.into());
            }
        })?;
        assert_eq!(config.activation, want, "{act:?} / {activation:?}");
        let model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu)?;
        let e = if want == Activation::Gelu { &exact } else { &tanh };
        let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
        let diff = max_diff(&logits, &e["logits"]);
        assert!(diff <= 1e-4, "{act:?} / {activation:?}: logits differ by {diff}");
    }
    Ok(())
}

#[test]
fn unsupported_fields_are_named_and_the_architecture_first() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // A Gemma 2 config carries fields of its own; the model type is the reason given.
    let err = config_with("tiny_gemma", tmp.path(), |j| {
        j["model_type"] = "gemma4".into();
        j["attn_logit_softcapping"] = 50.0.into();
        j["query_pre_attn_scalar"] = 256.into();
    })
    .unwrap_err();
    assert!(
        matches!(err.downcast_ref::<moram_models::Error>(), Some(moram_models::Error::Corrupt { path, reason }) if path.ends_with("config.json") && reason.starts_with("`model_type`")),
        "the file and the field first: {err:?}"
    );
    let err = err.to_string();
    assert!(
        err.contains(
            "`model_type` `gemma4` is not a supported architecture (llama, gemma, qwen2, qwen3, mistral, gemma3_text, gemma2)"
        ),
        "{err}"
    );
    assert!(!err.contains("softcapping"), "{err}");
    for (edit, want) in [
        (serde_json::json!({"rope_type": "longrope", "factor": 4.0}), "type `longrope` is not supported"),
        (serde_json::json!({"rope_type": "yarn", "factor": 0.5}), "(yarn) needs factor >= 1"),
        (serde_json::json!({"rope_type": "linear"}), "lacks `factor`"),
        (serde_json::json!({"rope_type": "dynamic", "factor": 0.5}), "factor must be >= 1"),
    ] {
        let err = config_with("tiny_llama_bias", tmp.path(), |j| j["rope_scaling"] = edit).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("config.json"), "{err}");
    }
    let err =
        config_with("tiny_gemma", tmp.path(), |j| j["hidden_activation"] = "relu".into()).unwrap_err().to_string();
    assert!(err.contains("`hidden_activation` `relu` is not supported (gelu_pytorch_tanh, gelu_new, gelu)"), "{err}");
    Ok(())
}

#[test]
fn malformed_values_are_named_not_panics() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // Zero heads used to divide by zero when head_dim was derived.
    let err = config_with("tiny_llama_bias", tmp.path(), |j| j["num_attention_heads"] = 0.into()).unwrap_err();
    assert!(err.to_string().contains("`num_attention_heads` 0") && err.to_string().contains("positive"), "{err}");
    // A wrong type names the field's place in the file.
    let err = config_with("tiny_llama_bias", tmp.path(), |j| j["attention_bias"] = "yes".into()).unwrap_err();
    assert!(err.to_string().contains("config.json") && err.to_string().contains("line"), "{err}");
    // Several eos ids or one.
    let c = config_with("tiny_llama_bias", tmp.path(), |j| j["eos_token_id"] = serde_json::json!([2, 7]))?;
    assert_eq!(c.eos_token_ids, vec![2, 7]);
    let c = config_with("tiny_llama_bias", tmp.path(), |j| j["eos_token_id"] = 9.into())?;
    assert_eq!(c.eos_token_ids, vec![9]);
    Ok(())
}

/// Keys published configs carry that change nothing in transformers 4.57.1 load; values that
/// would change the outputs are refused by name (issue: configs users actually have).
#[test]
fn published_config_quirks_load_as_transformers_reads_them() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    // google/gemma-2-2b-it has both activations; Gemma2MLP reads `hidden_activation`.
    let c = config_with("tiny_gemma2", tmp.path(), |j| j["hidden_act"] = "gelu_pytorch_tanh".into())?;
    assert_eq!(c.arch, Arch::Gemma2);
    // gemma-3-1b-it: `cache_implementation`, `hidden_act`, and (re-saved) both pattern spellings.
    let c = config_with("tiny_gemma3", tmp.path(), |j| {
        j["cache_implementation"] = "hybrid".into();
        j["hidden_act"] = "gelu_pytorch_tanh".into();
        j["sliding_window_pattern"] = 6.into();
    })?;
    assert_eq!(c.sliding_layers, Some(vec![true, false, true]));
    // Without `layer_types`, `sliding_window_pattern` decides and `_sliding_window_pattern` is not
    // read, as Gemma3TextConfig does (both 2 and 6: pattern 2; only the underscored 2: the default 6).
    let c = config_with("tiny_gemma3", tmp.path(), |j| {
        j.as_object_mut().unwrap().remove("layer_types");
        j["sliding_window_pattern"] = 2.into();
    })?;
    assert_eq!(c.sliding_layers, Some(vec![true, false, true]));
    let c = config_with("tiny_gemma3", tmp.path(), |j| {
        j.as_object_mut().unwrap().remove("layer_types");
        j["_sliding_window_pattern"] = 2.into();
    })?;
    assert_eq!(c.sliding_layers, Some(vec![true, true, true]));
    // transformers stores Gemma 3's attention soft-cap and never applies it: so does moram.
    let c = config_with("tiny_gemma3", tmp.path(), |j| j["attn_logit_softcapping"] = 2.0.into())?;
    assert_eq!(c.attn_logit_softcapping, None);
    // Qwen2.5 configs: `use_sliding_window` with `max_window_layers` covering every layer windows
    // nothing; a window that starts within the model is refused by name.
    let c = config_with("tiny_qwen2", tmp.path(), |j| {
        j.as_object_mut().unwrap().remove("layer_types");
        j["use_sliding_window"] = true.into();
        j["max_window_layers"] = 2.into();
    })?;
    assert_eq!((c.arch, c.sliding_window), (Arch::Qwen2, None));
    let err = config_with("tiny_qwen2", tmp.path(), |j| {
        j.as_object_mut().unwrap().remove("layer_types");
        j["use_sliding_window"] = true.into();
        j["max_window_layers"] = 1.into();
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("`use_sliding_window` / `max_window_layers` / `layer_types`"), "{err}");
    Ok(())
}
