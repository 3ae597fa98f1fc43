//! The GGUF reader on the real SmolLM2-135M-Instruct (Q4_1) and Gemma 3 270M (Q4_K_M) files
//! (fetched by `cargo xtask setup`) and on small files of every supported storage type, against the
//! `gguf` Python package's dequantisation (`tests/fixtures/llm/generate_gguf.py`), and on damaged
//! files.

mod common;

use moram_models::llm::{GgmlType, GgufFile};
use moram_models::Error;
use serde::Deserialize;
use std::path::PathBuf;
use tch::Kind;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(rename = "type")]
    ty: String,
    shape: Vec<i64>,
    sum: f64,
    sum_sq: f64,
    samples: Vec<(i64, f64)>,
}

fn model_path() -> Option<PathBuf> {
    common::asset("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn smollm2_metadata_and_dequantisation_match_the_gguf_package() -> anyhow::Result<()> {
    let Some(path) = model_path() else { return Ok(()) };
    let file = GgufFile::open(&path)?;
    assert_eq!(file.version, 3);
    assert_eq!(file.tensors.len(), 272);
    assert_eq!(file.get("general.architecture").and_then(|v| v.as_str()), Some("llama"));
    assert_eq!(file.require_u64("llama.block_count")?, 30);
    assert_eq!(file.require_u64("llama.attention.head_count_kv")?, 3);
    let tokens = file.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len());
    assert_eq!(tokens, Some(49152));
    let types: Vec<GgmlType> = file.tensors.values().map(|t| t.ggml_type).collect();
    assert_eq!(types.iter().filter(|t| **t == GgmlType::Q4_1).count(), 210);
    assert_eq!(types.iter().filter(|t| **t == GgmlType::F32).count(), 61);
    assert_eq!(types.iter().filter(|t| **t == GgmlType::Q8_0).count(), 1);

    check_cases(&file, "gguf_cases.json")
}

/// Gemma 3 270M in llama.cpp's Q4_K_M (fetched by `cargo xtask setup`): the directory's storage
/// types, and one real tensor of each type (Q4_K, Q6_K, Q5_0, Q8_0, F32) against the `gguf`
/// package.
#[test]
fn gemma3_k_quant_file_matches_the_gguf_package() -> anyhow::Result<()> {
    let Some(path) = common::asset("gemma3", "gemma-3-270m-q4_k_m.gguf") else { return Ok(()) };
    let file = GgufFile::open(&path)?;
    assert_eq!(file.get("general.architecture").and_then(|v| v.as_str()), Some("gemma3"));
    assert_eq!(file.require_u64("gemma3.block_count")?, 18);
    let count = |name: &str| file.tensors.values().filter(|t| t.ggml_type.name() == name).count();
    let counts: Vec<usize> = ["F32", "Q8_0", "Q5_0", "Q4_K", "Q6_K"].iter().map(|n| count(n)).collect();
    assert_eq!(counts, [109, 10, 81, 27, 9]);
    assert_eq!(file.tensors.len(), 236);
    check_cases(&file, "gemma3_gguf_cases.json")
}

/// Every case of `tests/fixtures/llm/<json>` (shape, type, sampled values, sum and sum of squares
/// of the whole tensor) against `file`.
fn check_cases(file: &GgufFile, json: &str) -> anyhow::Result<()> {
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm").join(json),
    )?)?;
    for case in &cases.cases {
        let t = file.tensor(&case.name)?;
        assert_eq!(t.size(), case.shape, "{}", case.name);
        assert_eq!(file.tensors[&case.name].ggml_type.name(), case.ty);
        let flat = t.reshape([-1]);
        for &(i, want) in &case.samples {
            let got = flat.double_value(&[i]);
            assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{}[{i}]: {got} vs {want}", case.name);
        }
        let d = flat.to_kind(Kind::Double);
        let (sum, sum_sq) = (d.sum(Kind::Double).double_value(&[]), d.square().sum(Kind::Double).double_value(&[]));
        assert!(
            (sum - case.sum).abs() <= 1e-6 * case.sum_sq.sqrt().max(1.0),
            "{}: sum {sum} vs {}",
            case.name,
            case.sum
        );
        assert!(
            (sum_sq - case.sum_sq).abs() <= 1e-9 * case.sum_sq.max(1.0),
            "{}: sum_sq {sum_sq} vs {}",
            case.name,
            case.sum_sq
        );
    }
    Ok(())
}

