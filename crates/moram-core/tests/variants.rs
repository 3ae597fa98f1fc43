//! The variants beyond the paper: protected input subspaces (orthogonal keys, novel routing), the
//! summed-LoRA routing with O-LoRA's penalties, and the top-1 statistics the leakage diagnostics use.

use moram_core::{
    save_adapter, ActivationStats, AdapterFile, AtomBank, Error, KeySubspace, MoramConfig, MoramLinear, Penalty,
    Routing, StatsMode, SubspaceMode,
};
use tch::{Device, Kind, Tensor};

fn t(rows: &[&[f32]]) -> Tensor {
    let n = rows.len() as i64;
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    Tensor::from_slice(&flat).view([n, -1])
}

fn diag(v: &[f64]) -> Tensor {
    Tensor::from_slice(v).diag(0)
}

fn subspace(mode: SubspaceMode) -> MoramConfig {
    MoramConfig {
        r: 2,
        top_k: 8,
        temperature: 0.1,
        threshold: 0.2,
        key_subspace: Some(KeySubspace { energy: 0.85, mode }),
        ..MoramConfig::default()
    }
}

fn max_abs(x: &Tensor) -> f64 {
    x.abs().max().double_value(&[])
}

#[test]
fn the_basis_grows_by_the_energy_rule_and_stays_orthonormal() -> anyhow::Result<()> {
    let mut bank = AtomBank::new(4, 3, &subspace(SubspaceMode::Keys), Device::Cpu)?;
    // trace 10: 6 alone is 60% < 85%, 6 + 3 is 90% >= 85%: two directions, e1 and e2.
    assert_eq!(bank.extend_key_basis(&diag(&[6.0, 3.0, 1.0, 0.0]), 0.85)?, 2);
    let u = bank.key_basis().shallow_clone();
    assert_eq!(u.size(), [4, 2]);
    let proj = u.mm(&u.tr());
    assert!(max_abs(&(&proj - diag(&[1.0, 1.0, 0.0, 0.0]).to_kind(Kind::Float))) < 1e-6, "{proj}");
    // A second task living in e3, e4 (trace 10, none of it captured yet): 5 of 10 reaches 50%.
    assert_eq!(bank.extend_key_basis(&diag(&[0.0, 0.0, 5.0, 5.0]), 0.5)?, 1);
    // A task already inside the basis adds nothing.
    assert_eq!(bank.extend_key_basis(&diag(&[2.0, 1.0, 0.0, 0.0]), 0.99)?, 0);
    let u = bank.key_basis();
    assert_eq!(u.size(), [4, 3]);
    assert!(max_abs(&(u.tr().mm(u) - Tensor::eye(3, (Kind::Float, Device::Cpu)))) < 1e-6);
    // Bad moments are errors that say what was expected.
    let err = bank.extend_key_basis(&diag(&[1.0, 1.0, 1.0]), 0.9).unwrap_err();
    assert!(matches!(err, Error::Shape { ref what, .. } if what == "input moments"), "{err}");
    let err = bank.extend_key_basis(&diag(&[f64::NAN, 1.0, 1.0, 1.0]), 0.9).unwrap_err();
    assert!(err.to_string().contains("not finite"), "{err}");
    Ok(())
}

#[test]
fn orthogonal_keys_stay_out_of_the_protected_subspace() -> anyhow::Result<()> {
    tch::manual_seed(7);
    let w = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let mut layer = MoramLinear::new(&w, None, &subspace(SubspaceMode::Keys))?;
    layer.bank_mut().begin_task(0)?;
    layer.bank_mut().extend_key_basis(&diag(&[6.0, 3.0, 1.0, 0.0]), 0.85)?;
    layer.bank_mut().begin_task(1)?;
    let u = layer.bank().key_basis().shallow_clone();
    let fresh = layer.bank().trainable_tensors()[0].shallow_clone();
    assert!(max_abs(&fresh.mm(&u)) < 1e-6, "new keys start in the complement");
    assert!(max_abs(&fresh) > 1e-3, "and are not zero");
    // An optimiser step that moves the keys into the subspace is undone by the projection.
    {
        let _g = tch::no_grad_guard();
        let mut keys = fresh.shallow_clone();
        let _ = keys.g_add_(&Tensor::ones([2, 4], (Kind::Float, Device::Cpu)));
    }
    assert!(max_abs(&fresh.mm(&u)) > 0.5);
    layer.bank_mut().project_trainable_keys();
    assert!(max_abs(&fresh.mm(&u)) < 1e-6, "projected back");
    // Task 0's keys were frozen before the basis existed: untouched.
    assert_eq!(layer.bank().atom_basis(), &[0, 0, 2, 2]);
    Ok(())
}

