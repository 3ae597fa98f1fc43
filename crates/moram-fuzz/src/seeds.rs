//! Seed inputs for every target: the repository's own fixtures and configs, small files built
//! here with moram's own writers (adapters, run states, results, IDX, images), and the headers
//! of the real assets when they are fetched. A seed is a valid (or nearly valid) file the fuzzer
//! mutates; the regression tests check that the harness accepts the valid ones, so a harness
//! cannot silently refuse everything.

use moram_cl::analysis::{LayerRouting, RoutingDiagnostics};
use moram_cl::checkpoint::{RunState, TaskRecord};
use moram_cl::config::RunConfig;
use moram_cl::report::Results;
use moram_core::{AtomBank, MoramConfig};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use tch::Device;

/// One seed input.
#[derive(Debug, Clone)]
pub struct Seed {
    /// The target it feeds.
    pub target: &'static str,
    /// A file name for it.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether the harness must accept it (built valid here, or a valid fixture).
    pub valid: bool,
}

fn seed(target: &'static str, name: impl Into<String>, bytes: Vec<u8>, valid: bool) -> Seed {
    Seed { target, name: name.into(), bytes, valid }
}

/// Every seed. `root` is the repository root (fixtures, configs); `assets`, when given, the
/// asset cache of `cargo xtask setup` (the first 64 KiB of the real GGUF files become seeds).
pub fn seeds(root: &Path, assets: Option<&Path>) -> std::io::Result<Vec<Seed>> {
    let mut out = Vec::new();
    let read = |rel: &str| std::fs::read(root.join(rel));

    for f in ["tests/fixtures/llm/storage_types.gguf", "tests/fixtures/llm/kquant_types.gguf"] {
        out.push(seed("gguf", file_name(f), read(f)?, true));
    }
    out.push(seed("gguf", "tokenizer.gguf", tokenizer_gguf(), true));
    if let Some(assets) = assets {
        // The real GGUF files of the asset cache, one folder per asset.
        let mut ggufs: Vec<_> = std::fs::read_dir(assets)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().filter_map(|e| e.ok()))
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        ggufs.sort();
        for p in ggufs {
            let mut head = vec![0u8; 1 << 16];
            let n = std::io::Read::read(&mut std::fs::File::open(&p)?, &mut head)?;
            head.truncate(n);
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            out.push(seed("gguf", format!("head-{name}"), head, false));
        }
    }
    for i in 0..crate::DEQUANT_TYPE_COUNT {
        let (_, per_block, block_bytes) = crate::dequant_type(i);
        let mut bytes = vec![i as u8];
        bytes.extend(pseudo_random(i as u64, 2 * block_bytes));
        out.push(seed("gguf_dequant", format!("type{i}-{per_block}x{block_bytes}"), bytes, true));
    }

    for f in [
        "tests/fixtures/core/golden.safetensors",
        "tests/fixtures/clip/expected.safetensors",
        "tests/fixtures/llm/tiny_llama/model-00003-of-00003.safetensors",
    ] {
        out.push(seed("safetensors", file_name(f), read(f)?, true));
    }

    out.push(seed("adapter", "two-tasks.safetensors", adapter_file().map_err(std::io::Error::other)?, true));

    let (state, results) = run_files(root).map_err(std::io::Error::other)?;
    out.push(seed("run_state", "state.json", state, true));
    out.push(seed("results", "results.json", results, true));

    // Full run configs (valid) and the method / study / sequence files (mutation material only).
    for (dir, valid) in [
        ("configs", true),
        ("configs/clip", true),
        ("configs/trace", true),
        ("configs/moram", false),
        ("configs/study", false),
        ("configs/xtail", false),
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut files: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        files.sort();
        for p in files.into_iter().filter(|p| p.extension().is_some_and(|e| e == "toml")) {
            let name = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('/', "_");
            out.push(seed("run_config", name, std::fs::read(&p)?, valid));
        }
    }

    let examples = serde_json_examples();
    out.push(seed("trace_json", "split.json", examples, true));

    let idx = idx_bytes(&[3, 2, 2]);
    out.push(seed("idx", "plain.idx", idx.clone(), true));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&idx)?;
    out.push(seed("idx", "gzip.idx.gz", gz.finish()?, true));

    for f in ["tests/fixtures/clip/images/grey.png", "tests/fixtures/clip/images/tiny_upscale.png"] {
        out.push(seed("image", file_name(f), read(f)?, true));
    }
    out.push(seed("image", "small.jpg", jpeg_bytes().map_err(std::io::Error::other)?, true));
    Ok(out)
}