#[derive(Deserialize)]
struct StorageCase {
    #[serde(rename = "type")]
    ty: String,
    shape: Vec<i64>,
    values: Vec<f32>,
}

/// Every tensor of `<stem>.gguf` against `<stem>.json` (as the `gguf` package dequantises it),
/// value for value; returns the sorted type names.
fn check_storage_file(stem: &str) -> anyhow::Result<Vec<String>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm");
    let cases: std::collections::BTreeMap<String, StorageCase> =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{stem}.json")))?)?;
    let file = GgufFile::open(dir.join(format!("{stem}.gguf")))?;
    let mut types: Vec<String> = cases.values().map(|c| c.ty.clone()).collect();
    types.sort_unstable();
    for (name, case) in &cases {
        assert_eq!(file.tensors[name].ggml_type.name(), case.ty);
        let t = file.tensor(name)?;
        assert_eq!(t.size(), case.shape, "{name}");
        assert_eq!(t.kind(), Kind::Float, "{name}");
        let got = Vec::<f32>::try_from(t.reshape([-1]))?;
        assert_eq!(got.len(), case.values.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&case.values).enumerate() {
            assert!(g.to_bits() == w.to_bits() || (g - w).abs() <= 1e-6 * w.abs().max(1.0), "{name}[{i}]: {g} vs {w}");
        }
    }
    Ok(types)
}

/// Every storage type moram dequantises with libtorch ops, in a small GGUF the `gguf` package wrote
/// from our own random numbers (F16 subnormals, signed zeros and large values included).
#[test]
fn every_supported_storage_type_matches_the_gguf_package() -> anyhow::Result<()> {
    assert_eq!(check_storage_file("storage_types")?, ["BF16", "F16", "F32", "Q4_0", "Q4_1", "Q8_0"]);
    Ok(())
}

/// The 5-bit and K-quant types (`llm/quants.rs`): Q5_0/Q5_1 quantised by the `gguf` package from
/// random numbers, the K-quants as random blocks with finite scales (every bit pattern of the
/// packed weights and scales occurs), two super-blocks per row.
#[test]
fn k_quants_and_5_bit_types_match_the_gguf_package() -> anyhow::Result<()> {
    assert_eq!(check_storage_file("kquant_types")?, ["Q2_K", "Q3_K", "Q4_K", "Q5_0", "Q5_1", "Q5_K", "Q6_K", "Q8_K"]);
    Ok(())
}

#[test]
fn damaged_gguf_files_are_named_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let err = GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path.ends_with("absent.gguf")), "{err:?}");
    std::fs::write(dir.path().join("junk.gguf"), b"NOPE\x03\x00\x00\x00")?;
    let err = GgufFile::open(dir.path().join("junk.gguf")).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { path, reason } if path.ends_with("junk.gguf") && reason.contains("magic")),
        "{err:?}"
    );

    // A minimal valid file: one Q4_0 tensor of 32 values, then damaged variants of it.
    let mut f = Vec::new();
    f.extend_from_slice(b"GGUF");
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes()); // tensors
    f.extend_from_slice(&1u64.to_le_bytes()); // metadata
    let key = b"general.architecture";
    f.extend_from_slice(&(key.len() as u64).to_le_bytes());
    f.extend_from_slice(key);
    f.extend_from_slice(&8u32.to_le_bytes());
    f.extend_from_slice(&5u64.to_le_bytes());
    f.extend_from_slice(b"llama");
    let name = b"w";
    f.extend_from_slice(&(name.len() as u64).to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&32u64.to_le_bytes());
    let type_pos = f.len();
    f.extend_from_slice(&2u32.to_le_bytes()); // Q4_0
    f.extend_from_slice(&0u64.to_le_bytes());
    while f.len() % 32 != 0 {
        f.push(0);
    }
    // Block: scale 0.5 (f16 0x3800), nibbles: low = j % 16, high = 15 - j % 16.
    f.extend_from_slice(&0x3800u16.to_le_bytes());
    for j in 0..16u8 {
        f.push(j | ((15 - j) << 4));
    }
    let ok = dir.path().join("ok.gguf");
    std::fs::write(&ok, &f)?;
    let w = GgufFile::open(&ok)?.tensor("w")?;
    let expected: Vec<f32> =
        (0..32).map(|i| if i < 16 { (i as f32 - 8.0) * 0.5 } else { (15.0 - (i - 16) as f32 - 8.0) * 0.5 }).collect();
    assert_eq!(Vec::<f32>::try_from(w)?, expected, "Q4_0 by hand");

    std::fs::write(dir.path().join("short.gguf"), &f[..f.len() - 4])?;
    let err = GgufFile::open(dir.path().join("short.gguf")).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { path, .. } if path.ends_with("short.gguf")), "{err:?}");
    let err = err.to_string();
    assert!(err.contains("truncated GGUF") && err.contains("`w`"), "{err}");
    std::fs::write(dir.path().join("header.gguf"), &f[..30])?;
    assert!(GgufFile::open(dir.path().join("header.gguf")).unwrap_err().to_string().contains("truncated GGUF"));

    let mut k = f.clone();
    k[type_pos..type_pos + 4].copy_from_slice(&16u32.to_le_bytes()); // IQ2_XXS
    std::fs::write(dir.path().join("iq2.gguf"), &k)?;
    let err = GgufFile::open(dir.path().join("iq2.gguf"))?.tensor("w").unwrap_err().to_string();
    assert!(
        err.contains("uses IQ2_XXS") && err.contains("supported: F32, F16, BF16, Q8_0") && err.contains("Q6_K"),
        "{err}"
    );
    // 32 values cannot be Q4_K's 256-weight super-blocks.
    k[type_pos..type_pos + 4].copy_from_slice(&12u32.to_le_bytes());
    std::fs::write(dir.path().join("q4k.gguf"), &k)?;
    let err = GgufFile::open(dir.path().join("q4k.gguf")).and_then(|g| g.tensor("w")).unwrap_err();
    assert!(matches!(&err, Error::Corrupt { path, .. } if path.ends_with("q4k.gguf")), "{err:?}");
    assert!(err.to_string().contains("`w`"), "{err}");
    Ok(())
}

