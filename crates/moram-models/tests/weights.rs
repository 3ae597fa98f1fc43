//! WeightSource: single files, shard indexes, dtype conversion, strict reports, corrupt input.

use moram_models::{Error, WeightSource};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn write(path: &Path, tensors: &[(&str, &Tensor)]) -> anyhow::Result<()> {
    Tensor::write_safetensors(tensors, path)?;
    Ok(())
}

/// The variant of `err` and the file and key it names: `(kind, file name, key)`.
fn named(err: &Error) -> (&'static str, String, Option<String>) {
    let file = |p: &Path| p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    match err {
        Error::MissingKey { path, key } => ("missing", file(path), Some(key.clone())),
        Error::Shape { path, key, .. } => ("shape", file(path), Some(key.clone())),
        Error::Dtype { path, key, .. } => ("dtype", file(path), Some(key.clone())),
        Error::Corrupt { path, .. } => ("corrupt", file(path), None),
        Error::Io { path, .. } => ("io", file(path), None),
        Error::Mismatch { path, .. } => ("mismatch", file(path), None),
        other => panic!("not a file error: {other:?}"),
    }
}

fn sample() -> (Tensor, Tensor, Tensor) {
    let w = Tensor::arange(12, (Kind::Float, Device::Cpu)).view([3, 4]) / 7.0;
    let b = Tensor::from_slice(&[0.5f32, -1.25, 2.0]);
    let e = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
    (w, b, e)
}

#[test]
fn loads_single_files_in_every_float_dtype() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (w, b, _) = sample();
    for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
        let path = dir.path().join(format!("{kind:?}.safetensors"));
        write(&path, &[("layer.weight", &w.to_kind(kind)), ("layer.bias", &b.to_kind(kind))])?;
        let src = WeightSource::open(&path)?;
        assert_eq!(src.keys(), vec!["layer.bias", "layer.weight"]);
        assert_eq!(src.kind("layer.weight"), Some(kind));
        let got = src.get("layer.weight", &[3, 4], Kind::Float, Device::Cpu)?;
        assert!(got.equal(&w.to_kind(kind).to_kind(Kind::Float)), "{kind:?}");
        assert!(!got.requires_grad());
        assert_eq!(src.unused_keys(), vec!["layer.bias".to_string()]);
    }
    Ok(())
}

#[test]
fn loads_sharded_checkpoints_through_the_index() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (w, b, e) = sample();
    write(&dir.path().join("model-00001-of-00002.safetensors"), &[("a.weight", &w), ("a.bias", &b)])?;
    write(&dir.path().join("model-00002-of-00002.safetensors"), &[("embed.weight", &e)])?;
    let index = r#"{"metadata": {"total_size": 84}, "weight_map": {
        "a.weight": "model-00001-of-00002.safetensors",
        "a.bias": "model-00001-of-00002.safetensors",
        "embed.weight": "model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.path().join("model.safetensors.index.json"), index)?;
    for src in [WeightSource::open(dir.path())?, WeightSource::open(dir.path().join("model.safetensors.index.json"))?] {
        assert_eq!(src.keys().len(), 3);
        assert!(src.get("embed.weight", &[2, 3], Kind::Float, Device::Cpu)?.equal(&e));
        assert!(src.get("a.bias", &[3], Kind::Float, Device::Cpu)?.equal(&b));
    }
    // An index that lies about a shard is rejected by name.
    let bad = index.replace("\"embed.weight\": \"model-00002", "\"embed.weight\": \"model-00001");
    std::fs::write(dir.path().join("model.safetensors.index.json"), bad)?;
    let err = WeightSource::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("`embed.weight`") && err.contains("does not hold it"), "{err}");
    Ok(())
}