fn file_name(rel: &str) -> String {
    rel.rsplit('/').next().unwrap_or(rel).to_string()
}

/// Deterministic bytes (splitmix64), so seeds do not change between runs.
fn pseudo_random(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// A GGUF with LLaMA metadata and a byte-level BPE tokenizer (every byte symbol, a few merges)
/// and one F32 tensor: the metadata paths `gguf` exercises beyond the directory.
pub fn tokenizer_gguf() -> Vec<u8> {
    fn string(f: &mut Vec<u8>, s: &str) {
        f.extend_from_slice(&(s.len() as u64).to_le_bytes());
        f.extend_from_slice(s.as_bytes());
    }
    fn key(f: &mut Vec<u8>, k: &str, ty: u32) {
        string(f, k);
        f.extend_from_slice(&ty.to_le_bytes());
    }
    // GPT-2's byte-to-symbol map: printable bytes stand for themselves, the others are shifted.
    let mut tokens: Vec<String> = Vec::new();
    let mut n = 0u32;
    for b in 0u32..256 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            char::from_u32(b)
        } else {
            n += 1;
            char::from_u32(255 + n)
        };
        tokens.push(c.map(String::from).unwrap_or_default());
    }
    let merges = ["T h", "Th e", "\u{120} c", "\u{120}c a", "i s"];
    for m in merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut f = Vec::new();
    f.extend_from_slice(b"GGUF");
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes());
    let metadata: u64 = 10;
    f.extend_from_slice(&metadata.to_le_bytes());
    key(&mut f, "general.architecture", 8);
    string(&mut f, "llama");
    for (k, v) in [("llama.block_count", 1u32), ("llama.embedding_length", 8), ("llama.attention.head_count", 2)] {
        key(&mut f, k, 4);
        f.extend_from_slice(&v.to_le_bytes());
    }
    key(&mut f, "tokenizer.ggml.model", 8);
    string(&mut f, "gpt2");
    key(&mut f, "tokenizer.ggml.pre", 8);
    string(&mut f, "smollm");
    key(&mut f, "tokenizer.ggml.tokens", 9);
    f.extend_from_slice(&8u32.to_le_bytes());
    f.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for t in &tokens {
        string(&mut f, t);
    }
    key(&mut f, "tokenizer.ggml.merges", 9);
    f.extend_from_slice(&8u32.to_le_bytes());
    f.extend_from_slice(&(merges.len() as u64).to_le_bytes());
    for m in merges {
        string(&mut f, m);
    }
    key(&mut f, "tokenizer.ggml.token_type", 9);
    f.extend_from_slice(&5u32.to_le_bytes());
    f.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for _ in &tokens {
        f.extend_from_slice(&1i32.to_le_bytes());
    }
    key(&mut f, "tokenizer.ggml.eos_token_id", 4);
    f.extend_from_slice(&0u32.to_le_bytes());
    // One F32 tensor `token_embd.weight` of 4 x 2.
    string(&mut f, "token_embd.weight");
    f.extend_from_slice(&2u32.to_le_bytes());
    f.extend_from_slice(&4u64.to_le_bytes());
    f.extend_from_slice(&2u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes());
    f.resize(f.len().div_ceil(32) * 32, 0);
    for i in 0..8 {
        f.extend_from_slice(&(i as f32 * 0.25).to_le_bytes());
    }
    f
}

