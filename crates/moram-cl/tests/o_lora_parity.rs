//! O-LoRA's regularisers against the official code (`tests/fixtures/cl/generate_o_lora.py` ran the
//! official lines of `O_LoRA.train_one_task` from the MoRAM repository at the commit it records)
//! on two layers with two earlier tasks: the term and its gradient on the new keys and values.

use moram_core::{AtomBank, MoramConfig, Penalty, Routing};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn matrix(v: &serde_json::Value) -> Tensor {
    let rows: Vec<Vec<f64>> = serde_json::from_value(v.clone()).unwrap();
    let flat: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    Tensor::from_slice(&flat).view([rows.len() as i64, rows[0].len() as i64])
}

fn set(t: &Tensor, value: &Tensor) {
    let _guard = tch::no_grad_guard();
    t.shallow_clone().copy_(value);
}

#[test]
fn the_regularisers_are_the_official_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/cl/o_lora_cases.json");
    let case: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(case["commit"], "aaa51d8ec67171e1bc5e1a1168351588561256c4");
    let penalty = Penalty { orthogonality: case["lambda_1"].as_f64().unwrap(), l2: case["lambda_2"].as_f64().unwrap() };
    let config = MoramConfig { r: 2, routing: Routing::Sum {}, penalty, ..MoramConfig::default() };
    let mut total: Option<Tensor> = None;
    let mut banks = Vec::new();
    for layer in case["layers"].as_array().unwrap() {
        let (frozen, keys, values) = (matrix(&layer["frozen"]), matrix(&layer["keys"]), matrix(&layer["values"]));
        let (d_in, d_out) = (keys.size()[1] as usize, values.size()[0] as usize);
        let mut bank = AtomBank::new(d_in, d_out, &config, Device::Cpu).unwrap();
        for task in 0..2 {
            bank.begin_task(task).unwrap();
            set(&bank.trainable_tensors()[0], &frozen.narrow(0, 2 * task as i64, 2));
        }
        bank.begin_task(2).unwrap();
        let params = bank.trainable_tensors();
        set(&params[0], &keys);
        set(&params[1], &values);
        let term = bank.penalty().expect("a penalty on the third task");
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
        banks.push((bank, layer.clone()));
    }
    let total = total.unwrap();
    let want = case["term"].as_f64().unwrap();
    assert!((total.double_value(&[]) - want).abs() <= 1e-5 * want.abs(), "{total} vs official {want}");
    total.backward();
    for (bank, layer) in &banks {
        let params = bank.trainable_tensors();
        for (p, key) in params.iter().zip(["grad_keys", "grad_values"]) {
            let diff = (p.grad() - matrix(&layer[key])).abs().max().to_kind(Kind::Double).double_value(&[]);
            assert!(diff <= 1e-5, "{key} differs by {diff}");
        }
    }
}
