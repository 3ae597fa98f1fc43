//! # moram-fuzz
//!
//! One harness per parser that reads untrusted bytes (docs/reliability.md): GGUF files and their
//! dequantisation, safetensors checkpoints, adapter files, a run folder's `state.json` and
//! `results.json`, `RunConfig` TOML, TRACE task files, IDX files and images through the CLIP
//! preprocessing. Each harness parses, then exercises what a caller does with an accepted value
//! (load every tensor, summarise the matrix, preprocess the image) and checks invariants that
//! must hold for every accepted input.
//!
//! A harness returns `Err(message)` when the input is refused (the expected outcome for most
//! fuzzer inputs) and panics only on a defect: a panic in moram's code, or a broken invariant.
//! The cargo-fuzz targets in `fuzz/` call [`run`]; the regression tests replay every kept input.

pub mod seeds;

use moram_cl::checkpoint::RunState;
use moram_cl::config::RunConfig;
use moram_cl::report::{markdown, summarize_run, Results};
use moram_models::clip::preprocess::{eval_pixels, train_pixels};
use moram_models::clip::Rgb8;
use moram_models::llm::{GgmlType, GgufFile, LlmConfig, LlmTokenizer};
use moram_models::WeightSource;
use rand::SeedableRng;
use std::path::Path;
use tch::{Device, Kind};

/// What a harness did with one input: `Ok` accepted, `Err` refused with this message.
pub type Outcome = Result<(), String>;

/// A harness: the name of its target and the function.
pub struct Target {
    /// The cargo-fuzz target name (also the folder of its regression inputs).
    pub name: &'static str,
    /// What it covers, for the summary.
    pub covers: &'static str,
    /// The longest input the fuzzer generates (bytes): room for a small valid file of the
    /// format, with its headers, metadata and a few tensors or records.
    pub max_len: usize,
    /// The harness.
    pub run: fn(&[u8]) -> Outcome,
}

/// Every target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "gguf",
        covers: "GGUF header, metadata, tensor directory, config and tokenizer from metadata, every tensor",
        max_len: 65536,
        run: gguf,
    },
    Target {
        name: "gguf_dequant",
        covers: "dequantisation of each supported ggml type on whole-block buffers of any length",
        max_len: 16384,
        run: gguf_dequant,
    },
    Target {
        name: "safetensors",
        covers: "WeightSource over a safetensors file (header, offsets, every tensor)",
        max_len: 65536,
        run: safetensors,
    },
    Target {
        name: "adapter",
        covers: "adapter files (moram_core::state): metadata, config, banks",
        max_len: 16384,
        run: adapter,
    },
    Target { name: "run_state", covers: "a run folder's state.json and its summaries", max_len: 16384, run: run_state },
    Target {
        name: "results",
        covers: "a run folder's results.json, its summaries and Markdown report",
        max_len: 32768,
        run: results,
    },
    Target {
        name: "run_config",
        covers: "RunConfig TOML: parse, validate, flatten, hash, round trip",
        max_len: 8192,
        run: run_config,
    },
    Target {
        name: "trace_json",
        covers: "TRACE task split files (JSON prompt/answer arrays)",
        max_len: 8192,
        run: trace_json,
    },
    Target { name: "idx", covers: "IDX files, plain and gzip", max_len: 4096, run: idx },
    Target {
        name: "image",
        covers: "PNG/JPEG decoding and the CLIP eval and train transforms",
        max_len: 65536,
        run: image,
    },
];

/// Runs the harness called `name`; `None` when there is no such target.
pub fn run(name: &str, data: &[u8]) -> Option<Outcome> {
    TARGETS.iter().find(|t| t.name == name).map(|t| (t.run)(data))
}

/// The name inputs carry in error messages (each message must name its file).
pub const ORIGIN: &str = "fuzz-input";

fn origin() -> &'static Path {
    Path::new(ORIGIN)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A refusal by the harness itself (not UTF-8, too short to hold one block), named like the
