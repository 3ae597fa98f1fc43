//! CLIP against Hugging Face `transformers` (tiny random checkpoints from
//! `tests/fixtures/clip/generate.py`), in both checkpoint layouts, plus injection.

use moram_core::MoramConfig;
use moram_models::clip::{expected_keys, ClipConfig, ClipModel, Layout};
use moram_models::{TargetSpec, WeightSource};
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip")
}

fn expected() -> anyhow::Result<HashMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(fixtures().join("expected.safetensors"))?.into_iter().collect())
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

fn load(file: &str, layout: Option<Layout>) -> anyhow::Result<ClipModel> {
    let config = ClipConfig::from_hf_json(fixtures().join("config.json"))?;
    let source = WeightSource::open(fixtures().join(file))?;
    Ok(ClipModel::load(&source, &config, layout, Kind::Float, Device::Cpu)?)
}

#[test]
fn both_layouts_match_transformers_within_1e4() -> anyhow::Result<()> {
    let e = expected()?;
    let mut outputs = Vec::new();
    for file in ["hf.safetensors", "openai.safetensors"] {
        let model = load(file, None)?;
        let image = tch::no_grad(|| model.encode_image(&e["pixels"]))?;
        let text = tch::no_grad(|| model.encode_text(&e["ids"]))?;
        let logits = tch::no_grad(|| model.logits(&e["pixels"], &e["ids"]))?;
        assert!(
            max_diff(&image, &e["image_features"]) <= 1e-4,
            "{file}: image {}",
            max_diff(&image, &e["image_features"])
        );
        assert!(max_diff(&text, &e["text_features"]) <= 1e-4, "{file}: text {}", max_diff(&text, &e["text_features"]));
        assert!(
            max_diff(&logits, &e["logits_per_image"]) <= 1e-4,
            "{file}: logits {}",
            max_diff(&logits, &e["logits_per_image"])
        );
        outputs.push((image, text));
    }
    assert!(
        outputs[0].0.equal(&outputs[1].0) && outputs[0].1.equal(&outputs[1].1),
        "the two layouts give identical outputs"
    );
    Ok(())
}

#[test]
fn zero_value_atoms_leave_outputs_exactly_unchanged() -> anyhow::Result<()> {
    let e = expected()?;
    let base = load("hf.safetensors", Some(Layout::HuggingFace))?;
    let mut adapted = load("hf.safetensors", Some(Layout::HuggingFace))?;
    let injected = adapted
        .inject(&TargetSpec::all_encoders(&["qkvoinout"]), &MoramConfig { r: 4, top_k: 4, ..Default::default() })?;
    assert_eq!(injected.len(), 2 * 2 * 6);
    for task in 0..2 {
        adapted.begin_task(task)?;
        for training in [true, false] {
            adapted.set_training(training);
            let a = tch::no_grad(|| adapted.logits(&e["pixels"], &e["ids"]))?;
            let b = tch::no_grad(|| base.logits(&e["pixels"], &e["ids"]))?;
            assert!(a.equal(&b), "task {task}, training {training}");
        }
    }
    Ok(())
}

#[test]
fn vit_b16_qkvoinout_both_encoders_r16_trains_4423680_parameters_per_task() -> anyhow::Result<()> {
    // Zero-filled weights are enough to count; the shapes are the real ViT-B/16's.
    let config = ClipConfig::vit_b16();
    let mut model = ClipModel::random(&config, 0, Kind::BFloat16, Device::Cpu)?;
    let adapted = model.inject(&TargetSpec::all_encoders(&["qkvoinout"]), &moram_core::Profile::Xtail.config())?;
    assert_eq!(adapted.len(), 144, "6 layers x 12 blocks x 2 encoders");
    for task in 0..2 {
        model.begin_task(task)?;
        let n: i64 = model.trainable_tensors().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(n, 4_423_680, "task {task}");
    }
    Ok(())
}

