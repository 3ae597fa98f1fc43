//! LwF's distillation term against the official code (`tests/fixtures/cl/generate_lwf.py` called
//! `LwF.KD_loss` of the MoRAM repository at the commit it records) on fixed logits.

use moram_cl::methods::lwf::divergence;
use std::path::Path;
use tch::Tensor;

fn tensor(v: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<Vec<f64>>> = serde_json::from_value(v.clone()).unwrap();
    let (b, l, n) = (rows.len() as i64, rows[0].len() as i64, rows[0][0].len() as i64);
    let flat: Vec<f32> = rows.iter().flatten().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([b, l, n])
}

/// The official code rounds the old model's logits to bfloat16 (kept in the cases) and then takes
/// their log-softmax in bfloat16; moram computes in f32, so the two agree to bfloat16's precision
/// (0.1% on these cases).
#[test]
fn the_divergence_is_the_official_kd_loss() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cl/lwf_cases.json");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(cases["commit"], "aaa51d8ec67171e1bc5e1a1168351588561256c4");
    for case in cases["cases"].as_array().unwrap() {
        let (new, old) = (tensor(&case["new"]), tensor(&case["old"]));
        let (b, v) = (new.size()[0], new.size()[2]);
        let t = case["temperature"].as_f64().unwrap();
        let ours = divergence(&new.view([-1, v]), &old.view([-1, v]), t, b as usize).double_value(&[]);
        let want = case["value"].as_f64().unwrap();
        assert!((ours - want).abs() <= 5e-3 * want.abs(), "ours {ours} vs official {want} (T = {t})");
    }
}
