//! Adapter files (round-trip, corrupt input), activation statistics and post-pruning.

mod common;

use common::{bit_equal, trained_layer};
use moram_core::{
    atoms_for_share, plan_pruning, save_adapter, AdapterFile, AtomBank, MoramConfig, MoramLinear, PruneScope, Routing,
    StatsMode,
};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn cfg() -> MoramConfig {
    MoramConfig { r: 6, top_k: 5, temperature: 0.1, threshold: 0.2, ..MoramConfig::default() }
}

fn same_bank(a: &AtomBank, b: &AtomBank) {
    assert!(bit_equal(&a.keys_tensor().detach(), &b.keys_tensor().detach()), "keys differ");
    assert!(bit_equal(&a.values_tensor().detach(), &b.values_tensor().detach()), "values differ");
    assert!(bit_equal(&a.router_tensor().detach(), &b.router_tensor().detach()), "router differs");
    assert_eq!(a.atom_task(), b.atom_task());
    assert_eq!(a.frozen_flags(), b.frozen_flags());
    assert_eq!(a.expert_task(), b.expert_task());
    assert_eq!(a.config(), b.config());
}

fn save_two_layers(dir: &Path, config: &MoramConfig) -> anyhow::Result<(std::path::PathBuf, MoramLinear, MoramLinear)> {
    let q = trained_layer(12, 8, 3, config);
    let fc = trained_layer(8, 20, 3, config);
    let path = dir.join("adapter.safetensors");
    let mut extra = BTreeMap::new();
    extra.insert("base_model".to_string(), "tiny-test".to_string());
    save_adapter(&path, [("blocks.0.attn.q_proj", q.bank()), ("blocks.0.mlp.fc1", fc.bank())], &extra)?;
    Ok((path, q, fc))
}

#[test]
fn adapter_round_trip_is_exact_for_every_routing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for routing in [
        Routing::MORAM,
        Routing::ExternalRouter { use_top_k: true, use_temperature: true },
        Routing::MoeLora { use_top_k: true, use_temperature: false },
        Routing::Lora {},
    ] {
        let config = MoramConfig { routing, ..cfg() };
        let (path, q, fc) = save_two_layers(dir.path(), &config)?;
        let mut file = AdapterFile::load(&path, Device::Cpu)?;
        assert_eq!(file.config, config);
        assert_eq!(file.num_tasks(), if routing == (Routing::Lora {}) { 1 } else { 3 });
        assert_eq!(file.metadata.get("base_model").map(String::as_str), Some("tiny-test"));
        assert_eq!(file.layer_names(), vec!["blocks.0.attn.q_proj", "blocks.0.mlp.fc1"]);
        let q2 = file.take_bank("blocks.0.attn.q_proj", 12, 8)?;
        same_bank(q.bank(), &q2);
        same_bank(fc.bank(), &file.take_bank("blocks.0.mlp.fc1", 8, 20)?);
        // Same outputs, and the reloaded bank carries on with the next task.
        let mut reloaded = MoramLinear::with_bank(q.weight(), q.bias(), q2)?;
        let x = Tensor::randn([4, 12], (Kind::Float, Device::Cpu));
        assert!(bit_equal(&reloaded.forward(&x)?, &q.forward(&x)?), "{routing:?}: outputs differ after reload");
        reloaded.bank_mut().begin_task(3)?;
        let trainable: usize = reloaded.bank().trainable_parameter_count();
        assert!(trainable > 0);
    }
    Ok(())
}

#[test]
fn compat_pending_atoms_survive_a_round_trip() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = cfg();
    config.compat.untrained_atoms_in_eval = true;
    let mut layer = trained_layer(12, 8, 2, &config);
    layer.bank_mut().end_task()?;
    let path = dir.path().join("a.safetensors");
    save_adapter(&path, [("l", layer.bank())], &BTreeMap::new())?;
    let mut bank = AdapterFile::load(&path, Device::Cpu)?.take_bank("l", 12, 8)?;
    assert_eq!(bank.pending_task(), Some(2));
    bank.begin_task(2)?;
    assert_eq!(bank.len(), 18);
    Ok(())
}

