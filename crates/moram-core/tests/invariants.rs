//! Invariants of the MoRAM layer that hold whatever the weights (protocol section 7).

mod common;

use common::{assert_close, base, bit_equal, randomise_values, trained_layer};
use moram_core::{routing, MoramConfig, MoramLinear, Routing, ValuePath};
use tch::{Device, Kind, Tensor};

fn cfg() -> MoramConfig {
    MoramConfig { r: 8, top_k: 6, temperature: 0.05, threshold: 0.2, ..MoramConfig::default() }
}

#[test]
fn zero_value_atoms_leave_the_base_output_exactly_unchanged() -> anyhow::Result<()> {
    tch::manual_seed(1);
    for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
        let (w, b) = base(32, 24, kind);
        let mut layer = MoramLinear::new(&w, Some(&b), &cfg())?;
        let x = Tensor::randn([3, 7, 32], (Kind::Float, Device::Cpu)).to_kind(kind);
        let reference = x.linear(&w, Some(&b));
        for task in 0..3 {
            layer.bank_mut().begin_task(task)?; // fresh atoms: random keys, zero values
            for training in [true, false] {
                layer.set_training(training);
                let y = layer.forward(&x)?;
                assert!(bit_equal(&y, &reference), "{kind:?} task {task} training {training}: output changed");
            }
        }
    }
    Ok(())
}

#[test]
fn empty_bank_is_the_base_layer() -> anyhow::Result<()> {
    let (w, b) = base(8, 4, Kind::Float);
    let layer = MoramLinear::new(&w, Some(&b), &cfg())?;
    let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
    assert!(bit_equal(&layer.forward(&x)?, &x.linear(&w, Some(&b))));
    Ok(())
}

#[test]
fn full_top_k_and_huge_temperature_is_a_uniform_dense_lora() -> anyhow::Result<()> {
    tch::manual_seed(2);
    let config = MoramConfig { r: 5, top_k: 15, temperature: 1e9, threshold: 0.0, ..MoramConfig::default() };
    let mut layer = trained_layer(16, 12, 3, &config); // R = 15 = k
    layer.set_training(true);
    let x = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
    let y = layer.forward(&x)?;
    let bank = layer.bank();
    let n = bank.len() as f64;
    let lora = x.matmul(&bank.keys_tensor().tr()).matmul(&bank.values_tensor().tr()) / n;
    let expected = x.linear(layer.weight(), layer.bias()) + lora;
    assert_close("uniform LoRA", &y, &expected, 1e-5, 1e-5);
    Ok(())
}

#[test]
fn at_most_floor_one_over_delta_squared_atoms_pass_the_gate() -> anyhow::Result<()> {
    tch::manual_seed(3);
    for delta in [0.1, 0.2, 0.3, 0.45] {
        let config = MoramConfig { r: 10, top_k: 50, temperature: 0.5, threshold: delta, ..MoramConfig::default() };
        let layer = trained_layer(64, 6, 5, &config); // R = 50 atoms, all in the top-k
        layer.set_capture(true);
        // Inputs close to a key make its score large; random inputs spread the mass.
        let keys = layer.bank().keys_tensor().detach();
        let x = Tensor::cat(&[keys.narrow(0, 0, 40) * 3.0, Tensor::randn([64, 64], (Kind::Float, Device::Cpu))], 0);
        let _ = layer.forward(&x)?;
        let w = layer.take_captured().expect("weights");
        let passing = w.gt(0.0).sum_dim_intlist(-1, false, Kind::Int64).max().int64_value(&[]);
        let bound = (1.0 / (delta * delta)).floor() as i64;
        assert!(passing <= bound, "delta {delta}: {passing} atoms passed, bound {bound}");
        assert!(passing > 0, "delta {delta}: the gate let nothing through; the test would prove nothing");
    }
    // The bound is tight: 11 equal scores of 1/sqrt(11) = 0.3015 all pass delta = 0.3.
    let config = MoramConfig { r: 11, top_k: 11, temperature: 0.5, threshold: 0.3, ..MoramConfig::default() };
    let layer = MoramLinear::with_bank(
        &Tensor::zeros([2, 3], (Kind::Float, Device::Cpu)),
        None,
        moram_core::AtomBank::from_parts(
            &config,
            &Tensor::ones([11, 3], (Kind::Float, Device::Cpu)),
            &Tensor::ones([2, 11], (Kind::Float, Device::Cpu)),
            vec![0; 11],
            11,
            None,
            vec![],
            Device::Cpu,
        )?,
    )?;
    layer.set_capture(true);
    let _ = layer.forward(&Tensor::ones([1, 3], (Kind::Float, Device::Cpu)))?;
    let w = layer.take_captured().expect("weights");
    assert_eq!(w.gt(0.0).sum(Kind::Int64).int64_value(&[]), 11);
    Ok(())
}