/// parsers' own errors.
fn refuse(e: impl std::fmt::Display) -> String {
    format!("{ORIGIN}: {e}")
}

/// Tensors larger than this are not dequantised by the `gguf` harness (a valid file may declare
/// them; their bytes are checked at open, and `gguf_dequant` covers the arithmetic).
const MAX_HARNESS_ELEMENTS: u64 = 1 << 20;

/// GGUF: open, then what loading a model reads from the metadata, then every tensor.
pub fn gguf(data: &[u8]) -> Outcome {
    let file = GgufFile::from_bytes(origin(), data.to_vec()).map_err(err)?;
    // Config and tokenizer from metadata refuse most inputs; they must not panic.
    let _ = LlmConfig::from_gguf(&file);
    let _ = LlmTokenizer::from_gguf(&file).map(|t| t.encode("The capital of France is"));
    for (name, info) in &file.tensors {
        let n: u64 = info.dims.iter().product();
        if n > MAX_HARNESS_ELEMENTS {
            continue;
        }
        if let Ok(t) = file.tensor(name) {
            assert_eq!(t.size(), info.shape(), "tensor `{name}` has the shape of its directory entry");
            assert_eq!(t.kind(), Kind::Float);
        }
    }
    Ok(())
}

/// The ggml type ids `gguf_dequant` picks from: every type moram dequantises.
const DEQUANT_IDS: [u32; 14] = [0, 1, 30, 8, 2, 3, 6, 7, 10, 11, 12, 13, 14, 15];

/// The `i`-th (modulo) dequantised type: `(id, elements per block, bytes per block)` as the GGUF
/// reader knows them.
pub(crate) fn dequant_type(i: usize) -> (u32, usize, usize) {
    let id = DEQUANT_IDS[i % DEQUANT_IDS.len()];
    let (per_block, block_bytes) = GgmlType::from_id(id).block().expect("every listed id is dequantised");
    (id, per_block, block_bytes)
}

/// How many types `gguf_dequant` covers.
pub(crate) const DEQUANT_TYPE_COUNT: usize = DEQUANT_IDS.len();

/// Builds a one-tensor GGUF v3 file: a `1 x n` tensor of type `ty` over `payload`.
pub fn one_tensor_gguf(ty: u32, n: u64, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(b"GGUF");
    f.extend_from_slice(&3u32.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes()); // tensors
    f.extend_from_slice(&0u64.to_le_bytes()); // metadata
    let name = b"t";
    f.extend_from_slice(&(name.len() as u64).to_le_bytes());
    f.extend_from_slice(name);
    f.extend_from_slice(&2u32.to_le_bytes());
    f.extend_from_slice(&n.to_le_bytes());
    f.extend_from_slice(&1u64.to_le_bytes());
    f.extend_from_slice(&ty.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // offset
    f.resize(f.len().div_ceil(32) * 32, 0);
    f.extend_from_slice(payload);
    f
}

/// Dequantisation: the first byte picks a type, the rest (cut to whole blocks) is the tensor's
/// data. The result has one value per element.
pub fn gguf_dequant(data: &[u8]) -> Outcome {
    let Some((&pick, payload)) = data.split_first() else { return Err(refuse("empty input")) };
    let (ty, per_block, block_bytes) = dequant_type(pick as usize);
    let blocks = payload.len() / block_bytes;
    if blocks == 0 {
        return Err(refuse("less than one block"));
    }
    let n = (blocks * per_block) as u64;
    let file = GgufFile::from_bytes(origin(), one_tensor_gguf(ty, n, &payload[..blocks * block_bytes])).map_err(err)?;
    let t = file.tensor("t").map_err(err)?;
    assert_eq!(t.size(), vec![1, n as i64], "type {ty}: one value per element");
    Ok(())
}

/// safetensors through `WeightSource`: open, then load every tensor as f32.
pub fn safetensors(data: &[u8]) -> Outcome {
    let source = WeightSource::from_bytes(origin(), data.to_vec()).map_err(err)?;
    for key in source.keys() {
        let shape = source.shape(key).map(<[i64]>::to_vec);
        if let Ok(t) = source.get_any_shape(key, Kind::Float, Device::Cpu) {
            assert_eq!(Some(t.size()), shape, "`{key}` loads with its header's shape");
        }
    }
    assert!(source.unused_keys().iter().all(|k| source.kind(k).is_none()), "every loadable tensor was marked used");
    Ok(())
}

/// Adapter files: load; every bank's parts agree (atoms, tasks, dimensions).
pub fn adapter(data: &[u8]) -> Outcome {
    let file = moram_core::AdapterFile::from_bytes(origin(), data, Device::Cpu).map_err(err)?;
    let _ = file.num_tasks();
    for name in file.layer_names() {
        let bank = file.bank(name).expect("listed layer has a bank");
        assert_eq!(bank.atom_task().len(), bank.len(), "`{name}`: one task id per atom");
        assert_eq!(bank.keys_tensor().size(), vec![bank.len() as i64, bank.d_in() as i64], "`{name}` keys");
        assert_eq!(bank.values_tensor().size(), vec![bank.d_out() as i64, bank.len() as i64], "`{name}` values");
    }
    Ok(())
}

/// `state.json`: parse and check, then what `moram report` and resume read.
pub fn run_state(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refuse)?;
    let state = RunState::from_json_str(text, origin()).map_err(err)?;
    assert!(state.tasks_done() <= state.task_names.len());
    let _ = state.adapter_file();
    if state.is_complete() {
        let _ = summarize_run(&state);
    }
    Ok(())
}

