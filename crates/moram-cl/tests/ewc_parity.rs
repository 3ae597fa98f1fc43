//! EWC's Fisher and penalty against the official code (`tests/fixtures/cl/generate_ewc.py` called
//! `EWC._update_fisher` and `EWC.penalty` of the MoRAM repository at the commit it records) on a
//! tiny module's parameters and six steps of gradients.

use moram_cl::methods::ewc::{fisher_update, penalty};
use std::path::Path;
use tch::{Kind, Tensor};

/// A nested JSON array as a tensor of its shape.
fn tensor(v: &serde_json::Value) -> Tensor {
    fn walk(v: &serde_json::Value, shape: &mut Vec<i64>, depth: usize, out: &mut Vec<f32>) {
        match v {
            serde_json::Value::Array(items) => {
                if shape.len() == depth {
                    shape.push(items.len() as i64);
                }
                for item in items {
                    walk(item, shape, depth + 1, out);
                }
            }
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    let (mut shape, mut values) = (Vec::new(), Vec::new());
    walk(v, &mut shape, 0, &mut values);
    Tensor::from_slice(&values).view(shape.as_slice())
}

fn list(v: &serde_json::Value) -> Vec<Tensor> {
    v.as_array().unwrap().iter().map(tensor).collect()
}

#[test]
fn the_fisher_and_the_penalty_are_the_official_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cl/ewc_cases.json");
    let case: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(case["commit"], "aaa51d8ec67171e1bc5e1a1168351588561256c4");
    let steps = case["train_length"].as_u64().unwrap() as usize;
    let want_fisher = list(&case["fisher"]);
    let mut fisher: Vec<Tensor> = want_fisher.iter().map(Tensor::zeros_like).collect();
    for step in case["steps"].as_array().unwrap() {
        for (f, g) in fisher.iter_mut().zip(list(step)) {
            fisher_update(f, &g, steps);
        }
    }
    for (ours, want) in fisher.iter().zip(&want_fisher) {
        let diff = (ours - want).abs().max().to_kind(Kind::Double).double_value(&[]);
        assert!(diff <= 1e-6, "Fisher differs by {diff}");
    }
    let (params, previous) = (list(&case["params"]), list(&case["previous"]));
    let ours = penalty(&params, &previous, &fisher, case["lambda"].as_f64().unwrap()).unwrap().double_value(&[]);
    let want = case["term"].as_f64().unwrap();
    assert!((ours - want).abs() <= 1e-5 * want.abs(), "penalty {ours} vs official {want}");
}
