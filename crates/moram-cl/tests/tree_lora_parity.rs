//! TreeLoRA against the official code (`tests/fixtures/cl/generate_tree_lora.py` ran the official
//! `kd_lora_tree.py` of the MoRAM repository at the commit it records): the KD-tree's root split
//! and the term's value and gradient on fixed inputs.

use moram_cl::methods::tree_lora::{build_root, term};
use std::path::Path;
use tch::{Kind, Tensor};

fn cases() -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cl/tree_lora_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn vector(v: &serde_json::Value) -> Tensor {
    let xs: Vec<f32> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    Tensor::from_slice(&xs)
}

/// One vector per layer for each task: `[[...], ...]` per task.
fn per_task(v: &serde_json::Value) -> Vec<Vec<Tensor>> {
    v.as_array().unwrap().iter().map(|task| task.as_array().unwrap().iter().map(vector).collect()).collect()
}

fn tasks(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as usize).collect()
}

fn close(a: Option<f64>, b: &serde_json::Value) -> bool {
    match (a, b.as_f64()) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() <= 1e-5 * b.abs().max(1.0),
        _ => false,
    }
}

#[test]
fn the_tree_splits_as_the_official_code() {
    let cases = cases();
    assert_eq!(cases["commit"], "aaa51d8ec67171e1bc5e1a1168351588561256c4");
    for case in cases["trees"].as_array().unwrap() {
        let means: Vec<Vec<Tensor>> = per_task(&case["means"]);
        let root = build_root(&means).expect("several tasks split");
        assert_eq!(root.left.0, tasks(&case["left"]["tasks"]), "{case}");
        assert_eq!(root.right.0, tasks(&case["right"]["tasks"]), "{case}");
        assert!(close(root.left.1, &case["left"]["median"]), "{:?} vs {}", root.left, case["left"]);
        assert!(close(root.right.1, &case["right"]["median"]), "{:?} vs {}", root.right, case["right"]);
    }
}

#[test]
fn the_term_and_its_gradient_are_the_official_code() {
    for case in cases()["terms"].as_array().unwrap() {
        let keys: Vec<Tensor> =
            case["keys"].as_array().unwrap().iter().map(|k| vector(k).set_requires_grad(true)).collect();
        let all: Vec<Vec<Tensor>> = per_task(&case["all_grad"]);
        let chosen: Vec<Tensor> =
            tasks(&case["prev"]).iter().enumerate().map(|(l, &p)| all[p][l].shallow_clone()).collect();
        let (loss, tmp_reg) = (case["loss"].as_f64().unwrap(), case["tmp_reg"].as_f64().unwrap());
        let value = term(&keys, &chosen, loss, tmp_reg).unwrap();
        let want = case["value"].as_f64().unwrap();
        assert!((value.double_value(&[]) - want).abs() <= 1e-6 * want.abs().max(1.0), "{value} vs {want}");
        value.backward();
        for (k, g) in keys.iter().zip(case["grad"].as_array().unwrap()) {
            let diff = (k.grad() - vector(g)).abs().max().to_kind(Kind::Double).double_value(&[]);
            assert!(diff <= 1e-5, "gradient differs by {diff}");
        }
    }
}
