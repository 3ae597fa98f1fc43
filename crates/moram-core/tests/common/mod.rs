//! Helpers shared by moram-core's integration tests.
#![allow(dead_code)]

use moram_core::{AtomBank, MoramConfig, MoramLinear};
use tch::{Device, Kind, Tensor};

/// Fails with the worst offending element when `|got - want| > atol + rtol * |want|` anywhere.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, atol: f64, rtol: f64) {
    assert_eq!(got.size(), want.size(), "{what}: shape");
    let got = got.to_kind(Kind::Double);
    let want = want.to_kind(Kind::Double);
    let diff = (&got - &want).abs();
    let excess = &diff - (want.abs() * rtol + atol);
    let worst = excess.max().double_value(&[]);
    assert!(
        worst <= 0.0,
        "{what}: max |diff| = {:e} exceeds atol {atol:e} + rtol {rtol:e} (max |want| = {:e})",
        diff.max().double_value(&[]),
        want.abs().max().double_value(&[])
    );
}

/// Whether two tensors are bitwise equal (same shape, dtype and values).
pub fn bit_equal(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.kind() == b.kind() && a.equal(b)
}

/// A random `(d_out, d_in)` base weight and bias.
pub fn base(d_in: i64, d_out: i64, kind: Kind) -> (Tensor, Tensor) {
    let w = (Tensor::randn([d_out, d_in], (Kind::Float, Device::Cpu)) * 0.2).to_kind(kind);
    let b = (Tensor::randn([d_out], (Kind::Float, Device::Cpu)) * 0.1).to_kind(kind);
    (w, b)
}

/// A layer with `tasks` tasks of atoms whose values were "trained" (set to random numbers).
pub fn trained_layer(d_in: i64, d_out: i64, tasks: u32, config: &MoramConfig) -> MoramLinear {
    let (w, b) = base(d_in, d_out, Kind::Float);
    let mut layer = MoramLinear::new(&w, Some(&b), config).expect("layer");
    for t in 0..tasks {
        layer.bank_mut().begin_task(t).expect("begin_task");
        randomise_values(layer.bank());
    }
    layer
}

/// Fills the trainable values with random numbers, as training would.
pub fn randomise_values(bank: &AtomBank) {
    let _guard = tch::no_grad_guard();
    for (name, mut t) in bank.named_trainable_tensors() {
        if name == "values" || name == "router" {
            t.copy_(&(t.randn_like() * 0.3));
        }
    }
}