fn write_raw(
    path: &Path,
    tensors: Vec<(&str, Tensor)>,
    metadata: Option<BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let owned: Vec<(String, Vec<u8>, safetensors::Dtype, Vec<usize>)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let shape = t.size().iter().map(|&d| d as usize).collect();
            let (dtype, bytes) = match t.kind() {
                Kind::Int64 => {
                    let v = Vec::<i64>::try_from(t.flatten(0, -1)).unwrap_or_default();
                    (safetensors::Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                Kind::Uint8 => (safetensors::Dtype::U8, Vec::<u8>::try_from(t.flatten(0, -1)).unwrap_or_default()),
                _ => {
                    let v = Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap_or_default();
                    (safetensors::Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            };
            (k.to_string(), bytes, dtype, shape)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(k, b, d, s)| (k.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view")))
        .collect();
    safetensors::serialize_to_file(views, metadata.map(|m| m.into_iter().collect()), path)?;
    Ok(())
}

fn good_metadata() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "moram-adapter".into());
    m.insert("format_version".into(), "1".into());
    m.insert("config".into(), cfg().to_json());
    m.insert("num_tasks".into(), "1".into());
    m
}

fn good_tensors() -> Vec<(&'static str, Tensor)> {
    let f = (Kind::Float, Device::Cpu);
    vec![
        ("l.keys", Tensor::zeros([6, 4], f)),
        ("l.values", Tensor::zeros([3, 6], f)),
        ("l.atom_task", Tensor::zeros([6], (Kind::Int64, Device::Cpu))),
        ("l.frozen", Tensor::ones([6], (Kind::Uint8, Device::Cpu))),
    ]
}

fn load_err(path: &Path) -> String {
    AdapterFile::load(path, Device::Cpu).expect_err("must fail").to_string()
}

/// The variant of the error loading `path` gives, the file it names (must be `path`) and the key.
fn load_kind(path: &Path) -> (&'static str, Option<String>) {
    let err = AdapterFile::load(path, Device::Cpu).expect_err("must fail");
    let (kind, named, key) = match &err {
        moram_core::Error::Corrupt { path, .. } => ("corrupt", path, None),
        moram_core::Error::MissingKey { path, key } => ("missing", path, Some(key.clone())),
        moram_core::Error::BadTensor { path, key, .. } => ("bad tensor", path, Some(key.clone())),
        other => panic!("{}: not a file error: {other:?}", path.display()),
    };
    assert_eq!(named, path, "the error names the file");
    (kind, key)
}

#[test]
fn corrupt_and_mismatched_adapter_files_are_clear_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n);

    // The well-formed baseline loads, so every failure below is due to its one change.
    write_raw(&p("ok.safetensors"), good_tensors(), Some(good_metadata()))?;
    AdapterFile::load(p("ok.safetensors"), Device::Cpu)?;

    let err = load_err(&p("missing.safetensors"));
    assert!(err.contains("missing.safetensors") && err.contains("No such file"), "{err}");

    let bytes = std::fs::read(p("ok.safetensors"))?;
    std::fs::write(p("truncated.safetensors"), &bytes[..bytes.len() - 10])?;
    assert_eq!(load_kind(&p("truncated.safetensors")), ("corrupt", None));
    let err = load_err(&p("truncated.safetensors"));
    assert!(err.contains("truncated.safetensors") && err.contains("not a valid MoRAM adapter"), "{err}");

    std::fs::write(p("garbage.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\xffnot a header")?;
    assert!(load_err(&p("garbage.safetensors")).contains("not a valid MoRAM adapter"));
    assert_eq!(load_kind(&p("garbage.safetensors")), ("corrupt", None));
    std::fs::write(p("empty.safetensors"), b"")?;
    assert!(load_err(&p("empty.safetensors")).contains("not a valid MoRAM adapter"));
    assert_eq!(load_kind(&p("empty.safetensors")), ("corrupt", None));

    write_raw(&p("nometa.safetensors"), good_tensors(), None)?;
    assert!(load_err(&p("nometa.safetensors")).contains("`format`"));

    let mut m = good_metadata();
    m.insert("format_version".into(), "9".into());
    write_raw(&p("version.safetensors"), good_tensors(), Some(m))?;
    assert!(load_err(&p("version.safetensors")).contains("format_version 9"));

    let mut m = good_metadata();
    m.insert("config".into(), r#"{"r": 0}"#.into());
    write_raw(&p("badconfig.safetensors"), good_tensors(), Some(m))?;
    let err = load_err(&p("badconfig.safetensors"));
    assert!(err.contains("`r`"), "{err}");

    let mut t = good_tensors();
    let _ = t.remove(1);
    write_raw(&p("novalues.safetensors"), t, Some(good_metadata()))?;
    assert_eq!(load_kind(&p("novalues.safetensors")), ("missing", Some("l.values".into())));
    let err = load_err(&p("novalues.safetensors"));
    assert!(err.contains("missing tensor `l.values`"), "{err}");

    let mut t = good_tensors();
    t[1] = ("l.values", Tensor::zeros([3, 5], (Kind::Float, Device::Cpu)));
    write_raw(&p("shape.safetensors"), t, Some(good_metadata()))?;
    assert_eq!(load_kind(&p("shape.safetensors")), ("bad tensor", Some("l.values".into())));
    let err = load_err(&p("shape.safetensors"));
    assert!(err.contains("`l.values`") && err.contains("[_, 6]") && err.contains("[3, 5]"), "{err}");

    let mut t = good_tensors();
    t[2] = ("l.atom_task", Tensor::zeros([6], (Kind::Float, Device::Cpu)));
    write_raw(&p("dtype.safetensors"), t, Some(good_metadata()))?;
    assert_eq!(load_kind(&p("dtype.safetensors")), ("bad tensor", Some("l.atom_task".into())));
    let err = load_err(&p("dtype.safetensors"));
    assert!(err.contains("`l.atom_task`") && err.contains("I64") && err.contains("F32"), "{err}");

    let mut t = good_tensors();
    t[3] = ("l.frozen", Tensor::from_slice(&[1u8, 0, 1, 0, 0, 0]));
    write_raw(&p("flags.safetensors"), t, Some(good_metadata()))?;
    assert!(load_err(&p("flags.safetensors")).contains("1s (frozen) followed by 0s"));

    let mut t = good_tensors();
    t.push(("l.surprise", Tensor::zeros([1], (Kind::Float, Device::Cpu))));
    write_raw(&p("unexpected.safetensors"), t, Some(good_metadata()))?;
    assert!(load_err(&p("unexpected.safetensors")).contains("unexpected tensor `l.surprise`"));

    let mut file = AdapterFile::load(p("ok.safetensors"), Device::Cpu)?;
    let err = file.take_bank("l", 5, 3).unwrap_err().to_string();
    assert!(err.contains("a 5 -> 3 layer") && err.contains("a 4 -> 3 bank"), "{err}");
    let err = file.take_bank("other", 4, 3).unwrap_err();
    assert!(matches!(&err, moram_core::Error::MissingKey { key, .. } if key == "other.keys"), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("missing tensor `other.keys`"), "{err}");
    Ok(())
}

#[test]
fn saving_rejects_mixed_configs_and_leaves_no_partial_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let a = trained_layer(4, 3, 1, &cfg());
    let b = trained_layer(4, 3, 1, &MoramConfig { temperature: 0.5, ..cfg() });
    let path = dir.path().join("mixed.safetensors");
    let err = save_adapter(&path, [("a", a.bank()), ("b", b.bank())], &BTreeMap::new()).unwrap_err().to_string();
    assert!(err.contains("layer `b` has a different MoRAM config"), "{err}");
    assert!(!path.exists());
    let err = save_adapter(dir.path().join("no/such/dir/x.safetensors"), [("a", a.bank())], &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.safetensors"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 0, "no temporary file left behind");
    Ok(())
}

#[test]
fn statistics_count_mass_and_selections() -> anyhow::Result<()> {
    tch::manual_seed(11);
    let mut layer = trained_layer(16, 8, 2, &cfg()); // R = 12, k = 5
    layer.set_training(true);
    layer.start_stats(StatsMode::AsUsed);
    let x = Tensor::randn([3, 7, 16], (Kind::Float, Device::Cpu));
    let _ = layer.forward(&x)?;
    let _ = layer.forward(&x.narrow(0, 0, 1))?;
    let stats = layer.take_stats().expect("recording");
    assert_eq!(stats.tokens, 28);
    // Without the gate every token's weights sum to 1 and exactly k atoms are selected.
    assert!((stats.mass.iter().sum::<f64>() - 28.0).abs() < 1e-4);
    assert_eq!(stats.selected.iter().sum::<u64>(), 28 * 5);
    assert!(stats.activation_ratio().iter().all(|&r| (0.0..=1.0).contains(&r)));
    assert!(layer.take_stats().is_none(), "recording stopped");

    // In eval the gate removes mass; BeforeGate still sees all of it.
    layer.set_training(false);
    layer.start_stats(StatsMode::AsUsed);
    let _ = layer.forward(&x)?;
    let gated = layer.take_stats().expect("recording");
    layer.start_stats(StatsMode::BeforeGate);
    let _ = layer.forward(&x)?;
    let ungated = layer.take_stats().expect("recording");
    assert!((ungated.mass.iter().sum::<f64>() - 21.0).abs() < 1e-4);
    assert!(gated.mass.iter().sum::<f64>() < ungated.mass.iter().sum::<f64>());
    Ok(())
}

#[test]
fn pruning_keeps_the_smallest_set_covering_the_share() -> anyhow::Result<()> {
    assert_eq!(atoms_for_share(&[5.0, 0.0, 3.0, 2.0], 0.5), 1);
    assert_eq!(atoms_for_share(&[5.0, 0.0, 3.0, 2.0], 0.8), 2);
    assert_eq!(atoms_for_share(&[5.0, 0.0, 3.0, 2.0], 0.81), 3);
    assert_eq!(atoms_for_share(&[5.0, 0.0, 3.0, 2.0], 1.0), 3);
    assert_eq!(atoms_for_share(&[0.0, 0.0], 0.99), 0);

    tch::manual_seed(12);
    let mut layer = trained_layer(16, 8, 3, &cfg()); // R = 18, tasks 0..3
    layer.set_training(false);
    layer.start_stats(StatsMode::AsUsed);
    let _ = layer.forward(&Tensor::randn([64, 16], (Kind::Float, Device::Cpu)))?;
    let stats = layer.take_stats().expect("stats");

    let plan = plan_pruning(layer.bank(), &stats, 0.9, PruneScope::All)?;
    let mut kept_mass: Vec<f64> = plan.keep.iter().map(|&i| stats.mass[i]).collect();
    let total: f64 = stats.mass.iter().sum();
    assert!(kept_mass.iter().sum::<f64>() >= 0.9 * total - 1e-9);
    assert!(plan.kept_share >= 0.9);
    // Minimal: dropping the smallest kept atom falls below the share.
    kept_mass.sort_by(f64::total_cmp);
    assert!(kept_mass[1..].iter().sum::<f64>() < 0.9 * total);
    assert_eq!(plan.keep.len(), atoms_for_share(&stats.mass, 0.9));
    // Every removed atom has no more mass than any kept one.
    let min_kept = plan.keep.iter().map(|&i| stats.mass[i]).fold(f64::INFINITY, f64::min);
    assert!(plan.removed.iter().all(|&i| stats.mass[i] <= min_kept));

    let pruned = layer.bank().prune(&plan)?;
    assert_eq!(pruned.len(), plan.keep.len());
    let index = Tensor::from_slice(&plan.keep.iter().map(|&i| i as i64).collect::<Vec<_>>());
    assert!(bit_equal(&pruned.keys_tensor().detach(), &layer.bank().keys_tensor().detach().index_select(0, &index)));
    assert!(bit_equal(
        &pruned.values_tensor().detach(),
        &layer.bank().values_tensor().detach().index_select(1, &index)
    ));
    let tasks: Vec<u32> = plan.keep.iter().map(|&i| layer.bank().atom_task()[i]).collect();
    assert_eq!(pruned.atom_task(), tasks.as_slice());
    assert_eq!(pruned.n_frozen(), plan.keep.iter().filter(|&&i| i < 12).count());
    assert_eq!(pruned.n_trainable(), plan.keep.iter().filter(|&&i| i >= 12).count());

    // Task scope only touches that task's atoms.
    let plan = plan_pruning(layer.bank(), &stats, 0.5, PruneScope::Task(1))?;
    assert!(plan.removed.iter().all(|&i| layer.bank().atom_task()[i] == 1));
    assert!(!plan.removed.is_empty());
    Ok(())
}

#[test]
fn pruning_with_share_one_changes_nothing() -> anyhow::Result<()> {
    tch::manual_seed(13);
    let mut layer = trained_layer(16, 8, 3, &cfg());
    layer.set_training(false);
    // Two tokens select at most 2 * k = 10 of the 18 atoms, so some atom has zero mass.
    let x = Tensor::randn([2, 16], (Kind::Float, Device::Cpu));
    layer.start_stats(StatsMode::AsUsed);
    let before = layer.forward(&x)?;
    let stats = layer.take_stats().expect("stats");
    assert!(stats.mass.contains(&0.0), "some atom unused, so share 1.0 is a real test");
    let plan = plan_pruning(layer.bank(), &stats, 1.0, PruneScope::All)?;
    assert!(plan.removed.is_empty());
    let pruned = layer.bank().prune(&plan)?;
    same_bank(layer.bank(), &pruned);
    layer.replace_bank(pruned)?;
    assert!(bit_equal(&layer.forward(&x)?, &before));
    Ok(())
}

#[test]
fn pruning_rejects_bad_requests() -> anyhow::Result<()> {
    let layer = trained_layer(8, 4, 2, &cfg());
    let stats = moram_core::ActivationStats::new(layer.bank().len(), StatsMode::AsUsed);
    let err = plan_pruning(layer.bank(), &stats, 0.99, PruneScope::All).unwrap_err().to_string();
    assert!(err.contains("0 tokens"), "{err}");
    let short = moram_core::ActivationStats::new(3, StatsMode::AsUsed);
    let err = plan_pruning(layer.bank(), &short, 0.99, PruneScope::All).unwrap_err().to_string();
    assert!(err.contains("cover 3 atoms"), "{err}");
    for share in [0.0, 1.5, f64::NAN] {
        assert!(plan_pruning(layer.bank(), &stats, share, PruneScope::All).is_err());
    }
    assert!(layer.bank().retain(&[3, 1]).is_err(), "indices must ascend");
    assert!(layer.bank().retain(&[99]).is_err(), "indices must exist");
    Ok(())
}

/// Equal banks and metadata give byte-equal files, whatever order the metadata map iterates in.
#[test]
fn equal_adapters_are_equal_files() -> anyhow::Result<()> {
    tch::manual_seed(2);
    let config = moram_core::MoramConfig { r: 3, top_k: 3, ..Default::default() };
    let mut bank = moram_core::AtomBank::new(5, 4, &config, tch::Device::Cpu)?;
    bank.begin_task(0)?;
    bank.begin_task(1)?;
    let extra: std::collections::BTreeMap<String, String> =
        (0..12).map(|i| (format!("key{i}"), format!("value {i}"))).collect();
    let dir = tempfile::tempdir()?;
    let mut files = Vec::new();
    for i in 0..6 {
        let path = dir.path().join(format!("a{i}.safetensors"));
        moram_core::save_adapter(&path, [("x.q", &bank), ("x.v", &bank)], &extra)?;
        files.push(std::fs::read(&path)?);
        let back = moram_core::AdapterFile::load(&path, tch::Device::Cpu)?;
        assert!(back.bank("x.v").is_some_and(|b| b.keys_tensor().equal(&bank.keys_tensor())));
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]), "the same adapter saved six times gave different bytes");
    Ok(())
}