/// An adapter file of two layers, two tasks, written by `moram_core::save_adapter`.
fn adapter_file() -> Result<Vec<u8>, moram_core::Error> {
    let config = MoramConfig { r: 2, top_k: 2, ..MoramConfig::default() };
    let mut banks = Vec::new();
    for (d_in, d_out) in [(4, 3), (3, 5)] {
        let mut bank = AtomBank::new(d_in, d_out, &config, Device::Cpu)?;
        for task in 0..2 {
            bank.begin_task(task)?;
            bank.end_task()?;
        }
        banks.push(bank);
    }
    let dir = std::env::temp_dir().join(format!("moram-fuzz-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| moram_core::Error::Io { path: dir.clone(), source })?;
    let path = dir.join("adapter.safetensors");
    let mut extra = BTreeMap::new();
    extra.insert("base_model".to_string(), "fuzz-seed".to_string());
    moram_core::save_adapter(&path, [("blocks.0.q_proj", &banks[0]), ("blocks.0.o_proj", &banks[1])], &extra)?;
    let bytes = std::fs::read(&path).map_err(|source| moram_core::Error::Io { path: path.clone(), source });
    let _ = std::fs::remove_dir_all(&dir);
    bytes
}

/// `state.json` and `results.json` of a finished two-task run with routing diagnostics.
fn run_files(root: &Path) -> Result<(Vec<u8>, Vec<u8>), String> {
    let config = RunConfig::from_file(root.join("configs/demo.toml")).map_err(|e| e.to_string())?;
    let names = vec!["topic".to_string(), "desk".to_string()];
    let mut state = RunState::new(&config, names.clone());
    state.matrix = vec![vec![80.0, 10.0], vec![75.5, 90.25]];
    for (i, name) in names.iter().enumerate() {
        let tasks = i + 1;
        let layer = LayerRouting {
            layer: "model.layers.0.self_attn.q_proj".into(),
            weight_share: vec![vec![1.0 / tasks as f64; tasks]; tasks],
            own_top1: vec![0.9; tasks],
            key_norm: vec![Some(1.5); tasks],
            open_share: vec![1.0; tasks],
        };
        state.tasks.push(TaskRecord {
            name: name.clone(),
            steps: 32,
            final_loss: 0.5,
            first_loss: Some(2.5),
            trainable_parameters: 100,
            adapter_parameters: 100 * tasks,
            total_parameters: 1000,
            atoms: 4 * tasks,
            seconds: 1.5,
            peak_rss_mib: Some(512.0),
            prune: None,
            subspace_dims: None,
            subspace_share: None,
            recognition: None,
            workers: 2,
            communication_seconds: 0.25,
            routing: Some(RoutingDiagnostics {
                tasks,
                examples: vec![8; tasks],
                leakage: vec![0.1; tasks],
                weight_share: layer.weight_share.clone(),
                own_top1: layer.own_top1.clone(),
                key_norm: layer.key_norm.clone(),
                open_share: layer.open_share.clone(),
                layers: vec![layer],
            }),
        });
        state.adapters.push(moram_cl::checkpoint::adapter_name(i));
    }
    let results = Results::of_run(&state, &config).map_err(|e| e.to_string())?;
    let json = |r: serde_json::Result<String>| r.map(String::into_bytes).map_err(|e| e.to_string());
    Ok((json(serde_json::to_string_pretty(&state))?, json(serde_json::to_string_pretty(&results))?))
}

fn serde_json_examples() -> Vec<u8> {
    let examples = [
        moram_cl::data::trace::Example { prompt: "Question: 2 + 2 = ?\nAnswer:".into(), answer: "4".into() },
        moram_cl::data::trace::Example { prompt: "Übersetze: «bonjour» 日本".into(), answer: "hallo\n".into() },
    ];
    serde_json::to_string_pretty(&examples).unwrap_or_default().into_bytes()
}

/// An IDX file of unsigned bytes with `dims`.
fn idx_bytes(dims: &[u32]) -> Vec<u8> {
    let mut f = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        f.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    f.extend((0..n).map(|i| (i * 37 % 256) as u8));
    f
}

/// A 7 x 3 JPEG (non-square, odd sizes).
fn jpeg_bytes() -> Result<Vec<u8>, image::ImageError> {
    let img = image::RgbImage::from_fn(7, 3, |x, y| image::Rgb([(x * 30) as u8, (y * 80) as u8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)?;
    Ok(out.into_inner())
}
