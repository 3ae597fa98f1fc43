//! Loss, packing and prefill of the causal LM on tiny random models.
use super::{CausalLm, KvCache, LlmConfig, Outputs};
use crate::llm::PrefixMemo;
use crate::{TargetSpec, WeightSource};
use tch::{Device, Kind, Tensor};

/// The tiny LLaMA fixture (2 blocks) with atoms of random keys and values on every linear of
/// `layers`, in eval mode unless `training`.
fn tiny(layers: &[usize], training: bool) -> CausalLm {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/tiny_llama");
    let config = LlmConfig::from_hf_json(dir.join("config.json")).expect("tiny_llama config");
    let source = WeightSource::open(&dir).expect("tiny_llama weights");
    let mut model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu).expect("tiny_llama");
    let spec = TargetSpec { layers: Some(layers.to_vec()), ..TargetSpec::all_encoders(&["all"]) };
    let moram = moram_core::MoramConfig { r: 4, top_k: 4, dropout: 0.0, ..Default::default() };
    // Seeded under a lock: tests run on parallel threads and would interleave their draws
    // from libtorch's global generator.
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(11);
    model.inject(&spec, &moram).expect("inject");
    model.begin_task(0).expect("task 0");
    let _guard = tch::no_grad_guard();
    for (i, t) in model.trainable_tensors().iter().enumerate() {
        let g = Tensor::randn(t.size(), (Kind::Float, Device::Cpu)) * 0.3;
        t.shallow_clone().copy_(&(g + i as f64 * 1e-3));
    }
    model.set_training(training);
    model
}