/// Task 0's atom reads e1, task 1's atom has a key of `2 e1 + e2`. Unprotected, the later atom
/// wins task 0's token `e1` (score 2/sqrt(5) against 1/sqrt(5)); with novel routing its score on
/// `e1` is 0 (its key projected out of e1), so the token stays with task 0's atom, while its value
/// coefficient still reads the whole input.
#[test]
fn novel_routing_keeps_earlier_tokens_with_earlier_atoms() -> anyhow::Result<()> {
    let keys = t(&[&[1.0, 0.0], &[2.0, 1.0]]);
    let values = t(&[&[1.0, 10.0]]);
    let x = t(&[&[1.0, 0.0], &[0.0, 1.0]]);
    let weights = |mode: Option<SubspaceMode>| -> anyhow::Result<Tensor> {
        let mut config = subspace(SubspaceMode::Routing);
        config.r = 1;
        config.key_subspace = mode.map(|mode| KeySubspace { energy: 0.9, mode });
        let mut bank = AtomBank::from_parts(&config, &keys, &values, vec![0, 1], 2, None, vec![], Device::Cpu)?;
        if mode.is_some() {
            bank.set_key_basis(&t(&[&[1.0], &[0.0]]))?;
            bank.set_atom_basis(vec![0, 1])?;
        }
        bank.route(&x, false).map(|r| r.weights).ok_or_else(|| anyhow::anyhow!("empty bank"))
    };
    let plain = weights(None)?;
    let s = [1.0 / 5f64.sqrt(), 2.0 / 5f64.sqrt()];
    let w1 = 1.0 / (1.0 + ((s[0] - s[1]) / 0.1).exp());
    assert!((plain.double_value(&[0, 1]) - w1).abs() < 1e-5, "leaks: {plain}");
    let novel = weights(Some(SubspaceMode::Routing))?;
    // Token e1: scores (1, 0): the later atom's weight is gated away (0 < delta).
    assert!((novel.double_value(&[0, 0]) - 1.0 / (1.0 + (-10f64).exp())).abs() < 1e-5, "{novel}");
    assert_eq!(novel.double_value(&[0, 1]), 0.0);
    // Token e2: scores (0, 1): the later atom takes it.
    assert!(novel.double_value(&[1, 1]) > 0.99, "{novel}");
    Ok(())
}

#[test]
fn the_protected_subspace_survives_save_load_and_pruning() -> anyhow::Result<()> {
    tch::manual_seed(3);
    let mut bank = AtomBank::new(4, 3, &subspace(SubspaceMode::Routing), Device::Cpu)?;
    bank.begin_task(0)?;
    bank.extend_key_basis(&diag(&[6.0, 3.0, 1.0, 0.0]), 0.85)?;
    bank.begin_task(1)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.safetensors");
    save_adapter(&path, [("l", &bank)], &Default::default())?;
    let loaded = AdapterFile::load(&path, Device::Cpu)?;
    let back = loaded.bank("l").ok_or_else(|| anyhow::anyhow!("layer l missing"))?;
    assert!(back.key_basis().equal(bank.key_basis()));
    assert_eq!(back.atom_basis(), &[0, 0, 2, 2]);
    let kept = bank.retain(&[1, 3])?;
    assert_eq!(kept.atom_basis(), &[0, 2]);
    assert!(kept.key_basis().equal(bank.key_basis()));
    // A basis that is not orthonormal is refused, naming the tensor.
    let mut bad = AtomBank::new(4, 3, &subspace(SubspaceMode::Keys), Device::Cpu)?;
    let err = bad.set_key_basis(&t(&[&[1.0], &[1.0], &[0.0], &[0.0]])).unwrap_err();
    assert!(err.to_string().contains("not orthonormal"), "{err}");
    Ok(())
}