#[derive(Deserialize)]
struct TokCases {
    cases: Vec<TokCase>,
}

#[derive(Deserialize)]
struct TokCase {
    text: String,
    ids: Vec<i64>,
    /// What decoding gives when it is not `text` itself (normalised tokenizers).
    #[serde(default)]
    decoded: Option<String>,
}

/// Every case of `file` (tests/fixtures/llm) encodes to transformers' ids and decodes back.
fn assert_tokenizer_matches(tok: &moram_models::llm::LlmTokenizer, file: &str) -> anyhow::Result<()> {
    let cases: TokCases = serde_json::from_str(&std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm").join(file),
    )?)?;
    assert!(cases.cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases.cases {
        let ids = tok.encode(&case.text)?;
        if ids != case.ids {
            failures.push(format!("{:?}\n  rust:   {ids:?}\n  python: {:?}", case.text, case.ids));
        }
        let back = tok.decode(&ids, false)?;
        assert_eq!(&back, case.decoded.as_ref().unwrap_or(&case.text), "decode(encode(x))");
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.cases.len(), failures.join("\n"));
    Ok(())
}

#[test]
fn smollm2_tokenizer_from_gguf_matches_transformers() -> anyhow::Result<()> {
    let Some(path) = model_path() else { return Ok(()) };
    let tok = moram_models::llm::LlmTokenizer::from_gguf(&GgufFile::open(&path)?)?;
    assert_eq!((tok.bos, tok.eos.clone(), tok.add_bos), (Some(1), vec![2], false));
    assert_tokenizer_matches(&tok, "gguf_tokenizer_cases.json")
}

#[test]
fn smollm2_answers_factual_questions_greedily() -> anyhow::Result<()> {
    use moram_models::llm::{CausalLm, LlmTokenizer};
    let Some(path) = model_path() else { return Ok(()) };
    let file = GgufFile::open(&path)?;
    let tok = LlmTokenizer::from_gguf(&file)?;
    let model = CausalLm::from_gguf(&file, Kind::Float, tch::Device::Cpu)?;
    assert_eq!(model.config().num_key_value_heads, 3);
    assert!(model.config().tie_word_embeddings);
    for (question, answer) in [("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo")]
    {
        let prompt = format!("<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n");
        let ids = model.generate_greedy(&tok.encode(&prompt)?, 24, &tok.eos)?;
        let text = tok.decode(&ids, true)?;
        println!("{question} -> {text:?}");
        assert!(text.contains(answer), "{question}: {text:?}");
    }
    Ok(())
}