/// A left-padded batch of 3 rows `(ids, positions, keys_valid)`, lengths 9, 5 and 7.
fn padded(lengths: &[i64]) -> (Vec<Vec<i64>>, Tensor, Tensor, Tensor) {
    let width = *lengths.iter().max().unwrap_or(&1);
    let prompts: Vec<Vec<i64>> =
        lengths.iter().enumerate().map(|(r, &n)| (0..n).map(|i| 3 + (r as i64 * 17 + i * 5) % 90).collect()).collect();
    let (mut ids, mut pos, mut valid) = (Vec::new(), Vec::new(), Vec::new());
    for p in &prompts {
        let pad = (width - p.len() as i64) as usize;
        ids.extend(std::iter::repeat_n(0, pad).chain(p.iter().copied()));
        pos.extend(std::iter::repeat_n(1, pad).chain(0..p.len() as i64));
        valid.extend(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let b = lengths.len() as i64;
    let t = |v: &[i64]| Tensor::from_slice(v).view([b, width]);
    (prompts, t(&ids), t(&pos), Tensor::from_slice(&valid).view([b, width]))
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// The largest difference relative to `b`'s largest magnitude (at least 1): float-rounding
/// differences scale with the values, and the routing's 1 / tau amplifies them.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_diff(a, b) / b.abs().max().double_value(&[]).max(1.0)
}

#[test]
fn the_last_block_computes_only_the_rows_read_unless_a_layer_records() -> crate::Result<()> {
    let model = tiny(&[0, 1], false);
    let _guard = tch::no_grad_guard();
    let (_, ids, pos, valid) = padded(&[9, 5, 7]);
    let run = |outputs| {
        let h = model.embed_tokens(&ids)?;
        model.run_blocks(h, 0..2, &pos, Some(&valid), None, &mut KvCache::default(), outputs)
    };
    let every = run(Outputs::Every)?;
    let tail = run(Outputs::Last(3))?;
    assert_eq!(tail.size(), [3, 3, 64]);
    let d = rel_diff(&tail, &every.narrow(1, 6, 3));
    assert!(d < 5e-5, "tail differs by {d} (relative)");
    // A recording layer in the last block sees every token.
    let (_, layer) =
        model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.mlp.down")).expect("down_proj");
    layer.start_stats(moram_core::StatsMode::AsUsed);
    assert_eq!(run(Outputs::Last(3))?.size(), [3, 9, 64]);
    let stats = layer.take_stats().expect("recorded");
    assert_eq!(stats.tokens, 27, "3 rows x 9 positions");
    Ok(())
}

/// The loss and the gradients of the trainable tensors of `loss`, zeroing them after.
fn loss_and_grads(model: &CausalLm, loss: impl Fn() -> crate::Result<Tensor>) -> crate::Result<(f64, Vec<Tensor>)> {
    let params = model.trainable_tensors();
    let loss = loss()?;
    loss.backward();
    let grads = params.iter().map(|p| p.grad().copy()).collect();
    params.iter().for_each(|p| {
        let _ = p.grad().zero_();
    });
    Ok((loss.double_value(&[]), grads))
}

/// A batch of rows of 9, 5 and 7 tokens with labels on the last 3 tokens of rows 0 and 2
/// and the last 2 of row 1: `(ids, labels, keys_valid)`.
fn labelled() -> (Tensor, Tensor, Tensor) {
    let (_, ids, _, valid) = padded(&[9, 5, 7]);
    let labels = ids.copy();
    let _ = labels.narrow(1, 0, 6).fill_(-100);
    let _ = labels.get(1).narrow(0, 6, 1).fill_(-100);
    (ids, labels, valid)
}

/// Gradients agree relative to each tensor's largest magnitude.
fn assert_close(got: &[Tensor], want: &[Tensor], bound: f64) {
    for (a, b) in got.iter().zip(want) {
        let scale = b.abs().max().double_value(&[]).max(1e-6);
        assert!(max_diff(a, b) / scale < bound, "gradient differs by {} of {scale}", max_diff(a, b));
    }
    assert!(want.iter().any(|g| g.abs().max().double_value(&[]) > 0.0));
}

#[test]
fn a_trimmed_loss_has_the_full_loss_and_gradients() -> crate::Result<()> {
    let model = tiny(&[0, 1], true);
    let (ids, labels, valid) = labelled();
    let (trimmed, trimmed_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
    let (_, layer) = model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.self_attn.q")).expect("q");
    layer.start_input_moments();
    let (full, full_grads) = loss_and_grads(&model, || model.causal_lm_loss(&ids, &labels, Some(&valid)))?;
    assert_eq!(layer.take_input_moments().map(|(_, n)| n), Some(27), "the full padded pass ran");
    assert!((trimmed - full).abs() < 1e-6, "loss {trimmed} vs {full}");
    assert_close(&trimmed_grads, &full_grads, 1e-5);
    Ok(())
}

#[test]
fn a_packed_batch_has_the_padded_loss_and_gradients() -> crate::Result<()> {
    let model = tiny(&[0, 1], true);
    let (ids, labels, valid) = labelled();
    let packed = model.packing(&labels, Some(&valid))?.expect("a left-padded batch packs");
    assert_eq!((packed.lengths.as_slice(), packed.tails.as_slice()), ([9, 5, 7].as_slice(), [4, 3, 4].as_slice()));
    let (want, want_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
    let (got, got_grads) = loss_and_grads(&model, || model.causal_lm_loss(&ids, &labels, Some(&valid)))?;
    assert!((got - want).abs() < 1e-6, "loss {got} vs {want}");
    // RoPE angles at other absolute positions round differently (measured: at most 5e-5).
    assert_close(&got_grads, &want_grads, 2e-4);
    // From the hidden states entering block 1 (the frozen prefix of a model with atoms in
    // block 1 only), left-padded with anything.
    let model = tiny(&[1], true);
    let (want, want_grads) = loss_and_grads(&model, || model.padded_loss(&ids, &labels, Some(&valid), 9))?;
    let hidden = {
        let _guard = tch::no_grad_guard();
        let h = model.embed_tokens(&ids)?;
        let pos = Tensor::arange(9, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        model.run_blocks(h, 0..1, &pos, Some(&valid), None, &mut KvCache::default(), Outputs::Every)?
    };
    let pads = valid.eq(0).unsqueeze(-1);
    let hidden = hidden.masked_fill(&pads, 7.0);
    let from = |first| model.causal_lm_loss_from(&hidden, first, &labels, Some(&valid));
    let (got, got_grads) = loss_and_grads(&model, || from(1))?;
    assert!((got - want).abs() < 1e-6, "loss from block 1: {got} vs {want}");
    assert_close(&got_grads, &want_grads, 2e-4);
    // A recording layer sees every position: the batch runs padded.
    let (_, layer) = model.moram_layers().into_iter().find(|(p, _)| p.contains("layers.1.mlp.up")).expect("up");
    layer.start_input_moments();
    assert!(model.packing(&labels, Some(&valid))?.is_none());
    let _ = layer.take_input_moments();
    Ok(())
}

#[test]
fn a_bf16_model_on_the_cpu_attends_in_f32_over_its_bf16_values() -> crate::Result<()> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/tiny_llama");
    let config = LlmConfig::from_hf_json(dir.join("config.json"))?;
    let model = CausalLm::from_hf(&WeightSource::open(&dir)?, &config, Kind::BFloat16, Device::Cpu)?;
    let _guard = tch::no_grad_guard();
    let ids = Tensor::from_slice(&[3i64, 17, 5, 42, 9, 11]).view([1, 6]);
    let mut cache = KvCache::default();
    let full = model.forward(&ids, &mut cache)?;
    // What the cache holds per position is what the model reports (keys and values, f32).
    let per_position: usize = cache
        .layers
        .iter()
        .flatten()
        .map(|s| {
            let (k, v) = s.kv();
            (k.numel() + v.numel()) * 4 / 6
        })
        .sum();
    assert_eq!(model.kv_bytes_per_position(), per_position);
    for slot in cache.layers.iter().flatten() {
        let (k, v) = slot.kv();
        for t in [k, v] {
            assert_eq!(t.kind(), Kind::Float);
            assert!(t.to_kind(Kind::BFloat16).to_kind(Kind::Float).equal(&t), "cached values are bf16 values");
        }
    }
    // Decoding the last token on the cache of the first five: the full pass's last logits.
    let mut cache = KvCache::default();
    let _ = model.forward(&ids.narrow(1, 0, 5), &mut cache)?;
    let step = model.forward(&ids.narrow(1, 5, 1), &mut cache)?;
    let d = rel_diff(&step.select(1, 0), &full.select(1, 5));
    assert!(d < 1e-2, "decoded logits differ by {d} (relative)");
    Ok(())
}

#[test]
fn packed_prefill_equals_the_padded_batch_with_and_without_a_prefix_memo() -> crate::Result<()> {
    let model = tiny(&[1], false);
    let _guard = tch::no_grad_guard();
    let (prompts, ids, pos, valid) = padded(&[9, 5, 7]);
    let mut want_cache = KvCache::default();
    let want = model.forward_padded_last(&ids, &pos, Some(&valid), &mut want_cache)?;
    let mut memo = PrefixMemo::default();
    for memo in [None, Some(&mut memo)] {
        let (logits, cache) = model.prefill(&prompts, 0, memo)?;
        assert!(rel_diff(&logits, &want) < 5e-5, "logits differ by {} (relative)", rel_diff(&logits, &want));
        assert_eq!(cache.len(), 9);
        for (got, want) in cache.layers.iter().zip(&want_cache.layers) {
            let ((gk, gv), (wk, wv)) = (got.as_ref().expect("slot").kv(), want.as_ref().expect("slot").kv());
            assert_eq!(gk.size(), wk.size());
            // Real positions agree; pad slots hold zeros (never attended to).
            let real = valid.to_kind(Kind::Bool).view([3, 1, 9, 1]);
            assert!(
                rel_diff(&gk.masked_fill(&real.logical_not(), 0.0), &wk.masked_fill(&real.logical_not(), 0.0)) < 5e-5
            );
            assert!(
                rel_diff(&gv.masked_fill(&real.logical_not(), 0.0), &wv.masked_fill(&real.logical_not(), 0.0)) < 5e-5
            );
            assert_eq!(gk.masked_select(&real.logical_not()).abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }
    assert_eq!(memo.len(), 1, "the frozen block's pass was kept");
    let (again, _) = model.prefill(&prompts, 0, Some(&mut memo))?;
    assert!(rel_diff(&again, &want) < 5e-5);
    Ok(())
}