#[test]
fn the_gate_keeps_scores_equal_to_delta() -> anyhow::Result<()> {
    // Four equal projections: every normalised score is exactly 0.5 = delta, and >= keeps them all.
    let s = routing::relevance_scores(&Tensor::from_slice(&[2.0f32; 4]).view([1, 4]), 1e-12);
    assert_eq!(Vec::<f32>::try_from(s.view([-1]))?, vec![0.5; 4]);
    let w = routing::mixture_weights(&s, 1.0);
    let gated = routing::threshold_gate(&w, &s, 0.5);
    assert!(bit_equal(&gated, &w), "scores equal to delta must pass");
    let below = routing::threshold_gate(&w, &s, 0.5000001);
    assert_eq!(below.sum(Kind::Float).double_value(&[]), 0.0);
    Ok(())
}

#[test]
fn eval_gate_does_not_renormalise() -> anyhow::Result<()> {
    let s = Tensor::from_slice(&[0.9f32, 0.3, 0.1, -0.3]).view([1, 4]);
    let w = routing::mixture_weights(&routing::top_k_mask(&s, 3), 1.0);
    let gated = routing::threshold_gate(&w, &s, 0.2);
    let w_v = Vec::<f32>::try_from(w.view([-1]))?;
    let g_v = Vec::<f32>::try_from(gated.view([-1]))?;
    assert_eq!(g_v, vec![w_v[0], w_v[1], 0.0, 0.0]);
    assert!(g_v.iter().sum::<f32>() < 1.0);
    assert_eq!(w_v[3], 0.0, "masked entries get weight exactly 0");
    Ok(())
}

#[test]
fn relevance_is_signed_and_eps_clamped() -> anyhow::Result<()> {
    let z = Tensor::from_slice(&[3.0f32, -4.0, 0.0, 0.0, 0.0, 0.0]).view([2, 3]);
    let s = Vec::<f32>::try_from(routing::relevance_scores(&z, 1e-12).view([-1]))?;
    assert_eq!(s, vec![0.6, -0.8, 0.0, 0.0, 0.0, 0.0], "signed scores, zero row stays zero (no NaN)");
    Ok(())
}

#[test]
fn effective_top_k_is_clamped_both_ways() {
    assert_eq!(routing::effective_top_k(1, 10), 2);
    assert_eq!(routing::effective_top_k(16, 10), 10);
    assert_eq!(routing::effective_top_k(4, 10), 4);
    assert_eq!(routing::effective_top_k(16, 1), 1);
}

#[test]
fn top_k_mask_selects_by_signed_value() -> anyhow::Result<()> {
    let s = Tensor::from_slice(&[-0.9f32, 0.1, 0.5, -0.2]).view([1, 4]);
    let m = Vec::<f32>::try_from(routing::top_k_mask(&s, 2).view([-1]))?;
    assert_eq!(m, vec![f32::NEG_INFINITY, 0.1, 0.5, f32::NEG_INFINITY]);
    Ok(())
}