#[test]
fn strict_loading_reports_every_problem() -> anyhow::Result<()> {
    let source = WeightSource::open(fixtures().join("hf.safetensors"))?;
    let mut config = ClipConfig::from_hf_json(fixtures().join("config.json"))?;
    config.text.num_hidden_layers = 3;
    config.projection_dim = 8;
    let err = ClipModel::load(&source, &config, None, Kind::Float, Device::Cpu).unwrap_err();
    match &err {
        moram_models::Error::Mismatch { path, missing, shapes, .. } => {
            assert!(path.ends_with("hf.safetensors"), "{err}");
            assert!(missing.iter().any(|k| k == "text_model.encoder.layers.2.mlp.fc1.weight"), "{err}");
            assert!(shapes.contains(&("visual_projection.weight".into(), vec![8, 32], vec![16, 32])), "{err}");
        }
        other => panic!("expected a checkpoint mismatch, got {other:?}"),
    }
    let err = err.to_string();
    assert!(err.contains("missing keys") && err.contains("text_model.encoder.layers.2.mlp.fc1.weight"), "{err}");
    assert!(err.contains("visual_projection.weight: expected [8, 32], found [16, 32]"), "{err}");
    let config = ClipConfig::from_hf_json(fixtures().join("config.json"))?;
    let err =
        ClipModel::load(&source, &config, Some(Layout::OpenAi), Kind::Float, Device::Cpu).unwrap_err().to_string();
    assert!(
        err.contains("visual.transformer.resblocks.0.attn.in_proj_weight") && err.contains("unexpected keys"),
        "{err}"
    );
    assert_eq!(
        expected_keys(&config, Layout::OpenAi).len(),
        expected_keys(&config, Layout::HuggingFace).len() - 2 * 2 * 4
    );
    let err = ClipConfig::from_hf_json(fixtures().join("absent.json")).unwrap_err();
    assert!(matches!(&err, moram_models::Error::Io { path, .. } if path.ends_with("absent.json")), "{err:?}");
    Ok(())
}

#[test]
fn bad_inputs_are_errors() -> anyhow::Result<()> {
    let model = load("hf.safetensors", None)?;
    let err = model.encode_image(&Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("(B, 3, 32, 32)"), "{err}");
    let err = model.encode_text(&Tensor::from_slice(&[1i64, 200, 99]).view([1, 3])).unwrap_err().to_string();
    assert!(err.contains("[0, 100)"), "{err}");
    Ok(())
}

#[test]
fn zero_shot_capture_and_half_precision_loading() -> anyhow::Result<()> {
    let e = expected()?;
    let tok = moram_models::clip::ClipTokenizer::new();
    // The tiny model's context (16) cannot take CLIP's 77 tokens: a clear input error.
    let err =
        load("hf.safetensors", None)?.zero_shot(&e["pixels"], &["a photo of a cat."], &tok).unwrap_err().to_string();
    assert!(err.contains("invalid input") && err.contains("L <= 16"), "{err}");
    // Full-size random ViT-B/32: zero-shot logits for 2 images x 3 class prompts.
    let big = ClipModel::random(&ClipConfig::vit_b32(), 0, Kind::Float, Device::Cpu)?;
    let pixels = Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| {
        big.zero_shot(&pixels, &["a photo of a cat.", "a photo of a dog.", "a photo of a car."], &tok)
    })?;
    assert_eq!(logits.size(), vec![2, 3]);
    assert!(logits.abs().max().double_value(&[]) <= 100.0 + 1e-3, "|logits| <= exp(logit_scale) = 100");

    let mut model = load("hf.safetensors", None)?;
    model.inject(
        &TargetSpec { encoders: vec!["vision".into()], modules: vec!["q".into()], layers: Some(vec![1]) },
        &MoramConfig { r: 4, top_k: 4, ..Default::default() },
    )?;
    model.begin_task(0)?;
    let path = "vision_model.encoder.layers.1.self_attn.q_proj";
    model.set_capture(path, true)?;
    let _ = tch::no_grad(|| model.encode_image(&e["pixels"]))?;
    let w = model.take_captured(path).expect("captured");
    assert_eq!(w.size(), vec![3, 17, 4], "(images, 1 + 4x4 patches, atoms)");
    assert!(model.set_capture("vision_model.encoder.layers.0.self_attn.q_proj", true).is_err());

    let half = {
        let config = ClipConfig::from_hf_json(fixtures().join("config.json"))?;
        let source = WeightSource::open(fixtures().join("hf.safetensors"))?;
        ClipModel::load(&source, &config, None, Kind::BFloat16, Device::Cpu)?
    };
    let img = tch::no_grad(|| half.encode_image(&e["pixels"]))?;
    assert_eq!(img.kind(), Kind::BFloat16);
    // bf16 keeps 8 mantissa bits; through 2 blocks the features stay within a few percent.
    let rel = max_diff(&img, &e["image_features"]) / e["image_features"].abs().max().double_value(&[]);
    assert!(rel < 0.05, "bf16 relative error {rel}");
    Ok(())
}

