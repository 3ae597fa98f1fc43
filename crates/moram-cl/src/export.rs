//! Exporting LoRA-type adapters for other tools: a PEFT adapter folder, or a Hugging Face
//! checkpoint with the update folded into the base weights (`moram export`).
//!
//! An adapter whose layers route with [`Routing::Lora`] or [`Routing::Sum`] (SeqLoRA, O-LoRA,
//! IncLoRA, InfLoRA, TreeLoRA, replay, EWC, LwF, MTL) adds `value_scale * B (A x)` to every adapted linear,
//! every atom always on: exactly a LoRA of rank R (all tasks' atoms) with `lora_A = A`
//! `(R, d_in)`, `lora_B = B` `(d_out, R)` and PEFT's scaling `lora_alpha / r = value_scale`.
//! MoRAM's own routings weigh atoms per token (top-k, softmax, the inference gate) and a task gate
//! picks atoms per prompt: no LoRA computes that, so those adapters are refused (serve them with
//! `moram serve`).

use crate::error::{Error, Result};
use moram_core::{AdapterFile, Routing};
use moram_models::WeightSource;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Largest shard of a merged checkpoint (bytes), as `transformers` shards by default.
const SHARD_BYTES: usize = 5 << 30;

/// An adapter as one LoRA per layer.
#[derive(Debug)]
pub struct LoraExport {
    /// `(module, A (R, d_in), B (d_out, R))` per adapted layer, in module order (f32, CPU).
    pub layers: Vec<(String, Tensor, Tensor)>,
    /// PEFT's `lora_alpha / r`: the adapter's `value_scale`.
    pub scale: f64,
}

impl LoraExport {
    /// The LoRA of an adapter file; refuses adapters no LoRA computes, saying why.
    pub fn from_adapter(file: &AdapterFile) -> Result<Self> {
        let refuse = |why: String| Error::NotExportable { path: file.path.clone(), reason: why };
        if !matches!(file.config.routing, Routing::Lora {} | Routing::Sum {}) {
            return Err(refuse(format!(
                "routes with {:?}: each token weighs the atoms (top-k, softmax, gate), which a LoRA cannot express",
                file.config.routing
            )));
        }
        if file.task_gate().is_some() {
            return Err(refuse("holds a task gate that picks atoms per prompt".into()));
        }
        let layers = file
            .layer_names()
            .into_iter()
            .filter_map(|name| file.bank(name).map(|bank| (name, bank)))
            .filter(|(_, bank)| !bank.is_empty())
            .map(|(name, bank)| {
                let a = bank.keys_tensor().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                let b = bank.values_tensor().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
                (name.to_string(), a, b)
            })
            .collect::<Vec<_>>();
        if layers.is_empty() {
            return Err(refuse("has no atoms".into()));
        }
        Ok(LoraExport { layers, scale: file.config.value_scale })
    }

