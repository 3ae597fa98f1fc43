//! LoRA exports: a SeqLoRA adapter of fixed values on the tiny random LLaMA, exported as a PEFT
//! folder and as a merged checkpoint. The merged checkpoint, loaded as a plain model, gives the
//! logits moram computes with the adapter; PEFT's own loading onto the `transformers` model gave
//! the same logits when `tests/fixtures/llm/generate_peft.py` ran (its numbers are committed in
//! `peft_export_reference.json`, for the export whose SHA-256 it records). MoRAM adapters are
//! refused.

use moram_cl::export::LoraExport;
use moram_cl::learners::llm::LlmLearner;
use moram_cl::synthetic::write_tiny_run;
use moram_cl::{Learner, RunConfig};
use moram_models::llm::{CausalLm, KvCache, LlmConfig};
use sha2::{Digest, Sha256};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Token ids the logits are compared on (the tiny tokenizer has 400).
const IDS: [i64; 10] = [1, 17, 250, 42, 99, 3, 377, 128, 64, 5];

/// The learner of a `method` run over the tiny model in `root`, its atoms set to fixed values
/// (nothing depends on training numerics).
fn fixed_adapter(root: &Path, method: &str) -> (RunConfig, LlmLearner) {
    let path = write_tiny_run(root, method, 1, &["LastWord"]).unwrap();
    let cfg = RunConfig::from_file(&path).unwrap();
    let mut learner = LlmLearner::for_generation(&cfg).unwrap();
    let _guard = tch::no_grad_guard();
    for (i, (_, m)) in learner.moram_layers_mut().into_iter().enumerate() {
        m.bank_mut().begin_task(0).unwrap();
        let params = m.bank().trainable_tensors();
        for (j, p) in params.iter().enumerate() {
            let n = p.numel() as i64;
            let phase = 0.7 * i as f64 + 1.3 * j as f64;
            let values = (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.37 + phase).sin() * 0.08;
            let mut p = p.shallow_clone();
            p.copy_(&values.view(p.size().as_slice()));
        }
    }
    (cfg, learner)
}

fn logits(model: &CausalLm) -> Tensor {
    let ids = Tensor::from_slice(&IDS).view([1, IDS.len() as i64]);
    tch::no_grad(|| model.forward(&ids, &mut KvCache::default())).unwrap()
}

#[test]
fn lora_exports_give_the_logits_of_the_adapter() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let (_, learner) = fixed_adapter(tmp.path(), "seq-lora");
    let with_adapter = logits(learner.model());
    let file = tmp.path().join("adapter.safetensors");
    let layers = learner.moram_layers();
    moram_core::save_adapter(&file, layers.iter().map(|(p, m)| (p.as_str(), m.bank())), &Default::default()).unwrap();
    let adapter = moram_core::AdapterFile::load(&file, Device::Cpu).unwrap();
    let lora = LoraExport::from_adapter(&adapter).unwrap();
    assert_eq!(lora.layers.len(), 6, "q, v, down of 2 blocks");

    // PEFT folder: A and B as stored, r 4 and alpha = r * value_scale.
    let peft = tmp.path().join("peft");
    lora.write_peft(&peft, "model").unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(peft.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((config["peft_type"].as_str(), config["r"].as_i64()), (Some("LORA"), Some(4)));
    assert_eq!(config["lora_alpha"].as_f64(), Some(4.0 * adapter.config.value_scale));
    let stored = Tensor::read_safetensors(peft.join("adapter_model.safetensors")).unwrap();
    let (name, a, b) = &lora.layers[0];
    let find = |key: String| stored.iter().find(|(k, _)| *k == key).map(|(_, t)| t.shallow_clone()).unwrap();
    assert!(find(format!("base_model.model.{name}.lora_A.weight")).equal(a));
    assert!(find(format!("base_model.model.{name}.lora_B.weight")).equal(b));

    // Merged: the base with the update folded in, loaded as a plain model, gives the adapter's logits.
    let merged = tmp.path().join("merged");
    lora.write_merged(&tmp.path().join("model"), &merged).unwrap();
    assert!(merged.join("tokenizer.json").exists() && merged.join("config.json").exists());
    let model_cfg = LlmConfig::from_hf_json(merged.join("config.json")).unwrap();
    let source = moram_models::WeightSource::open(&merged).unwrap();
    let plain = CausalLm::from_hf(&source, &model_cfg, Kind::Float, Device::Cpu).unwrap();
    let diff = (logits(&plain) - &with_adapter).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "merged logits differ by {diff}");
    let base = moram_models::WeightSource::open(tmp.path().join("model")).unwrap();
    let untouched = CausalLm::from_hf(&base, &model_cfg, Kind::Float, Device::Cpu).unwrap();
    assert!((logits(&untouched) - &with_adapter).abs().max().double_value(&[]) > 1e-3, "the adapter changes nothing");

    // PEFT on transformers, as recorded by generate_peft.py for this very export.
    let hash: String = Sha256::digest(std::fs::read(peft.join("adapter_model.safetensors")).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if let Some(dir) = std::env::var_os("MORAM_WRITE_PEFT_FIXTURE") {
        // generate_peft.py asks for the base and the export, and runs PEFT on them.
        let dir = Path::new(&dir);
        for (from, to) in [(tmp.path().join("model"), dir.join("base")), (peft.clone(), dir.join("peft"))] {
            std::fs::create_dir_all(&to).unwrap();
            for entry in std::fs::read_dir(from).unwrap() {
                let path = entry.unwrap().path();
                std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
        let moram = Vec::<f32>::try_from(with_adapter.reshape([-1])).unwrap();
        let out = serde_json::json!({ "ids": IDS, "export_sha256": hash, "moram_logits": moram });
        std::fs::write(dir.join("moram.json"), out.to_string()).unwrap();
        return;
    }
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/peft_export_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(reference["export_sha256"], hash.as_str(), "the export changed: regenerate with `cargo xtask fixtures`");
    let peft_logits: Vec<f32> =
        reference["peft_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let peft_logits = Tensor::from_slice(&peft_logits).view(with_adapter.size().as_slice());
    let diff = (peft_logits - &with_adapter).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "PEFT's logits differ from moram's by {diff}");
}

#[test]
fn moram_adapters_are_not_exported() {
    let _generator = moram_cl::synthetic::exclusive_generator();
    let tmp = tempfile::tempdir().unwrap();
    let (_, learner) = fixed_adapter(tmp.path(), "moram");
    let file = tmp.path().join("adapter.safetensors");
    let layers = learner.moram_layers();
    moram_core::save_adapter(&file, layers.iter().map(|(p, m)| (p.as_str(), m.bank())), &Default::default()).unwrap();
    let adapter = moram_core::AdapterFile::load(&file, Device::Cpu).unwrap();
    let err = LoraExport::from_adapter(&adapter).unwrap_err();
    assert!(matches!(err, moram_cl::Error::NotExportable { ref path, .. } if path == &file), "{err}");
    assert!(err.to_string().contains("a LoRA cannot express"), "{err}");
}