#[test]
fn smollm2_cache_perplexity_and_injection() -> anyhow::Result<()> {
    use moram_models::llm::{CausalLm, KvCache, LlmTokenizer};
    use moram_models::TargetSpec;
    use tch::Tensor;
    let Some(path) = model_path() else { return Ok(()) };
    let file = GgufFile::open(&path)?;
    let tok = LlmTokenizer::from_gguf(&file)?;
    let mut model = CausalLm::from_gguf(&file, Kind::Float, tch::Device::Cpu)?;
    let text = "The sun rises in the east and sets in the west. Every morning, people wake up, eat breakfast \
                and go to work or school. In the evening, families often have dinner together and talk about their day.";
    let ids = Tensor::from_slice(&tok.encode(text)?).view([1, -1]);
    let n = ids.size()[1];

    // The KV cache gives the logits of one full pass: split 7 + rest (masked chunk) and token by token.
    let full = tch::no_grad(|| model.forward(&ids, &mut KvCache::default()))?;
    let mut cache = KvCache::default();
    let a = tch::no_grad(|| model.forward(&ids.narrow(1, 0, 7), &mut cache))?;
    let b = tch::no_grad(|| model.forward(&ids.narrow(1, 7, n - 7), &mut cache))?;
    let chunked = Tensor::cat(&[a, b], 1);
    let diff = (&full - &chunked).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "chunked decoding differs by {diff}");
    assert_eq!(cache.len(), n);

    // Perplexity of plain English. A uniform guess over 49,152 tokens scores 49,152 and a unigram
    // model several hundred; a working 135M instruction model is far below 60 on simple prose.
    let logp = full.narrow(1, 0, n - 1).log_softmax(-1, Kind::Float);
    let target = ids.narrow(1, 1, n - 1).unsqueeze(-1);
    let nll = -logp.gather(-1, &target, false).mean(Kind::Float).double_value(&[]);
    let ppl = nll.exp();
    println!("SmolLM2-135M-Instruct (Q4_1) perplexity on the paragraph: {ppl:.2} over {} tokens", n - 1);
    assert!(ppl > 1.0 && ppl < 60.0, "perplexity {ppl}");

    // Zero-value atoms leave the logits exactly unchanged; gradients reach only the atoms.
    let short = ids.narrow(1, 0, 12);
    let before = tch::no_grad(|| model.forward(&short, &mut KvCache::default()))?;
    let spec = TargetSpec {
        encoders: vec!["decoder".into()],
        modules: vec!["q".into(), "v".into(), "down".into()],
        layers: Some(vec![0, 15]),
    };
    let adapted = model.inject(&spec, &moram_core::MoramConfig { r: 8, top_k: 8, ..Default::default() })?;
    assert_eq!(adapted.len(), 6);
    model.begin_task(0)?;
    let after = tch::no_grad(|| model.forward(&short, &mut KvCache::default()))?;
    assert!(after.equal(&before), "zero-value atoms changed the logits");
    let logits = model.forward(&short, &mut KvCache::default())?;
    logits.log_softmax(-1, Kind::Float).select(1, 11).mean(Kind::Float).backward();
    let trainable = model.trainable_tensors();
    assert_eq!(trainable.len(), 12, "keys and values of 6 layers");
    assert!(trainable.iter().all(|t| t.grad().defined()));
    let base = model.base_tensors();
    assert_eq!(base.len(), 2 + 30 * 9, "embedding, final norm, 9 tensors per block (head tied)");
    for (name, t) in &base {
        assert!(!t.requires_grad() && !t.grad().defined(), "{name} received a gradient");
    }
    Ok(())
}

/// A GGUF header with `meta` (key, value type, value bytes) and tensors `(name, dims, type id,
/// offset)`, followed by `data` at 32-byte alignment.
fn gguf_bytes(meta: &[(&str, u32, Vec<u8>)], tensors: &[(&str, &[u64], u32, u64)], data: &[u8]) -> Vec<u8> {
    let mut f = b"GGUF".to_vec();
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    f.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (key, ty, value) in meta {
        f.extend_from_slice(&(key.len() as u64).to_le_bytes());
        f.extend_from_slice(key.as_bytes());
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(value);
    }
    for (name, dims, ty, offset) in tensors {
        f.extend_from_slice(&(name.len() as u64).to_le_bytes());
        f.extend_from_slice(name.as_bytes());
        f.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| f.extend_from_slice(&d.to_le_bytes()));
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&offset.to_le_bytes());
    }
    while !f.len().is_multiple_of(32) {
        f.push(0);
    }
    f.extend_from_slice(data);
    f
}

