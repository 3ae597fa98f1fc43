//! LLaMA against `transformers` (`tests/fixtures/llm/generate_llama.py`): a tiny random
//! `LlamaForCausalLM` with grouped-query attention, llama3 RoPE scaling and an untied head, saved
//! as three shards, loaded through the production loader.

use moram_models::llm::{CausalLm, KvCache, LlmConfig};
use moram_models::WeightSource;
use std::collections::HashMap;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm")
}

fn load() -> anyhow::Result<(CausalLm, HashMap<String, Tensor>)> {
    let config = LlmConfig::from_hf_json(dir().join("tiny_llama/config.json"))?;
    let source = WeightSource::open(dir().join("tiny_llama"))?;
    let model = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu)?;
    let expected = Tensor::read_safetensors(dir().join("tiny_llama_expected.safetensors"))?.into_iter().collect();
    Ok((model, expected))
}

#[test]
fn logits_and_greedy_tokens_match_transformers() -> anyhow::Result<()> {
    let (model, e) = load()?;
    assert!(model.config().rope_scaling.is_some() && model.config().num_key_value_heads == 2);
    let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
    let diff = (&logits - &e["logits"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "logits differ by {diff}");
    for row in 0..2 {
        let prompt = Vec::<i64>::try_from(e["ids"].get(row).narrow(0, 0, 9))?;
        let greedy = model.generate_greedy(&prompt, 8, &[])?;
        assert_eq!(greedy, Vec::<i64>::try_from(e["greedy"].get(row))?, "prompt {row}");
    }
    Ok(())
}

#[test]
fn last_position_logits_equal_the_full_forward() -> anyhow::Result<()> {
    let (model, e) = load()?;
    let _g = tch::no_grad_guard();
    let ids = &e["ids"];
    let l = ids.size()[1];
    let full = model.forward(ids, &mut KvCache::default())?;
    let mut cache = KvCache::default();
    let last = model.forward_last(ids, &mut cache)?;
    assert_eq!(last.size(), [ids.size()[0], model.config().vocab_size]);
    assert_eq!(cache.len(), l, "the cache holds every prompt position");
    let diff = (&last - full.select(1, l - 1)).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "last-position logits differ by {diff}");
    // Continuing from that cache gives the full pass's next step, and with padding too.
    let next = ids.narrow(1, 0, 1);
    let step = model.forward_last(&next, &mut cache)?;
    let longer = model.forward(&Tensor::cat(&[ids, &next], 1), &mut KvCache::default())?;
    let diff = (&step - longer.select(1, l)).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "cached next step differs by {diff}");
    let valid = Tensor::ones([ids.size()[0], l], (Kind::Bool, Device::Cpu));
    let _ = valid.narrow(1, 0, 2).fill_(0);
    let positions = Tensor::arange(l, (Kind::Int64, Device::Cpu)).unsqueeze(0);
    let padded = model.forward_padded(ids, &positions, Some(&valid), &mut KvCache::default())?;
    let padded_last = model.forward_padded_last(ids, &positions, Some(&valid), &mut KvCache::default())?;
    let diff = (&padded_last - padded.select(1, l - 1)).abs().max().double_value(&[]);
    assert!(diff <= 1e-5, "padded last-position logits differ by {diff}");
    let err = model.forward_last(&ids.narrow(1, 0, 0), &mut KvCache::default()).unwrap_err().to_string();
    assert!(err.contains("at least one token"), "{err}");
    Ok(())
}