/// `results.json`: parse and check, summarise, render the Markdown report.
pub fn results(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refuse)?;
    let r = Results::from_json_str(text, origin()).map_err(err)?;
    let _ = summarize_run(&r.state);
    let md = markdown(&r);
    assert!(!md.is_empty());
    Ok(())
}

/// `RunConfig` TOML: parse and validate; an accepted config flattens, hashes and survives a
/// round trip through its own TOML.
pub fn run_config(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refuse)?;
    let config = RunConfig::from_toml_str(text, origin()).map_err(err)?;
    config.validate().map_err(err)?;
    let _ = config.flatten();
    let _ = config.hash();
    let again = toml::to_string(&config).map_err(err)?;
    let back = RunConfig::from_toml_str(&again, origin()).expect("a config's own TOML parses");
    assert_eq!(back.flatten(), config.flatten(), "round trip through TOML");
    Ok(())
}

/// TRACE task split files.
pub fn trace_json(data: &[u8]) -> Outcome {
    let text = std::str::from_utf8(data).map_err(refuse)?;
    let examples = moram_cl::data::trace::parse_split(text, origin()).map_err(err)?;
    let _ = examples.iter().map(|e| e.prompt.len() + e.answer.len()).sum::<usize>();
    Ok(())
}

/// IDX files (plain or gzip): the data holds exactly the declared element count.
pub fn idx(data: &[u8]) -> Outcome {
    let a = moram_cl::data::idx::parse_idx(data, origin()).map_err(err)?;
    assert_eq!(a.data.len() as u64, a.dims.iter().map(|&d| d as u64).product::<u64>());
    Ok(())
}

/// Images: decode, then the CLIP eval and train transforms (224 x 224 out, whatever the input).
pub fn image(data: &[u8]) -> Outcome {
    let img = Rgb8::decode(data, origin()).map_err(err)?;
    assert_eq!(img.data.len(), img.width * img.height * 3);
    if img.width == 0 || img.height == 0 {
        return Err(refuse("empty image"));
    }
    let eval = eval_pixels(&img, 224);
    assert_eq!((eval.width, eval.height, eval.data.len()), (224, 224, 224 * 224 * 3), "eval transform size");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let train = train_pixels(&img, 224, &mut rng);
    assert_eq!((train.width, train.height), (224, 224), "train transform size");
    Ok(())
}
