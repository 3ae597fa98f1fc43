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
        key_subspace: Some(KeySubspace::new(0.85, mode)),
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
        config.key_subspace = mode.map(|mode| KeySubspace::new(0.9, mode));
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
        + (new_k.square().sum(Kind::Float).sqrt() + new_v.square().sum(Kind::Float).sqrt()).double_value(&[]) * 0.25;
    let p = layer.bank().penalty().ok_or_else(|| anyhow::anyhow!("no penalty"))?.double_value(&[]);
    assert!((p - expected_penalty).abs() < 1e-4 * expected_penalty.abs().max(1.0), "{p} vs {expected_penalty}");
    // New values start at zero: the L2 term's gradient there is finite (0), as torch.norm's.
    let mut fresh = AtomBank::new(4, 3, &config, Device::Cpu)?;
    fresh.begin_task(0)?;
    let term = fresh.penalty().ok_or_else(|| anyhow::anyhow!("no penalty"))?;
    term.backward();
    let grads: Vec<f64> =
        fresh.trainable_tensors().iter().map(|t| t.grad().abs().sum(Kind::Double).double_value(&[])).collect();
    assert!(grads.iter().all(|g| g.is_finite()), "{grads:?}");
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
    let e = bad(MoramConfig { key_subspace: Some(KeySubspace::new(1.0, SubspaceMode::Keys)), ..base.clone() });
    assert!(e.contains("key_subspace.energy") && e.contains("(0, 1)"), "{e}");
    let e = bad(MoramConfig {
        routing: Routing::Lora {},
        key_subspace: Some(KeySubspace::new(0.9, SubspaceMode::Keys)),
        ..base.clone()
    });
    assert!(e.contains("key_subspace") && e.contains("grows"), "{e}");
    let e = bad(MoramConfig { penalty: Penalty { orthogonality: -1.0, l2: 0.0 }, ..base });
    assert!(e.contains("penalty.orthogonality"), "{e}");
}

/// Novelty gating on hand-made tokens. Task 0's atom has key e1; task 1's atom key e1 + e2 and the
/// basis U = [e1] with threshold 0.5. A token inside U (e1) is closed to the later atom; a novel
/// token (e1 + e2, rho = 1/sqrt 2) is open, and there every atom is scored by `||x|| cos`: the later
/// atom's key points exactly at the outside part (`sqrt 2`), the earlier one at 45 degrees (1): the
/// later atom wins, where novel routing would split the token evenly.
#[test]
fn novelty_gating_closes_earlier_tokens_and_opens_novel_ones_at_full_scale() -> anyhow::Result<()> {
    let keys = t(&[&[1.0, 0.0, 0.0], &[1.0, 1.0, 0.0]]);
    let values = t(&[&[1.0, 10.0]]);
    let x = t(&[&[1.0, 0.0, 0.0], &[1.0, 1.0, 0.0], &[1.0, 0.1, 0.0]]);
    let bank = |mode: SubspaceMode, threshold: Option<f64>| -> anyhow::Result<AtomBank> {
        let mut config = subspace(mode);
        config.r = 1;
        let mut bank = AtomBank::from_parts(&config, &keys, &values, vec![0, 1], 2, None, vec![], Device::Cpu)?;
        bank.set_key_basis(&t(&[&[1.0], &[0.0], &[0.0]]))?;
        bank.set_atom_basis(vec![0, 1])?;
        if let Some(th) = threshold {
            bank.set_novelty_threshold(1, th)?;
        }
        Ok(bank)
    };
    let gated = bank(SubspaceMode::NoveltyGated, Some(0.5))?;
    let rho = gated.outside_share(&x);
    assert_eq!(rho.size(), [3, 2]);
    let want = [[1.0, 0.0], [1.0, 0.5f64.sqrt()], [1.0, 0.1 / 1.01f64.sqrt()]];
    for (i, row) in want.iter().enumerate() {
        for (m, w) in row.iter().enumerate() {
            assert!((rho.double_value(&[i as i64, m as i64]) - w).abs() < 1e-6, "rho {rho}");
        }
    }
    let w = gated.route(&x, false).unwrap().weights;
    assert_eq!(w.double_value(&[0, 1]), 0.0, "token e1 is closed to the later atom: {w}");
    assert_eq!(w.double_value(&[2, 1]), 0.0, "rho 0.0995 < 0.5: closed too: {w}");
    let (s0, s1) = (1.0 / 3f64.sqrt(), 2f64.sqrt() / 3f64.sqrt());
    let later = 1.0 / (1.0 + ((s0 - s1) / 0.1).exp());
    assert!((w.double_value(&[1, 1]) - later).abs() < 1e-5, "full-scale score on the novel token: {w}");
    let novel = bank(SubspaceMode::Routing, None)?.route(&x, false).unwrap().weights;
    assert!((novel.double_value(&[1, 1]) - 0.5).abs() < 1e-5, "novel routing splits it: {novel}");
    let novel_train = bank(SubspaceMode::Routing, None)?.route(&x, true).unwrap().weights;
    assert!(novel_train.double_value(&[2, 1]) > 0.0, "and, in training, reaches the near-old token");
    // Training mode (no delta gate) keeps the closure: it is not the eval gate.
    let train = gated.route(&x, true).unwrap().weights;
    assert_eq!(train.double_value(&[0, 1]), 0.0);
    // Without a fitted threshold the later atom stays closed everywhere.
    let unfitted = bank(SubspaceMode::NoveltyGated, None)?.route(&x, false).unwrap().weights;
    assert_eq!(unfitted.narrow(1, 1, 1).abs().sum(Kind::Float).double_value(&[]), 0.0);
    // Only later atoms and a token no atom is open to: zero weights, not NaN.
    let mut config = subspace(SubspaceMode::NoveltyGated);
    config.r = 1;
    let mut only_later = AtomBank::from_parts(
        &config,
        &keys.narrow(0, 1, 1),
        &values.narrow(1, 1, 1),
        vec![1],
        1,
        None,
        vec![],
        Device::Cpu,
    )?;
    only_later.set_key_basis(&t(&[&[1.0], &[0.0], &[0.0]]))?;
    only_later.set_atom_basis(vec![1])?;
    only_later.set_novelty_threshold(1, 0.5)?;
    let w = only_later.route(&x.narrow(0, 0, 1), false).unwrap().weights;
    assert_eq!(w.double_value(&[0, 0]), 0.0, "{w}");
    Ok(())
}