#[test]
fn config_and_checkpoint_problems_are_named() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let text = std::fs::read_to_string(dir().join("tiny_llama/config.json"))?;
    for (from, to, expect) in [
        ("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "`hidden_act` `gelu` is not supported"),
        ("\"rope_type\": \"llama3\"", "\"rope_type\": \"longrope\"", "type `longrope` is not supported"),
        (
            "\"use_cache\": true",
            "\"sliding_window\": 4096",
            "`sliding_window` is not a supported LLaMA/Gemma config field",
        ),
    ] {
        let path = tmp.path().join("config.json");
        std::fs::write(&path, text.replace(from, to))?;
        let err = LlmConfig::from_hf_json(&path).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
    let err = moram_models::llm::LlmTokenizer::from_file(tmp.path().join("tokenizer.json"), Some(1), vec![2], false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("tokenizer.json"), "a missing tokenizer is named: {err}");
    // A missing shard is named; a config that disagrees with the weights lists the mismatches.
    for entry in std::fs::read_dir(dir().join("tiny_llama"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), tmp.path().join(entry.file_name()))?;
    }
    std::fs::remove_file(tmp.path().join("model-00002-of-00003.safetensors"))?;
    let err = WeightSource::open(tmp.path()).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00003.safetensors"), "{err}");
    let mut config = LlmConfig::from_hf_json(dir().join("tiny_llama/config.json"))?;
    config.intermediate_size = 80;
    let source = WeightSource::open(dir().join("tiny_llama"))?;
    let err = CausalLm::from_hf(&source, &config, Kind::Float, Device::Cpu).unwrap_err();
    match &err {
        moram_models::Error::Mismatch { missing, unexpected, shapes, .. } => {
            assert!(missing.is_empty() && unexpected.is_empty(), "{err}");
            // gate, up and down of each of the blocks, nothing else.
            assert!(
                shapes.iter().all(|(k, ..)| k.contains(".mlp."))
                    && shapes.len() == 3 * config.num_hidden_layers as usize
            );
            assert!(shapes.contains(&("model.layers.0.mlp.up_proj.weight".into(), vec![80, 64], vec![96, 64])));
        }
        other => panic!("expected a checkpoint mismatch, got {other:?}"),
    }
    let err = err.to_string();
    assert!(err.contains("model.layers.0.mlp.up_proj.weight: expected [80, 64], found [96, 64]"), "{err}");
    Ok(())
}

#[test]
fn batched_left_padded_generation_with_penalties_matches_transformers() -> anyhow::Result<()> {
    use moram_models::llm::GenerationConfig;
    let (model, e) = load()?;
    let prompts = vec![
        Vec::<i64>::try_from(e["ids"].get(0).narrow(0, 0, 9))?,
        Vec::<i64>::try_from(e["ids"].get(1).narrow(0, 0, 5))?,
    ];
    let config =
        GenerationConfig { max_new_tokens: 10, repetition_penalty: 1.3, no_repeat_ngram_size: 3, ..Default::default() };
    let out = model.generate(&prompts, &config)?;
    for (r, row) in out.iter().enumerate() {
        assert_eq!(row, &Vec::<i64>::try_from(e["batched"].get(r as i64))?, "row {r}");
    }
    // Without penalties, batched greedy equals the unbatched greedy of the same prompt.
    let plain = model.generate(&prompts, &GenerationConfig { max_new_tokens: 8, ..Default::default() })?;
    assert_eq!(plain[0], Vec::<i64>::try_from(e["greedy"].get(0))?);
    assert_eq!(plain[1], model.generate_greedy(&prompts[1], 8, &[])?, "left padding does not change a row");
    Ok(())
}

#[test]
fn sampling_is_seeded_and_top_p_narrows_to_greedy() -> anyhow::Result<()> {
    use moram_models::llm::GenerationConfig;
    let (model, e) = load()?;
    let prompt = vec![Vec::<i64>::try_from(e["ids"].get(0).narrow(0, 0, 9))?];
    let sampled = |seed, top_p| {
        let config = GenerationConfig {
            max_new_tokens: 12,
            do_sample: true,
            temperature: 1.5,
            top_p,
            seed,
            ..Default::default()
        };
        model.generate(&prompt, &config)
    };
    assert_eq!(sampled(3, 1.0)?, sampled(3, 1.0)?, "same seed, same tokens");
    assert_ne!(sampled(3, 1.0)?, sampled(4, 1.0)?, "different seeds differ at temperature 1.5");
    let greedy = model.generate(&prompt, &GenerationConfig { max_new_tokens: 12, ..Default::default() })?;
    assert_eq!(sampled(5, 1e-9)?, greedy, "a vanishing nucleus keeps only the arg-max");
    let err = model
        .generate(&prompt, &GenerationConfig { do_sample: true, temperature: 0.0, ..Default::default() })
        .unwrap_err()
        .to_string();
    assert!(err.contains("temperature must be > 0"), "{err}");
    // A stop id ends the row right after it is produced.
    let stop = greedy[0][3];
    let stopped = model
        .generate(&prompt, &GenerationConfig { max_new_tokens: 12, stop_ids: vec![stop], ..Default::default() })?;
    assert_eq!(stopped[0], greedy[0][..=greedy[0].iter().position(|&t| t == stop).unwrap_or(3)].to_vec());
    Ok(())
}