/// An array header: element type and length.
fn array(elem: u32, len: u64) -> Vec<u8> {
    [elem.to_le_bytes().as_slice(), len.to_le_bytes().as_slice()].concat()
}

/// Hostile headers fail fast, before any large allocation, with a message that names the entry
/// and the byte offset.
#[test]
fn hostile_gguf_headers_are_refused_by_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let open = |name: &str, bytes: Vec<u8>| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        match GgufFile::open(&path) {
            Err(Error::Corrupt { path: p, reason }) => {
                assert!(p.ends_with(name));
                reason
            }
            other => panic!("{name}: expected a corrupt-file error, got {other:?}"),
        }
    };
    // A length the file cannot hold (2^62 u32 elements), refused before allocating.
    let e = open("long.gguf", gguf_bytes(&[("tokenizer.scores", 9, array(4, 1 << 62))], &[], &[]));
    assert!(e.contains("metadata `tokenizer.scores` (entry 0)") && e.contains("cannot fit"), "{e}");
    // Arrays of arrays of arrays: a depth limit, not a stack overflow.
    let nested = [array(9, 1), array(9, 1), array(9, 1), array(4, 0)].concat();
    let e = open("nested.gguf", gguf_bytes(&[("deep", 9, nested)], &[], &[]));
    assert!(e.contains("metadata `deep`") && e.contains("nested more than 2 deep"), "{e}");
    // An empty key still gets a name in messages (its entry number).
    // (the file ends 2 bytes into its u32 value: magic, version, counts, key length, type = 36 bytes)
    let truncated = gguf_bytes(&[("", 4, vec![1, 2])], &[], &[])[..38].to_vec();
    let e = open("emptykey.gguf", truncated);
    assert!(e.contains("metadata `` (entry 0)") && e.contains("at byte"), "{e}");
    // Element counts whose product overflows, and byte counts past the file.
    let e = open("dims.gguf", gguf_bytes(&[], &[("w", &[1 << 32, 1 << 32], 0, 0)], &[]));
    assert!(e.contains("tensor `w` (entry 0)") && e.contains("overflow"), "{e}");
    let e = open("offset.gguf", gguf_bytes(&[], &[("w", &[4], 0, u64::MAX - 8)], &[0; 16]));
    assert!(e.contains("tensor `w` ends at byte past 2^64"), "{e}");
    // An alignment that is not a power of two.
    let e = open("align.gguf", gguf_bytes(&[("general.alignment", 4, 3u32.to_le_bytes().to_vec())], &[], &[]));
    assert!(e.contains("general.alignment") && e.contains("power of two"), "{e}");
    // Repeated keys and tensor names (ggml's reader refuses both): a later entry must not shadow
    // the one that was checked.
    let one = 1u32.to_le_bytes().to_vec();
    let e = open("dupkey.gguf", gguf_bytes(&[("a", 4, one.clone()), ("a", 4, one)], &[], &[]));
    assert!(e.contains("metadata `a` (entry 1)") && e.contains("appears twice"), "{e}");
    let e = open("duptensor.gguf", gguf_bytes(&[], &[("w", &[4], 0, 0), ("w", &[4], 0, 16)], &[0; 32]));
    assert!(e.contains("tensor `w` (entry 1)") && e.contains("appears earlier"), "{e}");
    // An array element type that does not exist.
    let e = open("elemtype.gguf", gguf_bytes(&[("odd", 9, array(77, 1))], &[], &[]));
    assert!(e.contains("metadata `odd`") && e.contains("unknown value type 77"), "{e}");
    Ok(())
}