#[test]
fn summed_routing_is_the_sum_of_every_task_lora_and_the_penalty_is_o_lora_s() -> anyhow::Result<()> {
    tch::manual_seed(11);
    let config = MoramConfig {
        r: 2,
        value_scale: 2.0,
        routing: Routing::Sum {},
        penalty: Penalty { orthogonality: 0.5, l2: 0.25 },
        ..MoramConfig::default()
    };
    let w = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let mut layer = MoramLinear::new(&w, None, &config)?;
    layer.bank_mut().begin_task(0)?;
    assert!(layer.bank().penalty().is_some_and(|p| p.double_value(&[]) > 0.0), "L2 on the first task's keys");
    layer.bank_mut().begin_task(1)?;
    let (keys, values) = (layer.bank().keys_tensor(), layer.bank().values_tensor());
    {
        let _g = tch::no_grad_guard();
        let mut v = layer.bank().trainable_tensors()[1].shallow_clone();
        v.copy_(&Tensor::randn([3, 2], (Kind::Float, Device::Cpu)));
    }
    let x = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    let expected = x.matmul(&w.tr()) + x.matmul(&keys.tr()).matmul(&layer.bank().values_tensor().tr()) * 2.0;
    let y = layer.forward(&x)?;
    assert!(max_abs(&(y - expected)) < 1e-5);
    assert_eq!(values.size(), [3, 4], "two tasks of two atoms");
    let (new_k, new_v) = (keys.narrow(0, 2, 2), layer.bank().values_tensor().narrow(1, 2, 2));
    let expected_penalty = new_k.mm(&keys.narrow(0, 0, 2).tr()).abs().sum(Kind::Float).double_value(&[]) * 0.5
        + (new_k.square().sum(Kind::Float) + new_v.square().sum(Kind::Float)).double_value(&[]) * 0.25;
    let p = layer.bank().penalty().ok_or_else(|| anyhow::anyhow!("no penalty"))?.double_value(&[]);
    assert!((p - expected_penalty).abs() < 1e-4 * expected_penalty.abs().max(1.0), "{p} vs {expected_penalty}");
    // Plain MoRAM has no penalty.
    let plain = AtomBank::new(4, 3, &MoramConfig::default(), Device::Cpu)?;
    assert!(plain.penalty().is_none());
    Ok(())
}

#[test]
fn top1_counts_the_largest_weight_of_each_token() -> anyhow::Result<()> {
    let mut stats = ActivationStats::new(3, StatsMode::AsUsed);
    stats.record(&t(&[&[0.7, 0.3, 0.0], &[0.1, 0.2, 0.7], &[0.0, 0.0, 0.0], &[0.2, 0.5, 0.3]]))?;
    assert_eq!(stats.top1, vec![1, 1, 1], "an all-zero (gated) token counts for no atom");
    assert_eq!(stats.tokens, 4);
    let mut more = ActivationStats::new(3, StatsMode::AsUsed);
    more.record(&t(&[&[0.9, 0.1, 0.0]]))?;
    stats.merge(&more)?;
    assert_eq!(stats.top1, vec![2, 1, 1]);
    Ok(())
}

#[test]
fn subspace_and_penalty_settings_are_validated_by_name() {
    let bad = |c: MoramConfig| c.validate().unwrap_err().to_string();
    let base = MoramConfig::default();
    let e =
        bad(MoramConfig { key_subspace: Some(KeySubspace { energy: 1.0, mode: SubspaceMode::Keys }), ..base.clone() });
    assert!(e.contains("key_subspace.energy") && e.contains("(0, 1)"), "{e}");
    let e = bad(MoramConfig {
        routing: Routing::Lora {},
        key_subspace: Some(KeySubspace { energy: 0.9, mode: SubspaceMode::Keys }),
        ..base.clone()
    });
    assert!(e.contains("key_subspace") && e.contains("grows"), "{e}");
    let e = bad(MoramConfig { penalty: Penalty { orthogonality: -1.0, l2: 0.0 }, ..base });
    assert!(e.contains("penalty.orthogonality"), "{e}");
}