#[test]
fn causal_lm_loss_with_masked_prompt_and_padding_matches_transformers() -> anyhow::Result<()> {
    let (model, e) = load()?;
    let loss = model.causal_lm_loss(&e["train_ids"], &e["labels"], Some(&e["train_mask"]))?;
    let want = e["loss"].double_value(&[0]);
    assert!((loss.double_value(&[]) - want).abs() <= 1e-5, "loss {} vs {want}", loss.double_value(&[]));
    let all_masked = e["labels"].full_like(-100);
    assert!(model
        .causal_lm_loss(&e["train_ids"], &all_masked, None)
        .unwrap_err()
        .to_string()
        .contains("every label is -100"));
    Ok(())
}

#[test]
fn tokenizer_json_matches_transformers_on_32_strings() -> anyhow::Result<()> {
    use moram_models::llm::LlmTokenizer;
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Cases {
        bos: i64,
        cases: Vec<Case>,
    }
    #[derive(Deserialize)]
    struct Case {
        text: String,
        ids: Vec<i64>,
    }
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(dir().join("tokenizer_cases.json"))?)?;
    let mut config = LlmConfig::from_hf_json(dir().join("tiny_llama/config.json"))?;
    config.bos_token_id = Some(cases.bos);
    let tok = LlmTokenizer::from_hf_dir(dir().join("tokenizer"), &config)?;
    assert!(tok.add_bos);
    assert!(cases.cases.len() >= 30);
    for case in &cases.cases {
        assert_eq!(tok.encode(&case.text)?, case.ids, "{:?}", case.text);
        assert_eq!(tok.decode(&case.ids[1..], false)?, case.text, "round trip of {:?}", case.text);
    }
    Ok(())
}

#[test]
fn bf16_base_weights_keep_f32_atoms() -> anyhow::Result<()> {
    let config = LlmConfig::from_hf_json(dir().join("tiny_llama/config.json"))?;
    let source = WeightSource::open(dir().join("tiny_llama"))?;
    let mut model = CausalLm::from_hf(&source, &config, Kind::BFloat16, Device::Cpu)?;
    let e: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir().join("tiny_llama_expected.safetensors"))?.into_iter().collect();
    let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
    // bf16 keeps 8 mantissa bits: through two blocks the logits stay within a few hundredths.
    let diff = (&logits - &e["logits"]).abs().max().double_value(&[]);
    let scale = e["logits"].abs().max().double_value(&[]);
    assert!(diff / scale < 0.05, "bf16 logits off by {diff} (scale {scale})");
    model.inject(
        &moram_models::TargetSpec::all_encoders(&["q", "v"]),
        &moram_core::MoramConfig { r: 4, top_k: 4, ..Default::default() },
    )?;
    model.begin_task(0)?;
    assert!(model.trainable_tensors().iter().all(|t| t.kind() == Kind::Float && t.requires_grad()));
    Ok(())
}

#[test]
fn llama2_style_multi_head_attention_with_tied_head_matches_transformers() -> anyhow::Result<()> {
    let config = LlmConfig::from_hf_json(dir().join("tiny_llama_mha/config.json"))?;
    assert!(config.num_key_value_heads == config.num_attention_heads && config.tie_word_embeddings);
    let model =
        CausalLm::from_hf(&WeightSource::open(dir().join("tiny_llama_mha"))?, &config, Kind::Float, Device::Cpu)?;
    let e: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir().join("tiny_llama_mha_expected.safetensors"))?.into_iter().collect();
    let logits = tch::no_grad(|| model.forward(&e["ids"], &mut KvCache::default()))?;
    let diff = (&logits - &e["logits"]).abs().max().double_value(&[]);
    assert!(diff <= 1e-4, "logits differ by {diff}");
    Ok(())
}

