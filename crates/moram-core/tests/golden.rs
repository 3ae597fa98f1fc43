//! moram-core against golden values from an independent PyTorch computation of Eqs. 3-8.
//!
//! `tests/fixtures/core/generate.py` (run by `cargo xtask fixtures`) wrote the fixture with
//! PyTorch 2.11.0: per case the inputs and, in train and eval mode, the outputs, the atom weights
//! and the gradients of the current task's keys, values (and router keys) and of the input.

mod common;

use common::assert_close;
use moram_core::{AtomBank, CompatFlags, MoramConfig, MoramLinear, Routing, ValuePath};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Deserialize, Debug)]
struct Case {
    name: String,
    r: usize,
    top_k: usize,
    temperature: f64,
    threshold: f64,
    eps: f64,
    value_scale: f64,
    unscaled_frozen: bool,
    routing: String,
    router_temperature: bool,
    n_frozen: usize,
    atom_task: Vec<u32>,
    base_dtype: String,
    has_bias: bool,
    #[serde(default)]
    n_frozen_router: usize,
    #[serde(default)]
    expert_task: Vec<u32>,
}

fn fixture_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/core/golden.safetensors")
}

fn load() -> anyhow::Result<(Vec<Case>, HashMap<String, Tensor>)> {
    let path = fixture_path();
    let bytes = std::fs::read(&path)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let meta = header.metadata().clone().unwrap_or_default();
    let cases: Vec<Case> = serde_json::from_str(meta.get("cases").map(String::as_str).unwrap_or("[]"))?;
    let tensors = Tensor::read_safetensors(&path)?.into_iter().collect();
    Ok((cases, tensors))
}

fn config_of(case: &Case, value_path: ValuePath) -> MoramConfig {
    let routing = match case.routing.as_str() {
        "self_activated" => Routing::MORAM,
        "external_router" => Routing::ExternalRouter { use_top_k: true, use_temperature: case.router_temperature },
        "moe_lora" => Routing::MoeLora { use_top_k: true, use_temperature: case.router_temperature },
        other => panic!("unknown routing {other}"),
    };
    MoramConfig {
        r: case.r,
        top_k: case.top_k,
        temperature: case.temperature,
        threshold: case.threshold,
        eps: case.eps,
        value_scale: case.value_scale,
        dropout: 0.0,
        routing,
        value_path,
        compat: CompatFlags { unscaled_frozen_values: case.unscaled_frozen, ..Default::default() },
        ..MoramConfig::default()
    }
}

/// Tolerances: f32 cases differ from PyTorch only by summation order; bf16 outputs are rounded to
/// bf16 (8 mantissa bits), so they are compared at about two bf16 ulps.
fn tolerances(case: &Case) -> (f64, f64) {
    if case.base_dtype == "bfloat16" {
        (2e-2, 1.6e-2)
    } else {
        (1e-5, 1e-4)
    }
}

fn run_case(case: &Case, t: &HashMap<String, Tensor>, value_path: ValuePath) -> anyhow::Result<()> {
    let get = |k: &str| t.get(&format!("{}.{k}", case.name)).unwrap_or_else(|| panic!("{}: no {k}", case.name));
    let config = config_of(case, value_path);
    let router = t.get(&format!("{}.router", case.name)).map(|r| (r, case.n_frozen_router));
    let (atol, rtol) = tolerances(case);
    for mode in ["train", "eval"] {
        let bank = AtomBank::from_parts(
            &config,
            get("keys"),
            get("values"),
            case.atom_task.clone(),
            case.n_frozen,
            router,
            case.expert_task.clone(),
            Device::Cpu,
        )?;
        let bias = if case.has_bias { Some(get("bias")) } else { None };
        let mut layer = MoramLinear::with_bank(get("weight"), bias, bank)?;
        layer.set_training(mode == "train");
        layer.set_capture(true);
        let x = get("x").detach().set_requires_grad(true);
        let y = layer.forward(&x)?;
        let what = |q: &str| format!("{} [{mode}, {value_path:?}] {q}", case.name);
        assert_eq!(y.kind(), x.kind(), "{}", what("output dtype"));
        assert_close(&what("output"), &y, get(&format!("{mode}.y")), atol, rtol);
        let weights = layer.take_captured().expect("captured weights");
        assert_close(&what("atom weights"), &weights, get(&format!("{mode}.weights")), 1e-6, 1e-4);
        (y.to_kind(Kind::Float) * get("grad_y").to_kind(Kind::Float)).sum(Kind::Float).backward();
        let named: HashMap<_, _> = layer.bank().named_trainable_tensors().into_iter().collect();
        for (name, key) in [("keys", "grad_keys"), ("values", "grad_values"), ("router", "grad_router")] {
            let Some(want) = t.get(&format!("{}.{mode}.{key}", case.name)) else {
                continue;
            };
            let grad = named[name].grad();
            // Gradients scale with 1/tau; compare relative to their own magnitude.
            let scale = want.abs().max().double_value(&[]).max(1.0);
            assert_close(&what(key), &grad, want, atol * scale, rtol.max(1e-4));
        }
        let gx = x.grad();
        let want_gx = get(&format!("{mode}.grad_x"));
        let scale = want_gx.abs().to_kind(Kind::Float).max().double_value(&[]).max(1.0);
        assert_close(&what("grad_x"), &gx, want_gx, atol * scale, rtol.max(1e-4));
    }
    Ok(())
}

#[test]
fn every_case_matches_pytorch_on_the_dense_path() -> anyhow::Result<()> {
    let (cases, tensors) = load()?;
    assert_eq!(cases.len(), 8, "the fixture holds 8 cases");
    for case in &cases {
        run_case(case, &tensors, ValuePath::Dense)?;
    }
    Ok(())
}

#[test]
fn every_case_matches_pytorch_on_the_sparse_path() -> anyhow::Result<()> {
    let (cases, tensors) = load()?;
    for case in &cases {
        run_case(case, &tensors, ValuePath::Sparse)?;
    }
    Ok(())
}

#[test]
fn fixture_covers_what_the_issue_asks() -> anyhow::Result<()> {
    let (cases, _) = load()?;
    assert!(cases.iter().any(|c| c.top_k >= c.atom_task.len()), "a case with k >= R");
    assert!(cases.iter().any(|c| c.n_frozen >= 2 * c.r), "a case with several tasks of atoms");
    assert!(cases.iter().any(|c| c.base_dtype == "bfloat16"), "a bf16 base");
    assert!(cases.iter().any(|c| c.base_dtype == "float32"), "an f32 base");
    assert!(cases.iter().any(|c| c.top_k < 2), "k raised to 2");
    Ok(())
}