#[test]
fn strict_check_lists_missing_unexpected_and_misshaped_keys_at_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (w, b, e) = sample();
    let path = dir.path().join("m.safetensors");
    write(&path, &[("a.weight", &w), ("a.bias", &b), ("extra.weight", &e), ("position_ids", &b)])?;
    let src = WeightSource::open(&path)?;
    let expected = vec![
        ("a.weight".to_string(), vec![4, 3]),
        ("a.bias".to_string(), vec![3]),
        ("b.weight".to_string(), vec![2, 2]),
    ];
    let err = src.check(&expected, |k| k == "position_ids").unwrap_err();
    match &err {
        Error::Mismatch { missing, unexpected, shapes, .. } => {
            assert_eq!(missing, &vec!["b.weight".to_string()]);
            assert_eq!(unexpected, &vec!["extra.weight".to_string()]);
            assert_eq!(shapes, &vec![("a.weight".to_string(), vec![4, 3], vec![3, 4])]);
        }
        other => panic!("unexpected error {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("m.safetensors")
            && text.contains("missing keys (1)")
            && text.contains("a.weight: expected [4, 3], found [3, 4]"),
        "{text}"
    );
    let good = vec![
        ("a.weight".to_string(), vec![3, 4]),
        ("a.bias".to_string(), vec![3]),
        ("extra.weight".to_string(), vec![2, 3]),
    ];
    src.check(&good, |k| k == "position_ids")?;
    let err = src.get("a.weight", &[4, 3], Kind::Float, Device::Cpu).unwrap_err();
    assert_eq!(named(&err).0, "shape");
    assert_eq!(named(&err).2.as_deref(), Some("a.weight"));
    let err = err.to_string();
    assert!(err.contains("`a.weight` has shape [3, 4], expected [4, 3]"), "{err}");
    let err = src.get("nope", &[1], Kind::Float, Device::Cpu).unwrap_err();
    assert_eq!((named(&err).0, named(&err).2), ("missing", Some("nope".to_string())));
    let err = err.to_string();
    assert!(err.contains("missing tensor `nope`"), "{err}");
    Ok(())
}

#[test]
fn bad_files_are_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let err = WeightSource::open(dir.path().join("absent.safetensors")).unwrap_err();
    assert_eq!(named(&err), ("io", "absent.safetensors".to_string(), None));
    let err = WeightSource::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("neither model.safetensors nor model.safetensors.index.json"), "{err}");

    let (w, _, _) = sample();
    let good = dir.path().join("good.safetensors");
    write(&good, &[("w", &w)])?;
    let bytes = std::fs::read(&good)?;
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 8])?;
    let err = WeightSource::open(&truncated).unwrap_err();
    assert_eq!(named(&err), ("corrupt", "truncated.safetensors".to_string(), None));
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")?;
    let err = WeightSource::open(&garbage).unwrap_err();
    assert_eq!(named(&err), ("corrupt", "garbage.safetensors".to_string(), None));
    assert!(err.to_string().contains("not a safetensors file"), "{err}");

    let ints = dir.path().join("ints.safetensors");
    write(&ints, &[("ids", &Tensor::from_slice(&[1i64, 2, 3]))])?;
    let err = WeightSource::open(&ints)?.get("ids", &[3], Kind::Float, Device::Cpu).unwrap_err();
    assert_eq!(named(&err), ("dtype", "ints.safetensors".to_string(), Some("ids".to_string())));
    assert!(err.to_string().contains("`ids` has dtype I64, expected F32, F16 or BF16"), "{err}");

    let index = dir.path().join("model.safetensors.index.json");
    std::fs::write(&index, "{\"weight_map\": 3}")?;
    assert!(WeightSource::open(&index).unwrap_err().to_string().contains("no `weight_map`"));
    std::fs::write(&index, "{\"weight_map\": {\"w\": \"../../etc/passwd\"}}")?;
    let err = WeightSource::open(&index).unwrap_err();
    assert_eq!(named(&err), ("corrupt", "model.safetensors.index.json".to_string(), None));
    assert!(err.to_string().contains("leaves the checkpoint folder"), "{err}");
    std::fs::write(&index, "not json")?;
    assert!(WeightSource::open(&index).unwrap_err().to_string().contains("invalid JSON"));
    Ok(())
}