/// The frozen blocks' work done once: generation from a remembered prefix is the same computation
/// (identical ids), the loss from per-example prefixes equals the full loss up to rounding, and a
/// prefix computed before atoms entered its blocks is not reused.
#[test]
fn frozen_prefix_reuse_equals_the_full_computation() -> anyhow::Result<()> {
    use moram_models::llm::{GenerationConfig, PrefixMemo};
    use moram_models::TargetSpec;
    let (mut model, e) = load()?;
    let config = moram_core::MoramConfig { r: 4, top_k: 4, ..Default::default() };
    let last = model.config().num_hidden_layers as usize - 1;
    model.inject(&TargetSpec { layers: Some(vec![last]), ..TargetSpec::all_encoders(&["q", "v", "down"]) }, &config)?;
    model.begin_task(0)?;
    tch::manual_seed(3);
    tch::no_grad(|| {
        for t in model.trainable_tensors() {
            t.shallow_clone().copy_(&(t.randn_like() * 0.3));
        }
    });
    assert_eq!(model.frozen_prefix_blocks(), last);

    // Training loss: per-example prefixes (no padding), left-padded with zeros afterwards.
    let (ids, labels, mask) = (&e["train_ids"], &e["labels"], &e["train_mask"]);
    let full = model.causal_lm_loss(ids, labels, Some(mask))?;
    let mut rows = Vec::new();
    let width = ids.size()[1];
    for b in 0..ids.size()[0] {
        let real = mask.get(b).sum(Kind::Int64).int64_value(&[]);
        let seq = ids.get(b).narrow(0, width - real, real).unsqueeze(0);
        let positions = Tensor::arange(real, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let h = model.frozen_prefix(&seq, &positions, None, false)?.hidden.squeeze_dim(0);
        let pad = Tensor::zeros([width - real, h.size()[1]], (h.kind(), Device::Cpu));
        rows.push(Tensor::cat(&[pad, h], 0));
    }
    let from_prefix = model.causal_lm_loss_from(&Tensor::stack(&rows, 0), last, labels, Some(mask))?;
    let (a, b) = (full.double_value(&[]), from_prefix.double_value(&[]));
    assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "loss {a} vs {b} from the prefix");
    from_prefix.backward();
    assert!(model.trainable_tensors().iter().all(|t| t.grad().defined()), "gradients reach the atoms");

    // Generation: prompts of different lengths (left padding), greedy, twice from the memo.
    let prompts: Vec<Vec<i64>> =
        (0..2).map(|r| Vec::<i64>::try_from(e["ids"].get(r).narrow(0, 0, 5 + 3 * r)).unwrap_or_default()).collect();
    let gen = GenerationConfig { max_new_tokens: 6, ..Default::default() };
    model.set_training(false);
    let plain = model.generate(&prompts, &gen)?;
    let mut memo = PrefixMemo::default();
    assert_eq!(model.generate_with_prefixes(&prompts, &gen, Some(&mut memo))?, plain);
    assert_eq!(memo.len(), 1);
    let kept = memo.bytes();
    assert!(kept > 0);
    assert_eq!(model.generate_with_prefixes(&prompts, &gen, Some(&mut memo))?, plain, "from the remembered prefix");
    assert_eq!(memo.bytes(), kept, "nothing computed twice");
    // Atoms in block 0 make the remembered prefix stale: it is recomputed, not reused.
    model.inject(&TargetSpec { layers: Some(vec![0]), ..TargetSpec::all_encoders(&["k"]) }, &config)?;
    model.begin_task(1)?;
    tch::no_grad(|| {
        for t in model.trainable_tensors() {
            t.shallow_clone().copy_(&(t.randn_like() * 0.3));
        }
    });
    model.set_training(false);
    assert_eq!(model.frozen_prefix_blocks(), 0);
    let changed = model.generate(&prompts, &gen)?;
    assert_eq!(model.generate_with_prefixes(&prompts, &gen, Some(&mut memo))?, changed);
    let err = model.causal_lm_loss_from(&Tensor::stack(&rows, 0), last, labels, Some(mask)).unwrap_err();
    assert!(err.to_string().contains("stale"), "{err}");
    // A budget of 0 bytes keeps nothing and still generates the same.
    let mut none = PrefixMemo::with_budget(0);
    assert_eq!(model.generate_with_prefixes(&prompts, &gen, Some(&mut none))?, changed);
    assert!(none.is_empty());
    Ok(())
}