/// Each atom is gated by its own task's basis width and that width's threshold: task 1's atom
/// (width 1, threshold 0.5) and task 2's (width 2, threshold 0.9) disagree on the token e1 + e3
/// (`rho` = 1/sqrt 2 for both widths), so swapping widths or thresholds between atoms would show.
#[test]
fn novelty_gating_uses_each_atoms_own_width_and_threshold() -> anyhow::Result<()> {
    let keys = t(&[&[1.0, 0.0, 0.0], &[1.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
    let values = t(&[&[1.0, 10.0, 100.0]]);
    let mut config = subspace(SubspaceMode::NoveltyGated);
    config.r = 1;
    let mut bank = AtomBank::from_parts(&config, &keys, &values, vec![0, 1, 2], 3, None, vec![], Device::Cpu)?;
    bank.set_key_basis(&t(&[&[1.0, 0.0], &[0.0, 1.0], &[0.0, 0.0]]))?;
    bank.set_atom_basis(vec![0, 1, 2])?;
    bank.set_novelty_threshold(1, 0.5)?;
    bank.set_novelty_threshold(2, 0.9)?;
    let x = t(&[&[1.0, 0.0, 1.0], &[0.0, 0.0, 1.0], &[1.0, 0.0, 0.0]]);
    let w = bank.route(&x, true).unwrap().weights;
    assert!(w.double_value(&[0, 1]) > 0.0 && w.double_value(&[0, 2]) == 0.0, "e1 + e3: {w}");
    assert!(w.double_value(&[1, 2]) > 0.0, "e3 is outside both bases: {w}");
    assert!(w.double_value(&[2, 1]) == 0.0 && w.double_value(&[2, 2]) == 0.0, "e1 is inside both: {w}");
    assert!((w.double_value(&[2, 0]) - 1.0).abs() < 1e-6, "the first task's atom has no basis: {w}");
    Ok(())
}

#[test]
fn novelty_thresholds_only_grow_and_are_checked() -> anyhow::Result<()> {
    let mut bank = AtomBank::new(3, 2, &subspace(SubspaceMode::NoveltyGated), Device::Cpu)?;
    let err = bank.set_novelty_threshold(1, 0.3).unwrap_err();
    assert!(err.to_string().contains("basis width in 1..=0"), "{err}");
    bank.set_key_basis(&t(&[&[1.0, 0.0], &[0.0, 1.0], &[0.0, 0.0]]))?;
    bank.set_novelty_threshold(2, 0.3)?;
    bank.set_novelty_threshold(1, 0.2)?;
    bank.set_novelty_threshold(2, 0.1)?;
    assert_eq!(bank.novelty_thresholds(), &[(1, 0.2f32 as f64), (2, 0.3f32 as f64)], "sorted, and 0.1 < 0.3 ignored");
    for (m, v) in [(0, 0.5), (3, 0.5), (1, 1.5), (1, -0.1)] {
        assert!(bank.set_novelty_threshold(m, v).is_err(), "m {m}, threshold {v}");
    }
    let bad = MoramConfig {
        key_subspace: Some(KeySubspace { quantile: 0.0, ..KeySubspace::new(0.9, SubspaceMode::NoveltyGated) }),
        ..MoramConfig::default()
    };
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("key_subspace.quantile") && err.contains("(0, 1]"), "{err}");
    Ok(())
}

/// Standardised scores: Eq. 5 reads `(x - mean) / std` while the value coefficient reads `x`.
#[test]
fn standardised_scores_read_the_normalised_input_and_values_the_raw_one() -> anyhow::Result<()> {
    use moram_core::ScoreInput;
    let config = MoramConfig {
        r: 2,
        top_k: 2,
        temperature: 0.5,
        threshold: 0.0,
        score_input: ScoreInput::Standardised,
        ..MoramConfig::default()
    };
    let keys = t(&[&[1.0, 0.0], &[0.0, 1.0]]);
    let values = t(&[&[1.0, 1.0]]);
    let mut bank = AtomBank::from_parts(&config, &keys, &values, vec![0, 0], 0, None, vec![], Device::Cpu)?;
    assert!(bank.needs_score_statistics());
    // A layer refuses to route without the statistics (a silent raw fallback would be another method).
    let mut layer = MoramLinear::with_bank(&Tensor::zeros([1, 2], (Kind::Float, Device::Cpu)), None, bank)?;
    let err = layer.forward(&t(&[&[1.0, 1.0]])).unwrap_err().to_string();
    assert!(err.contains("score_input = Standardised") && err.contains("set_score_statistics"), "{err}");
    bank = AtomBank::from_parts(&config, &keys, &values, vec![0, 0], 0, None, vec![], Device::Cpu)?;
    bank.set_score_statistics(&Tensor::from_slice(&[10.0f32, 0.0]), &Tensor::from_slice(&[1.0f32, 4.0]))?;
    let x = t(&[&[11.0, 4.0]]);
    let r = bank.route(&x, false).unwrap();
    // Scores on ((11 - 10) / 1, (4 - 0) / 4) = (1, 1): equal weights; raw scores (11, 4) would not be.
    assert!((r.weights.double_value(&[0, 0]) - 0.5).abs() < 1e-6, "{}", r.weights);
    // Values use z = A x = (11, 4): delta = 0.5 * 11 + 0.5 * 4 = 7.5 (value scale 1).
    assert!((r.delta().double_value(&[0, 0]) - 7.5).abs() < 1e-5, "{}", r.delta());
    layer.replace_bank(bank)?;
    assert!((layer.forward(&x)?.double_value(&[0, 0]) - 7.5).abs() < 1e-5);
    // Bad statistics are refused with what was expected.
    let mut bank = AtomBank::new(2, 1, &config, Device::Cpu)?;
    let err = bank.set_score_statistics(
        &Tensor::zeros([3], (Kind::Float, Device::Cpu)),
        &Tensor::ones([2], (Kind::Float, Device::Cpu)),
    );
    assert!(matches!(err, Err(Error::Shape { ref what, .. }) if what == "score mean"));
    let err = bank
        .set_score_statistics(&Tensor::zeros([2], (Kind::Float, Device::Cpu)), &Tensor::from_slice(&[1.0f32, -1.0]));
    assert!(err.unwrap_err().to_string().contains("std >= 0"));
    let err = MoramConfig { routing: Routing::Lora {}, ..config.clone() }.validate().unwrap_err().to_string();
    assert!(err.contains("score_input") && err.contains("self-activated"), "{err}");
    Ok(())
}

/// The recorders behind the fitted statistics: per-feature mean and standard deviation of every
/// input token, and the first tokens, whose share outside the protected subspace fits a threshold.
#[test]
fn layers_record_input_statistics_and_outside_shares() -> anyhow::Result<()> {
    tch::manual_seed(11);
    let mut layer = MoramLinear::new(
        &Tensor::randn([2, 3], (Kind::Float, Device::Cpu)),
        None,
        &subspace(SubspaceMode::NoveltyGated),
    )?;
    let x = Tensor::randn([4, 5, 3], (Kind::Float, Device::Cpu)) * 2.0 + 1.0;
    layer.start_input_statistics();
    let _ = layer.forward(&x.narrow(0, 0, 2))?;
    let _ = layer.forward(&x.narrow(0, 2, 2))?;
    let stats = layer.take_input_statistics().unwrap();
    assert_eq!(stats.tokens, 20);
    let flat = x.reshape([20, 3]).to_kind(Kind::Double);
    let mean = flat.mean_dim([0].as_slice(), false, Kind::Double);
    let std = flat.var_dim([0].as_slice(), false, false).sqrt();
    assert!(max_abs(&(&stats.mean - mean)) < 1e-9 && max_abs(&(&stats.std - std)) < 1e-9);
    assert!(layer.take_input_statistics().is_none(), "taken once");
    layer.bank_mut().set_key_basis(&t(&[&[1.0], &[0.0], &[0.0]]))?;
    layer.start_input_sample(12);
    let _ = layer.forward(&x.narrow(0, 0, 2))?;
    let _ = layer.forward(&x.narrow(0, 2, 2))?;
    let sample = layer.take_input_sample().unwrap();
    assert!(sample.equal(&x.reshape([20, 3]).narrow(0, 0, 12)), "the first 12 tokens, in order");
    let shares = layer.bank().outside_share(&sample).select(-1, -1);
    let row = flat.get(7);
    let want = (1.0 - row.double_value(&[0]).powi(2) / row.square().sum(Kind::Double).double_value(&[])).sqrt();
    assert!((shares.double_value(&[7]) - want).abs() < 1e-6, "{shares} vs {want}");
    Ok(())
}

/// Score statistics and novelty thresholds travel with the adapter and with pruning; a file with
/// one half of the statistics is refused, naming the missing key.
#[test]
fn score_statistics_and_novelty_thresholds_survive_save_load_and_pruning() -> anyhow::Result<()> {
    use moram_core::ScoreInput;
    tch::manual_seed(5);
    let config = MoramConfig { score_input: ScoreInput::Centred, ..subspace(SubspaceMode::NoveltyGated) };
    let mut bank = AtomBank::new(4, 3, &config, Device::Cpu)?;
    bank.set_score_statistics(
        &Tensor::from_slice(&[0.5f32, -1.0, 2.0, 0.0]),
        &Tensor::from_slice(&[1.0f32, 2.0, 0.5, 1.0]),
    )?;
    bank.begin_task(0)?;
    bank.extend_key_basis(&diag(&[6.0, 3.0, 1.0, 0.0]), 0.85)?;
    bank.set_novelty_threshold(2, 0.123456789)?;
    bank.begin_task(1)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.safetensors");
    save_adapter(&path, [("l", &bank)], &Default::default())?;
    let loaded = AdapterFile::load(&path, Device::Cpu)?;
    let back = loaded.bank("l").ok_or_else(|| anyhow::anyhow!("layer l missing"))?;
    assert_eq!(back.novelty_thresholds(), bank.novelty_thresholds(), "bit-equal after a reload");
    let ((m0, s0), (m1, s1)) = (bank.score_statistics().unwrap(), back.score_statistics().unwrap());
    assert!(m0.equal(m1) && s0.equal(s1));
    let x = Tensor::randn([6, 4], (Kind::Float, Device::Cpu));
    assert!(bank.route(&x, false).unwrap().weights.equal(&back.route(&x, false).unwrap().weights));
    let kept = bank.retain(&[0, 2])?;
    assert_eq!(kept.novelty_thresholds(), bank.novelty_thresholds());
    assert!(kept.score_statistics().is_some());
    // Half of the statistics: the missing key is named.
    let file = std::fs::read(&path)?;
    let st = safetensors::SafeTensors::deserialize(&file)?;
    let mut kept_views = Vec::new();
    for (name, view) in st.tensors() {
        if name != "l.score_std" {
            kept_views.push((name, view));
        }
    }
    let (_, meta) = safetensors::SafeTensors::read_metadata(&file)?;
    let bad = dir.path().join("bad.safetensors");
    safetensors::serialize_to_file(kept_views, meta.metadata().clone(), &bad)?;
    let err = AdapterFile::load(&bad, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("l.score_std"), "{err}");
    Ok(())
}

/// Task-gated atoms: a token limited to tasks `<= j` gets exactly the output of the bank as it was
/// after task `j` (the later atoms closed before top-k, as if absent), in every routing that grows.
#[test]
fn open_tasks_give_the_bank_as_it_was_after_that_task() -> anyhow::Result<()> {
    for routing in [Routing::MORAM, Routing::Sum {}, Routing::ExternalRouter { use_top_k: true, use_temperature: true }]
    {
        tch::manual_seed(11);
        let cfg = MoramConfig { r: 3, top_k: 4, temperature: 0.1, routing, ..MoramConfig::default() };
        let mut bank = AtomBank::new(6, 5, &cfg, Device::Cpu)?;
        let x = Tensor::randn([2, 4, 6], (Kind::Float, Device::Cpu));
        let mut after = Vec::new();
        for task in 0..3u32 {
            bank.begin_task(task)?;
            // Trained-looking atoms: random values (and router keys), so every task changes the output.
            let _guard = tch::no_grad_guard();
            for mut p in bank.trainable_tensors() {
                p.copy_(&(Tensor::randn(p.size(), (Kind::Float, Device::Cpu)) * 0.5));
            }
            drop(_guard);
            after.push(bank.route(&x, false).unwrap().delta());
        }
        let all = bank.route(&x, false).unwrap().delta();
        for j in 0..3i64 {
            // One limit per sequence (B, 1), broadcast over its tokens.
            let open = Tensor::from_slice(&[j, j]).unsqueeze(1);
            let routed = bank.route_for(&x, false, Some(&open)).unwrap();
            assert!(max_abs(&(routed.delta() - &after[j as usize])) < 1e-5, "{routing:?}: limit {j}");
            let open_atoms = Vec::<bool>::try_from(routed.open.unwrap().get(0).get(0))?;
            assert_eq!(open_atoms, (0..9).map(|a| a / 3 <= j).collect::<Vec<_>>());
        }
        // Rows limited differently in one batch: each gets its own bank.
        let mixed = bank.route_for(&x, false, Some(&Tensor::from_slice(&[0i64, 2]).unsqueeze(1))).unwrap().delta();
        assert!(max_abs(&(mixed.get(0) - after[0].get(0))) < 1e-5 && max_abs(&(mixed.get(1) - all.get(1))) < 1e-5);
    }
    Ok(())
}

/// The open counts of activation statistics follow the gate: limited to task 0, the second task's
/// atoms are open to no token.
#[test]
fn activation_statistics_count_where_atoms_were_open() -> anyhow::Result<()> {
    let cfg = MoramConfig { r: 2, top_k: 4, temperature: 0.1, ..MoramConfig::default() };
    let w = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    let mut layer = MoramLinear::new(&w, None, &cfg)?;
    layer.bank_mut().begin_task(0)?;
    layer.bank_mut().begin_task(1)?;
    let x = Tensor::randn([2, 5, 4], (Kind::Float, Device::Cpu));
    layer.start_stats(StatsMode::AsUsed);
    layer.set_open_tasks(Some(Tensor::from_slice(&[0i64, 1]).unsqueeze(1)));
    assert!(layer.is_observed(), "a per-token limit makes every token count");
    let _ = layer.forward(&x)?;
    layer.set_open_tasks(None);
    let _ = layer.forward(&x)?;
    let stats = layer.take_stats().unwrap();
    assert_eq!(stats.tokens, 20);
    assert_eq!(stats.open, vec![20, 20, 15, 15], "row 0 (5 tokens) closed to task 1 once");
    Ok(())
}