#[test]
fn gradients_reach_only_current_task_atoms() -> anyhow::Result<()> {
    tch::manual_seed(4);
    let mut layer = trained_layer(16, 12, 3, &cfg());
    layer.set_training(true);
    let bank = layer.bank();
    assert_eq!((bank.n_frozen(), bank.n_trainable()), (16, 8));
    let x = Tensor::randn([10, 16], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    layer.forward(&x)?.square().sum(Kind::Float).backward();
    let trainable = bank.trainable_tensors();
    assert_eq!(trainable.len(), 2, "keys and values of the current task only");
    for t in &trainable {
        assert_eq!(t.size()[0].min(t.size()[1]), 8.min(t.size()[0]).min(t.size()[1]));
        assert!(t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }
    assert!(x.grad().defined(), "gradients also flow into the input");
    // Frozen atoms are plain tensors: nothing can hold a gradient for them.
    let frozen = bank.frozen_tensors();
    assert_eq!(frozen.len(), 2);
    for t in &frozen {
        assert!(!t.requires_grad() && !t.grad().defined());
    }
    assert_eq!(bank.trainable_parameter_count(), 8 * (16 + 12));
    Ok(())
}

#[test]
fn frozen_atoms_never_change_across_an_adamw_step_with_weight_decay() -> anyhow::Result<()> {
    tch::manual_seed(5);
    let mut layer = trained_layer(16, 12, 3, &cfg());
    layer.set_training(true);
    let frozen_before = layer.bank().frozen_checksum()?;
    let keys_before = layer.bank().keys_tensor().detach().copy();
    let mut opt = tch::COptimizer::adamw(1e-2, 0.9, 0.999, 0.1, 1e-8, false)?;
    for t in layer.bank().trainable_tensors() {
        opt.add_parameters(&t, 0)?;
    }
    for _ in 0..3 {
        opt.zero_grad()?;
        let x = Tensor::randn([10, 16], (Kind::Float, Device::Cpu));
        layer.forward(&x)?.square().sum(Kind::Float).backward();
        opt.step()?;
    }
    assert_eq!(layer.bank().frozen_checksum()?, frozen_before, "frozen atoms changed");
    let keys_after = layer.bank().keys_tensor().detach();
    assert!(bit_equal(&keys_after.narrow(0, 0, 16), &keys_before.narrow(0, 0, 16)));
    assert!(!bit_equal(&keys_after.narrow(0, 16, 8), &keys_before.narrow(0, 16, 8)), "current atoms must train");
    // The checksum is sensitive: touching one frozen value changes it.
    let mut next = trained_layer(16, 12, 2, &cfg());
    let sum = next.bank().frozen_checksum()?;
    next.bank_mut().begin_task(7)?;
    assert_ne!(next.bank().frozen_checksum()?, sum, "freezing more atoms changes the checksum");
    Ok(())
}

#[test]
fn begin_task_appends_r_atoms_and_freezes_the_rest() -> anyhow::Result<()> {
    let (w, b) = base(10, 6, Kind::Float);
    let mut layer = MoramLinear::new(&w, Some(&b), &cfg())?;
    for task in 0..4u32 {
        layer.bank_mut().begin_task(task * 2)?;
        let bank = layer.bank();
        assert_eq!(bank.len(), 8 * (task as usize + 1));
        assert_eq!(bank.n_trainable(), 8);
        assert_eq!(bank.atom_task().iter().filter(|&&t| t == task * 2).count(), 8);
        assert_eq!(bank.frozen_flags().iter().filter(|&&f| f).count(), 8 * task as usize);
        let keys = bank.keys_tensor().detach().narrow(0, bank.n_frozen() as i64, 8);
        let bound = 1.0 / 10f64.sqrt();
        assert!(keys.abs().max().double_value(&[]) <= bound, "keys ~ U(-1/sqrt(d_in), 1/sqrt(d_in))");
        let values = bank.values_tensor().detach().narrow(1, bank.n_frozen() as i64, 8);
        assert_eq!(values.abs().sum(Kind::Float).double_value(&[]), 0.0, "values start at 0");
    }
    let err = layer.bank_mut().begin_task(5).unwrap_err().to_string();
    assert!(err.contains("task ids must increase"), "{err}");
    Ok(())
}

#[test]
fn compat_b3_puts_untrained_atoms_into_evaluation() -> anyhow::Result<()> {
    let mut config = cfg();
    config.compat.untrained_atoms_in_eval = true;
    let mut layer = trained_layer(10, 6, 1, &config);
    layer.bank_mut().end_task()?;
    assert_eq!((layer.bank().len(), layer.bank().n_frozen()), (16, 8), "fresh atoms appended at task end");
    assert_eq!(layer.bank().pending_task(), Some(1));
    layer.bank_mut().begin_task(1)?;
    assert_eq!(layer.bank().len(), 16, "the next task reuses the early atoms");
    assert_eq!(layer.bank().pending_task(), None);
    // Default: end_task changes nothing.
    let mut plain = trained_layer(10, 6, 1, &cfg());
    plain.bank_mut().end_task()?;
    assert_eq!(plain.bank().len(), 8);
    Ok(())
}

#[test]
fn lora_never_grows_nor_freezes() -> anyhow::Result<()> {
    let config = MoramConfig { routing: Routing::Lora {}, value_scale: 2.0, ..cfg() };
    let mut layer = trained_layer(10, 6, 3, &config);
    assert_eq!((layer.bank().len(), layer.bank().n_trainable()), (8, 8));
    layer.set_training(false);
    let x = Tensor::randn([3, 10], (Kind::Float, Device::Cpu));
    let bank = layer.bank();
    let expected = x.linear(layer.weight(), layer.bias())
        + x.matmul(&bank.keys_tensor().tr()).matmul(&bank.values_tensor().tr()) * 2.0;
    assert_close("LoRA", &layer.forward(&x)?, &expected, 1e-5, 1e-5);
    Ok(())
}

#[test]
fn moe_lora_with_one_expert_is_lora() -> anyhow::Result<()> {
    tch::manual_seed(6);
    let config = MoramConfig { routing: Routing::MoeLora { use_top_k: true, use_temperature: false }, ..cfg() };
    let layer = trained_layer(10, 6, 1, &config);
    let x = Tensor::randn([3, 10], (Kind::Float, Device::Cpu));
    let bank = layer.bank();
    let expected =
        x.linear(layer.weight(), layer.bias()) + x.matmul(&bank.keys_tensor().tr()).matmul(&bank.values_tensor().tr());
    assert_close("MoE-LoRA, one expert", &layer.forward(&x)?, &expected, 1e-5, 1e-5);
    assert_eq!(bank.expert_task(), &[0]);
    Ok(())
}

#[test]
fn every_routing_variant_runs_trains_and_freezes() -> anyhow::Result<()> {
    tch::manual_seed(7);
    let variants = [
        Routing::MORAM,
        Routing::SelfActivated { use_top_k: false, use_temperature: false, use_threshold: false },
        Routing::SelfActivated { use_top_k: true, use_temperature: false, use_threshold: false },
        Routing::SelfActivated { use_top_k: true, use_temperature: true, use_threshold: false },
        Routing::ExternalRouter { use_top_k: true, use_temperature: true },
        Routing::MoeLora { use_top_k: true, use_temperature: false },
        Routing::MoeLora { use_top_k: true, use_temperature: true },
        Routing::Lora {},
    ];
    for routing in variants {
        let config = MoramConfig { routing, ..cfg() };
        let mut layer = trained_layer(12, 8, 3, &config);
        let before = layer.bank().frozen_checksum()?;
        layer.set_training(true);
        let x = Tensor::randn([4, 12], (Kind::Float, Device::Cpu));
        layer.forward(&x)?.sum(Kind::Float).backward();
        for t in layer.bank().trainable_tensors() {
            assert!(t.grad().defined(), "{routing:?}: a trainable tensor got no gradient");
        }
        layer.set_training(false);
        let y = layer.forward(&x)?;
        assert!(y.isfinite().all().int64_value(&[]) == 1, "{routing:?}: non-finite output");
        assert_eq!(layer.bank().frozen_checksum()?, before);
    }
    Ok(())
}

#[test]
fn sparse_value_path_equals_the_dense_path() -> anyhow::Result<()> {
    tch::manual_seed(8);
    let dense_cfg = MoramConfig {
        r: 16,
        top_k: 16,
        temperature: 0.01,
        threshold: 0.2,
        value_path: ValuePath::Dense,
        ..MoramConfig::default()
    };
    let mut dense = trained_layer(64, 48, 10, &dense_cfg);
    dense.set_training(false);
    let mut sparse_cfg = dense_cfg.clone();
    sparse_cfg.value_path = ValuePath::Sparse;
    let bank = moram_core::AtomBank::from_parts(
        &sparse_cfg,
        &dense.bank().keys_tensor(),
        &dense.bank().values_tensor(),
        dense.bank().atom_task().to_vec(),
        dense.bank().n_frozen(),
        None,
        vec![],
        Device::Cpu,
    )?;
    let sparse = MoramLinear::with_bank(dense.weight(), dense.bias(), bank)?;
    let x = Tensor::randn([2, 50, 64], (Kind::Float, Device::Cpu));
    let (a, b) = tch::no_grad(|| (dense.forward(&x), sparse.forward(&x)));
    assert_close("sparse vs dense", &b?, &a?, 1e-6, 0.0);
    // And on a single token, where the sparse path really drops atoms.
    let x1 = x.narrow(1, 0, 1);
    let (a, b) = tch::no_grad(|| (dense.forward(&x1), sparse.forward(&x1)));
    assert_close("sparse vs dense, one token", &b?, &a?, 1e-6, 0.0);
    // A token that no atom passes the gate for (all scores 0): nothing is left to compact.
    let x0 = Tensor::zeros([1, 64], (Kind::Float, Device::Cpu));
    let (a, b) = tch::no_grad(|| (dense.forward(&x0), sparse.forward(&x0)));
    assert!(bit_equal(&b?, &a?), "no atom selected");
    Ok(())
}

#[test]
fn forward_rejects_bad_inputs() -> anyhow::Result<()> {
    let (w, b) = base(8, 4, Kind::Float);
    let layer = MoramLinear::new(&w, Some(&b), &cfg())?;
    let err = layer.forward(&Tensor::zeros([3, 7], (Kind::Float, Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("[.., 8]") && err.contains("[3, 7]"), "{err}");
    let err = layer.forward(&Tensor::zeros([3, 8], (Kind::Int64, Device::Cpu))).unwrap_err().to_string();
    assert!(err.contains("float"), "{err}");
    let err = MoramLinear::new(&Tensor::zeros([4], (Kind::Float, Device::Cpu)), None, &cfg()).unwrap_err().to_string();
    assert!(err.contains("(d_out, d_in)"), "{err}");
    let err =
        MoramLinear::new(&w, Some(&Tensor::zeros([5], (Kind::Float, Device::Cpu))), &cfg()).unwrap_err().to_string();
    assert!(err.contains("bias") && err.contains("[4]"), "{err}");
    Ok(())
}

#[test]
fn base_weights_never_require_grad_and_output_keeps_input_dtype() -> anyhow::Result<()> {
    let (w, b) = base(8, 4, Kind::BFloat16);
    let w = w.set_requires_grad(true);
    let mut layer = MoramLinear::new(&w, Some(&b), &cfg())?;
    layer.bank_mut().begin_task(0)?;
    randomise_values(layer.bank());
    assert!(!layer.weight().requires_grad());
    let x = Tensor::randn([2, 8], (Kind::Float, Device::Cpu));
    assert_eq!(layer.forward(&x)?.kind(), Kind::Float);
    assert_eq!(layer.forward(&x.to_kind(Kind::BFloat16))?.kind(), Kind::BFloat16);
    for t in layer.bank().trainable_tensors() {
        assert_eq!(t.kind(), Kind::Float, "atoms are f32 whatever the base dtype");
    }
    Ok(())
}