#[test]
fn unsupported_config_values_and_corrupt_checkpoints_are_named() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let text = std::fs::read_to_string(fixtures().join("config.json"))?.replace("\"quick_gelu\"", "\"relu\"");
    std::fs::write(dir.path().join("config.json"), text)?;
    let err = ClipConfig::from_hf_json(dir.path().join("config.json")).unwrap_err().to_string();
    assert!(err.contains("hidden_act") && err.contains("\"relu\" is not supported"), "{err}");
    std::fs::write(dir.path().join("bad.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}")?;
    assert!(WeightSource::open(dir.path().join("bad.safetensors")).is_err());
    let err = ClipConfig::preset("vit-h14").unwrap_err().to_string();
    assert!(err.contains("vit-b16, vit-b32, vit-l14"), "{err}");
    Ok(())
}

/// Text pooling in both of transformers' regimes, checked through causality (the hidden state at a
/// position depends only on the tokens up to it): an end-of-text id pools its first position, a
/// row without it pools position 0, the legacy id 2 pools each row's largest id. A `config.json`
/// without `eos_token_id` means transformers' default 49407.
#[test]
fn text_pooling_follows_transformers_in_both_regimes() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(fixtures().join("config.json"))?;
    let mut json: serde_json::Value = serde_json::from_str(&text)?;
    json["text_config"].as_object_mut().map(|t| t.remove("eos_token_id"));
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("config.json"), serde_json::to_string(&json)?)?;
    assert_eq!(ClipConfig::from_hf_json(dir.path().join("config.json"))?.text.eos_token_id, 49407);

    let source = WeightSource::open(fixtures().join("hf.safetensors"))?;
    let model_with = |eos: i64| -> anyhow::Result<ClipModel> {
        let mut config = ClipConfig::from_hf_json(fixtures().join("config.json"))?;
        config.text.eos_token_id = eos;
        Ok(ClipModel::load(&source, &config, None, Kind::Float, Device::Cpu)?)
    };
    let ids = |rows: &[&[i64]]| Tensor::from_slice(&rows.concat()).view([rows.len() as i64, -1]);
    let encode = |m: &ClipModel, rows: &[&[i64]]| tch::no_grad(|| m.encode_text(&ids(rows)));
    let eos99 = model_with(99)?;
    // The first 99 pools, not the later one nor the larger ids after it.
    let pooled = encode(&eos99, &[&[5, 7, 99, 50, 99], &[5, 7, 20, 30, 40]])?;
    assert!(max_diff(&pooled.get(0), &encode(&eos99, &[&[5, 7, 99]])?.get(0)) < 1e-5);
    // No end-of-text id: position 0, i.e. what the first token alone gives.
    assert!(max_diff(&pooled.get(1), &encode(&eos99, &[&[5]])?.get(0)) < 1e-5);
    let legacy = model_with(2)?;
    let pooled = encode(&legacy, &[&[5, 7, 20, 98, 3], &[5, 7, 99, 50, 60]])?;
    assert!(max_diff(&pooled.get(0), &encode(&legacy, &[&[5, 7, 20, 98]])?.get(0)) < 1e-5, "largest id 98");
    assert!(max_diff(&pooled.get(1), &encode(&eos99, &[&[5, 7, 99]])?.get(0)) < 1e-5, "largest id 99");
    assert!(max_diff(&pooled.get(0), &encode(&eos99, &[&[5, 7, 20, 98, 3]])?.get(0)) > 1e-3, "the regimes differ");
    Ok(())
}
