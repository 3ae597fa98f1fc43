//! The real Gemma 3 270M (Q4_K_M GGUF, fetched by `cargo xtask setup`, never committed) built
//! from the GGUF file against `transformers` loading the same file
//! (`tests/fixtures/llm/generate_gemma3_gguf.py`): the SentencePiece tokenizer's ids, the
//! last-position logits and greedy tokens of a prompt, a coherent completion, a perplexity bound,
//! and zero atoms changing nothing.

mod common;

use moram_core::MoramConfig;
use moram_models::llm::{Arch, CausalLm, GgufFile, KvCache, LlmTokenizer};
use moram_models::TargetSpec;
use serde::Deserialize;
use std::path::PathBuf;
use tch::{Device, Kind, Tensor};

#[derive(Deserialize)]
struct Reference {
    cases: Vec<TokCase>,
    prompt: Vec<i64>,
    top_ids: Vec<i64>,
    top_logits: Vec<f64>,
    greedy: Vec<i64>,
}

#[derive(Deserialize)]
struct TokCase {
    text: String,
    ids: Vec<i64>,
}

fn reference() -> anyhow::Result<Reference> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/gemma3_gguf_reference.json");
    Ok(serde_json::from_str(&std::fs::read_to_string(p)?)?)
}

#[test]
fn gemma3_270m_from_gguf_matches_transformers() -> anyhow::Result<()> {
    let Some(path) = common::asset("gemma3", "gemma-3-270m-q4_k_m.gguf") else { return Ok(()) };
    let r = reference()?;
    let file = GgufFile::open(&path)?;
    let tok = LlmTokenizer::from_gguf(&file)?;
    for case in &r.cases {
        assert_eq!(tok.encode(&case.text)?, case.ids, "token ids of {:?}", case.text);
    }
    let mut model = CausalLm::from_gguf(&file, Kind::Float, Device::Cpu)?;
    let c = model.config();
    assert_eq!((c.arch, c.num_hidden_layers, c.hidden_size, c.head_dim), (Arch::Gemma3, 18, 640, 256));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.sliding_window), (4, 1, Some(512)));
    let global: Vec<usize> =
        c.sliding_layers.iter().flatten().enumerate().filter(|(_, &s)| !s).map(|(i, _)| i).collect();
    assert_eq!(global, [5, 11, 17], "every sixth layer is global, as llama.cpp builds it");

    let ids = Tensor::from_slice(&r.prompt).view([1, -1]);
    let logits = tch::no_grad(|| model.forward_last(&ids, &mut KvCache::default()))?.get(0);
    let (values, indices) = logits.topk(10, -1, true, true);
    assert_eq!(Vec::<i64>::try_from(&indices)?, r.top_ids, "the ten most likely next tokens, in order");
    for (i, want) in r.top_logits.iter().enumerate() {
        let got = values.double_value(&[i as i64]);
        assert!((got - want).abs() <= 2e-3 * want.abs().max(1.0), "logit {i}: {got} vs {want}");
    }
    let greedy = model.generate_greedy(&r.prompt, 12, &[])?;
    assert_eq!(greedy, r.greedy, "greedy tokens");
    let text = tok.decode(&greedy, true)?;
    assert!(text.contains("Paris") || text.contains("France"), "a coherent completion: {text:?}");

    // Perplexity of plain English prose. A uniform guess over 262,144 tokens scores 262,144 and a
    // unigram model several hundred; this base model measures 6.66 (the same on every run: the
    // computation is deterministic), so the bound of 15 leaves room for other CPUs' rounding while
    // failing any model that reads its input wrongly.
    let prose = "The sun rises in the east and sets in the west. Every morning, people wake up, eat breakfast \
                 and go to work or school. In the evening, families often have dinner together and talk about their day.";
    let ids = Tensor::from_slice(&tok.encode(prose)?).view([1, -1]);
    let n = ids.size()[1];
    let full = tch::no_grad(|| model.forward(&ids, &mut KvCache::default()))?;
    let logp = full.narrow(1, 0, n - 1).log_softmax(-1, Kind::Float);
    let nll = -logp.gather(-1, &ids.narrow(1, 1, n - 1).unsqueeze(-1), false).mean(Kind::Float).double_value(&[]);
    let ppl = nll.exp();
    assert!(ppl < 15.0, "perplexity {ppl:.2} on plain prose");

    // Fresh atoms (values 0) on every linear layer change nothing, bit for bit.
    let config = MoramConfig { r: 4, top_k: 2, ..MoramConfig::default() };
    model.inject(&TargetSpec::all_encoders(&["q", "k", "v", "o", "gate", "up", "down"]), &config)?;
    model.begin_task(0)?;
    model.set_training(false);
    let again = tch::no_grad(|| model.forward(&ids, &mut KvCache::default()))?;
    assert!(full.equal(&again), "zero atoms must not change the logits");
    Ok(())
}