    /// Writes a PEFT adapter folder: `adapter_config.json` and `adapter_model.safetensors`
    /// (`base_model.model.<module>.lora_{A,B}.weight`). Ranks that differ between layers (after
    /// pruning) go to `rank_pattern` / `alpha_pattern`.
    pub fn write_peft(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let ranks: Vec<i64> = self.layers.iter().map(|(_, a, _)| a.size()[0]).collect();
        let r = mode(&ranks);
        let alpha = |rank: i64| self.scale * rank as f64;
        let mut rank_pattern = serde_json::Map::new();
        let mut alpha_pattern = serde_json::Map::new();
        for ((name, _, _), &rank) in self.layers.iter().zip(&ranks) {
            if rank != r {
                rank_pattern.insert(name.clone(), json!(rank));
                alpha_pattern.insert(name.clone(), json!(alpha(rank)));
            }
        }
        let modules: Vec<&str> = self.layers.iter().map(|(n, _, _)| n.as_str()).collect();
        let config = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": r,
            "lora_alpha": alpha(r),
            "lora_dropout": 0.0,
            "target_modules": modules,
            "rank_pattern": rank_pattern,
            "alpha_pattern": alpha_pattern,
            "bias": "none",
            "fan_in_fan_out": false,
            "use_rslora": false,
            "use_dora": false,
            "inference_mode": true,
            "modules_to_save": null,
        });
        let text = serde_json::to_string_pretty(&config).map_err(|e| Error::io(dir, std::io::Error::other(e)))?;
        crate::checkpoint::write_atomic(&dir.join("adapter_config.json"), text.as_bytes())?;
        let mut tensors = Vec::new();
        for (name, a, b) in &self.layers {
            tensors.push((format!("base_model.model.{name}.lora_A.weight"), a.shallow_clone()));
            tensors.push((format!("base_model.model.{name}.lora_B.weight"), b.shallow_clone()));
        }
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write_safetensors(&dir.join("adapter_model.safetensors"), &tensors, &meta)
    }

    /// Writes a Hugging Face checkpoint in `dir`: every tensor of the base folder `base`, each
    /// adapted `<module>.weight` replaced by `W + scale * B A` (computed in f32, stored in the
    /// base's dtype), in shards of at most 5 GiB with an index when there are several; the base's
    /// other files (config, tokenizer, generation config) copied.
    pub fn write_merged(&self, base: &Path, dir: &Path) -> Result<()> {
        if !base.is_dir() {
            return Err(Error::config(
                "model.path",
                format!(
                    "{}: a merged export needs the base as a Hugging Face folder (config.json + safetensors); \
                     export the PEFT adapter for a GGUF base",
                    base.display()
                ),
            ));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let source = WeightSource::open(base)?;
        let updates: BTreeMap<String, &(String, Tensor, Tensor)> =
            self.layers.iter().map(|l| (format!("{}.weight", l.0), l)).collect();
        for key in updates.keys() {
            if !source.contains(key) {
                return Err(Error::Checkpoint {
                    path: base.into(),
                    message: format!("has no tensor `{key}` for the adapted layer; is it the adapter's base?"),
                });
            }
        }
        let mut keys: Vec<String> = source.keys().into_iter().map(str::to_string).collect();
        keys.sort();
        // Shards are written as they fill (the model is never whole in memory) under temporary
        // names, renamed once their count is known.
        let mut parts: Vec<(std::path::PathBuf, Vec<String>)> = Vec::new();
        let mut shard: Vec<(String, Tensor)> = Vec::new();
        let mut size = 0usize;
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let mut flush = |shard: &mut Vec<(String, Tensor)>| -> Result<()> {
            let tmp = dir.join(format!(".part-{}.safetensors.tmp", parts.len()));
            write_safetensors(&tmp, shard, &meta)?;
            parts.push((tmp, shard.drain(..).map(|(k, _)| k).collect()));
            Ok(())
        };
        for key in keys {
            let kind = source.kind(&key).unwrap_or(Kind::Float);
            let mut t = source.get_any_shape(&key, kind, Device::Cpu)?;
            if let Some((_, a, b)) = updates.get(&key) {
                let merged = t.to_kind(Kind::Float) + b.matmul(a) * self.scale;
                t = merged.to_kind(kind);
            }
            let bytes = t.numel() * t.kind().elt_size_in_bytes();
            if size + bytes > SHARD_BYTES && !shard.is_empty() {
                flush(&mut shard)?;
                size = 0;
            }
            size += bytes;
            shard.push((key, t));
        }
        flush(&mut shard)?;
        let n = parts.len();
        let mut weight_map = serde_json::Map::new();
        for (i, (tmp, keys)) in parts.iter().enumerate() {
            let name = if n == 1 {
                "model.safetensors".to_string()
            } else {
                format!("model-{:05}-of-{n:05}.safetensors", i + 1)
            };
            std::fs::rename(tmp, dir.join(&name)).map_err(|e| Error::io(tmp, e))?;
            for key in keys {
                weight_map.insert(key.clone(), json!(name));
            }
        }
        if n > 1 {
            let index = json!({ "metadata": {}, "weight_map": weight_map });
            let text = serde_json::to_string_pretty(&index).map_err(|e| Error::io(dir, std::io::Error::other(e)))?;
            crate::checkpoint::write_atomic(&dir.join("model.safetensors.index.json"), text.as_bytes())?;
        }
        let entries = std::fs::read_dir(base).map_err(|e| Error::io(base, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(base, e))?.path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let weights =
                name.ends_with(".safetensors") || name == "model.safetensors.index.json" || name.ends_with(".bin");
            if path.is_file() && !weights {
                std::fs::copy(&path, dir.join(&name)).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// The most common value (the smallest among ties).
fn mode(values: &[i64]) -> i64 {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for &v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.iter().max_by_key(|(v, c)| (**c, std::cmp::Reverse(**v))).map_or(0, |(v, _)| *v)
}

/// `tensors` as one safetensors file (written through a temporary file and a rename).
fn write_safetensors(path: &Path, tensors: &[(String, Tensor)], meta: &BTreeMap<String, String>) -> Result<()> {
    let bad = |m: String| Error::Checkpoint { path: path.into(), message: m };
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.contiguous();
        let dtype = match t.kind() {
            Kind::Float => safetensors::Dtype::F32,
            Kind::BFloat16 => safetensors::Dtype::BF16,
            Kind::Half => safetensors::Dtype::F16,
            Kind::Double => safetensors::Dtype::F64,
            Kind::Int64 => safetensors::Dtype::I64,
            other => return Err(bad(format!("tensor `{name}` has dtype {other:?}, which export does not write"))),
        };
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.copy_data_u8(&mut bytes, numel);
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, bytes));
    }
    let views = owned
        .iter()
        .map(|(n, d, s, b)| {
            safetensors::tensor::TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta: std::collections::HashMap<String, String> = meta.clone().into_iter().collect();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))?;
    crate::checkpoint::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_common_rank_is_the_mode() {
        assert_eq!(super::mode(&[8, 8, 4, 8, 4]), 8);
        assert_eq!(super::mode(&[4, 8]), 4);
    }
}