/// Metadata arrays keep their element width: a file's array of a million u8 values is a million
/// bytes in memory (it was a million 32-byte enum values), and typed accessors read them back.
#[test]
fn metadata_arrays_are_stored_at_their_element_width() -> anyhow::Result<()> {
    use moram_models::llm::gguf::Array;
    let n = 1_000_000u64;
    let bytes_u8 = [array(0, n), (0..n).map(|i| (i % 251) as u8).collect()].concat();
    let scores = [array(6, 3), [0.5f32, -1.0, 2.25].iter().flat_map(|v| v.to_le_bytes()).collect()].concat();
    let types = [array(5, 2), [1i32, -3].iter().flat_map(|v| v.to_le_bytes()).collect()].concat();
    let strings =
        [array(8, 2), [2u64.to_le_bytes().to_vec(), b"ab".to_vec(), 0u64.to_le_bytes().to_vec()].concat()].concat();
    let nested = [array(9, 2), array(4, 1), 7u32.to_le_bytes().to_vec(), array(8, 0)].concat();
    let file = GgufFile::from_bytes(
        "arrays.gguf",
        gguf_bytes(
            &[
                ("u8s", 9, bytes_u8),
                ("scores", 9, scores),
                ("types", 9, types),
                ("strings", 9, strings),
                ("nested", 9, nested),
            ],
            &[],
            &[],
        ),
    )?;
    let get = |k: &str| file.get(k).and_then(|v| v.as_array()).cloned();
    match get("u8s") {
        Some(Array::U8(v)) => assert_eq!((v.len(), v[252]), (1_000_000, 1)),
        other => panic!("u8s: {other:?}"),
    }
    assert_eq!(get("scores").and_then(|a| a.to_f64s()), Some(vec![0.5, -1.0, 2.25]));
    assert_eq!(get("types").and_then(|a| a.to_u64s()), None, "a negative element is not unsigned");
    assert_eq!(get("types").and_then(|a| a.to_f64s()), Some(vec![1.0, -3.0]));
    assert_eq!(get("strings").as_ref().and_then(|a| a.as_strings()), Some(&["ab".to_string(), String::new()][..]));
    assert_eq!(get("nested"), Some(Array::Array(vec![Array::U32(vec![7]), Array::Str(vec![])])));
    Ok(())
}

/// llama.cpp's `qwen2` pre-tokenizer type (Qwen2/2.5/3 GGUF files): a byte-level BPE trained
/// under Qwen2's pipeline (`generate_qwen2_tokenizer.py`) gives transformers' ids for strings that
/// exercise its split regex and NFC normalisation; the control tokens are matched whole.
#[test]
fn a_qwen2_gguf_tokenizer_matches_transformers() -> anyhow::Result<()> {
    let file = GgufFile::open(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/qwen2_tokenizer.gguf"),
    )?;
    let tok = moram_models::llm::LlmTokenizer::from_gguf(&file)?;
    assert_eq!((tok.bos, tok.eos.clone(), tok.add_bos), (None, vec![2], false));
    assert_tokenizer_matches(&tok, "qwen2_tokenizer_cases.json")
}

/// `{arch}.rope.scaling.type` values moram does not implement are refused by name, with the ones it
/// reads; a YaRN extrapolation factor other than 1 (which transformers has no term for) too.
#[test]
fn unsupported_gguf_rope_scalings_are_refused_by_name() -> anyhow::Result<()> {
    use moram_models::llm::LlmConfig;
    let dir = tempfile::tempdir()?;
    let s = |v: &str| [(v.len() as u64).to_le_bytes().as_slice(), v.as_bytes()].concat();
    let f32v = |v: f32| v.to_le_bytes().to_vec();
    let arch = ("general.architecture", 8, s("qwen2"));
    for (name, meta, want) in [
        (
            "longrope",
            vec![arch.clone(), ("qwen2.rope.scaling.type", 8, s("longrope"))],
            "`qwen2.rope.scaling.type` `longrope` is not supported yet (none, linear, yarn; LLaMA 3.x: rope_freqs)",
        ),
        (
            "ext",
            vec![
                arch.clone(),
                ("qwen2.rope.scaling.type", 8, s("yarn")),
                ("qwen2.rope.scaling.factor", 6, f32v(4.0)),
                ("qwen2.rope.scaling.yarn_ext_factor", 6, f32v(0.5)),
            ],
            "`qwen2.rope.scaling.yarn_ext_factor` 0.5 is not supported",
        ),
        ("nofactor", vec![arch.clone(), ("qwen2.rope.scaling.type", 8, s("linear"))], "lacks `factor`"),
    ] {
        let path = dir.path().join(format!("{name}.gguf"));
        std::fs::write(&path, gguf_bytes(&meta, &[], &[]))?;
        let err = LlmConfig::from_gguf(&GgufFile::open(&path)?).unwrap_err();
        assert!(matches!(&err, Error::Corrupt { path: p, .. } if p.ends_with(format!("{name}.gguf"))), "{err:?}");
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
    Ok(())
}
