//! Deterministic tiny models and task data for tests, smoke runs and demos: a random LLaMA
//! checkpoint in Hugging Face layout sized to a given tokenizer, and TRACE-format tasks from
//! seeded generators.

use crate::data::trace::Example;
use crate::error::{Error, Result};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Size of a tiny random LLaMA.
#[derive(Debug, Clone, Copy)]
pub struct TinyLlama {
    /// Hidden size.
    pub hidden: i64,
    /// Blocks.
    pub layers: i64,
    /// Attention heads (head_dim = hidden / heads).
    pub heads: i64,
    /// Key/value heads.
    pub kv_heads: i64,
    /// MLP width.
    pub intermediate: i64,
}

impl Default for TinyLlama {
    fn default() -> Self {
        TinyLlama { hidden: 64, layers: 2, heads: 4, kv_heads: 2, intermediate: 128 }
    }
}

/// Writes `config.json`, `model.safetensors` (unit-variance embeddings, N(0, 1/d_in) projections, unit norms, seeded) and copies
/// `tokenizer.json` (+ `tokenizer_config.json` when present) from `tokenizer_dir` into `dir`. The
/// vocabulary size is the tokenizer's; BOS/EOS are `<s>`/`</s>`.
pub fn write_tiny_llama(dir: &Path, tokenizer_dir: &Path, size: TinyLlama, seed: i64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tok_path = tokenizer_dir.join("tokenizer.json");
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok_path).map_err(|e| Error::io(&tok_path, e))?)
            .map_err(|e| Error::Data { path: tok_path.clone(), entry: None, message: e.to_string() })?;
    let id_of = |name: &str| -> Option<i64> {
        tok.get("added_tokens")?
            .as_array()?
            .iter()
            .find(|t| t.get("content").and_then(|c| c.as_str()) == Some(name))?
            .get("id")?
            .as_i64()
    };
    let vocab = tok.pointer("/model/vocab").and_then(|v| v.as_object()).map_or(0, |m| m.len()) as i64;
    let (bos, eos) = (id_of("<s>").unwrap_or(1), id_of("</s>").unwrap_or(2));
    let hd = size.hidden / size.heads;
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": size.hidden, "intermediate_size": size.intermediate, "num_hidden_layers": size.layers,
        "num_attention_heads": size.heads, "num_key_value_heads": size.kv_heads, "head_dim": hd,
        "vocab_size": vocab, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "tie_word_embeddings": true, "bos_token_id": bos, "eos_token_id": eos,
        "attention_bias": false, "mlp_bias": false
    });
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, serde_json::to_string_pretty(&config).unwrap_or_default())
        .map_err(|e| Error::io(&cfg_path, e))?;
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let src = tokenizer_dir.join(f);
        if src.exists() {
            std::fs::copy(&src, dir.join(f)).map_err(|e| Error::io(&src, e))?;
        }
    }
    let opts = (Kind::Float, Device::Cpu);
    let w = |o: i64, i: i64| Tensor::randn([o, i], opts) / (i as f64).sqrt();
    let (d, ff) = (size.hidden, size.intermediate);
    let tensors = seeded(seed, || {
        let mut tensors: Vec<(String, Tensor)> = vec![
            ("model.embed_tokens.weight".into(), Tensor::randn([vocab, d], opts)),
            ("model.norm.weight".into(), Tensor::ones([d], opts)),
        ];
        for l in 0..size.layers {
            let p = format!("model.layers.{l}");
            tensors.push((format!("{p}.input_layernorm.weight"), Tensor::ones([d], opts)));
            tensors.push((format!("{p}.post_attention_layernorm.weight"), Tensor::ones([d], opts)));
            tensors.push((format!("{p}.self_attn.q_proj.weight"), w(size.heads * hd, d)));
            tensors.push((format!("{p}.self_attn.k_proj.weight"), w(size.kv_heads * hd, d)));
            tensors.push((format!("{p}.self_attn.v_proj.weight"), w(size.kv_heads * hd, d)));
            tensors.push((format!("{p}.self_attn.o_proj.weight"), w(d, size.heads * hd)));
            tensors.push((format!("{p}.mlp.gate_proj.weight"), w(ff, d)));
            tensors.push((format!("{p}.mlp.up_proj.weight"), w(ff, d)));
            tensors.push((format!("{p}.mlp.down_proj.weight"), w(d, ff)));
        }
        tensors
    });
    let path = dir.join("model.safetensors");
    Tensor::write_safetensors(&tensors, &path)?;
    Ok(())
}

/// Serialises the tests of one test binary that train or otherwise draw from libtorch's global
/// generator. Tests run on parallel threads: without it a seeded run's draws (atom initialisation,
/// shuffles, dropout) interleave with another test's, and its result changes from one test run to
/// the next. Take it first thing in such a test and hold it to the end (the fixture writers'
/// own lock below is a different one, so they may be called meanwhile).
pub fn exclusive_generator() -> std::sync::MutexGuard<'static, ()> {
    static TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TESTS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs `draw` right after seeding libtorch's global generator with `seed`, holding a lock: tests
/// run on several threads, and two writers seeding and drawing at once would interleave their
/// draws, giving weights that change from one test run to the next.
fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _lock = GLOBAL_GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    draw()
}

/// Words the fixture tokenizer of this repository knows well.
pub const WORDS: [&str; 16] = [
    "apples", "pears", "plums", "dog", "fox", "sun", "keys", "values", "model", "task", "bank", "layer", "quick",
    "lazy", "brown", "data",
];

/// A generated task: `n_train` + `n_eval` examples from a seeded rule.
pub fn generate_task(kind: &str, n_train: usize, n_eval: usize, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let make = |rng: &mut ChaCha8Rng| -> Result<Example> {
        let pick = |rng: &mut ChaCha8Rng, n: usize| -> Vec<&str> {
            (0..n).map(|_| *WORDS.choose(rng).unwrap_or(&"dog")).collect()
        };
        Ok(match kind {
            // Answer: the last word of the list.
            "last-word" => {
                let w = pick(rng, 3);
                Example { prompt: format!("Last word: {}\nAnswer:\n", w.join(" ")), answer: w[2].to_string() }
            }
            // Answer: the number of words (1-4).
            "count" => {
                let n = rng.random_range(1..=4);
                Example { prompt: format!("Count: {}\nAnswer:\n", pick(rng, n).join(" ")), answer: n.to_string() }
            }
            // Answer: A when the first word is in the first half of the word list, else B.
            "half" => {
                let w = pick(rng, 2);
                let first = WORDS.iter().position(|x| *x == w[0]).unwrap_or(0);
                let letter = if first < WORDS.len() / 2 { "A" } else { "B" };
                Example { prompt: format!("Which half: {}\nAnswer:\n", w.join(" ")), answer: letter.to_string() }
            }
            // The same inputs as `half` with the opposite answer: built to interfere with it.
            "half-flipped" => {
                let w = pick(rng, 2);
                let first = WORDS.iter().position(|x| *x == w[0]).unwrap_or(0);
                let letter = if first < WORDS.len() / 2 { "B" } else { "A" };
                Example { prompt: format!("Flip half: {}\nAnswer:\n", w.join(" ")), answer: letter.to_string() }
            }
            // One word of the first (`parity-low`) or second half (`parity-high`) of the list; the
            // answer is its index parity, with opposite letters in the two tasks: same format and
            // answer space, disjoint inputs.
            "parity-low" | "parity-high" => {
                let high = kind == "parity-high";
                let i = rng.random_range(0..WORDS.len() / 2) + if high { WORDS.len() / 2 } else { 0 };
                let letter = if (i % 2 == 0) != high { "A" } else { "B" };
                Example { prompt: format!("Parity: {}\nAnswer:\n", WORDS[i]), answer: letter.to_string() }
            }
            other => {
                return Err(Error::config(
                    "synthetic task",
                    format!(
                        "unknown generator `{other}` (last-word, count, half, half-flipped, parity-low, parity-high)"
                    ),
                ));
            }
        })
    };
    let all = (0..n_train + n_eval).map(|_| make(&mut rng)).collect::<Result<Vec<_>>>()?;
    let (train, eval) = all.split_at(n_train);
    Ok((train.to_vec(), eval.to_vec()))
}

/// Writes generated tasks as TRACE folders `<dir>/<name>/{train,eval,test}.json` (eval = test).
pub fn write_trace_tasks(dir: &Path, tasks: &[(&str, &str)], n_train: usize, n_eval: usize, seed: u64) -> Result<()> {
    for (i, (name, kind)) in tasks.iter().enumerate() {
        let (train, eval) = generate_task(kind, n_train, n_eval, seed.wrapping_add(i as u64))?;
        crate::data::trace::write_task(dir, name, &train, &eval)?;
    }
    Ok(())
}

/// The repository's small test tokenizer (`tests/fixtures/llm/tokenizer`).
pub fn fixture_tokenizer_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/llm/tokenizer")
}

/// Writes the tests' tiny run under `root`: `model/` (the tiny LLaMA, seed 7), `data/` (the
/// synthetic tasks LastWord, Count, Half, Flipped, Low, High; 32 training and 16 evaluation
/// examples each) and `run.toml` ([`tiny_run_config`]); returns the config's path.
pub fn write_tiny_run(root: &Path, method: &str, iterations: usize, tasks: &[&str]) -> Result<std::path::PathBuf> {
    write_tiny_model_and_data(root)?;
    let path = root.join("run.toml");
    std::fs::write(&path, tiny_run_config(method, iterations, tasks)).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// [`write_tiny_run`] with `sets` (`key=value`, as `--set` takes them) applied to the config: a
/// test names only what it changes. The written config keeps the model and data paths relative.
pub fn write_tiny_run_with(
    root: &Path,
    method: &str,
    iterations: usize,
    tasks: &[&str],
    sets: &[&str],
) -> Result<std::path::PathBuf> {
    write_tiny_model_and_data(root)?;
    let path = root.join("run.toml");
    let mut config = crate::config::RunConfig::from_toml_str(&tiny_run_config(method, iterations, tasks), &path)?;
    config.set_all(sets)?;
    let text = toml::to_string(&config).map_err(|e| Error::config(path.display().to_string(), e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// The model and data folders of [`write_tiny_run`].
fn write_tiny_model_and_data(root: &Path) -> Result<()> {
    write_tiny_llama(&root.join("model"), &fixture_tokenizer_dir(), TinyLlama::default(), 7)?;
    let kinds = [
        ("LastWord", "last-word"),
        ("Count", "count"),
        ("Half", "half"),
        ("Flipped", "half-flipped"),
        ("Low", "parity-low"),
        ("High", "parity-high"),
    ];
    write_trace_tasks(&root.join("data"), &kinds, 32, 16, 11)
}

/// The tests' run on a tiny model: the config text of a `method` run over `tasks` with
/// `iterations` steps of 4 per task, for `model/` written by [`write_tiny_llama`] and `data/` by
/// [`write_trace_tasks`] next to the config file (r 4, top-k 4, Adam 1e-2 constant, 3 new tokens,
/// q/v/down adapted). One text, so that tests say only what they change (`RunConfig::set`).
pub fn tiny_run_config(method: &str, iterations: usize, tasks: &[&str]) -> String {
    format!(
        r#"
name = "tiny-{method}"
seed = 3

[method]
name = "{method}"
profile = "trace_paper"
r = 4
top_k = 4
dropout = 0.1

[optimizer]
kind = "adam"
lr = 0.01
betas = [0.9, 0.95]
schedule = "constant"

[training]
iterations = {iterations}
batch_size = 4
micro_batch_size = 2
clip_grad_norm = 1.0

[generation]
max_new_tokens = 3
max_prompt_tokens = 64
max_answer_tokens = 16

[evaluation]
batch_size = 4

[model]
kind = "llm"
path = "model"
targets = {{ modules = ["q_proj", "v_proj", "down_proj"] }}

[data]
format = "trace"
dir = "data"
tasks = {tasks:?}
metrics = {{ Count = "numglue_accuracy" }}
"#
    )
}

/// A BBC-News-shaped folder for tests: `per_topic` articles in each of five topic folders
/// (headline line, blank line, body), plus one file that is not valid UTF-8 as in the real corpus.
pub fn write_fake_bbc(dir: &Path, per_topic: usize) -> Result<()> {
    let words = ["market", "shares", "film", "award", "vote", "minister", "match", "goal", "phone", "software"];
    for (t, topic) in ["business", "entertainment", "politics", "sports", "tech"].iter().enumerate() {
        let d = dir.join(topic);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        for i in 0..per_topic {
            let w = |k: usize| words[(t * 2 + (i + k) % 2) % words.len()];
            let text = format!(
                "{} {} rises {i}\n\nThe {} and the {} were {i} times bigger.\nMore {} news.\n",
                w(0),
                w(1),
                w(0),
                w(1),
                w(0)
            );
            let p = d.join(format!("{i:03}.txt"));
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        }
    }
    let p = dir.join("tech/999.txt");
    std::fs::write(&p, b"Caf\xe9 opens\n\nA caf\xe9 opened today.\n").map_err(|e| Error::io(&p, e))
}

/// Writes a WordNet-shaped folder (`index.noun`, `data.noun`, `index.verb`, `verb.exc` in WordNet's
/// `wndb(5)` formats) for the demo's tests: 14 nouns per category of the demo, each named after its
/// category (`animalab`, lexicographer file 05), 80 verbs `verbab` with the form `verbabed`, and a
/// few entries the demo must skip (an untagged noun, a compound).
pub fn write_fake_wordnet(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let licence = "  1 This software and database is being provided to you, the LICENSEE, by\n";
    let (mut index, mut data) = (String::from(licence), String::from(licence));
    let suffix = |i: usize| format!("{}{}", (b'a' + (i / 26) as u8) as char, (b'a' + (i % 26) as u8) as char);
    let mut offset = 100;
    for (lex, kind) in [(5, "animal"), (6, "object"), (8, "body"), (13, "food"), (18, "person"), (20, "plant")] {
        for i in 0..14 {
            let word = format!("{kind}{}", suffix(i + 1));
            index.push_str(&format!("{word} n 1 0 1 1 {offset:08}\n"));
            data.push_str(&format!("{offset:08} {lex:02} n 01 {word} 0 000 | a {kind}\n"));
            offset += 1;
        }
    }
    index.push_str(&format!("rareanimal n 1 0 1 0 {:08}\nice_cream n 1 0 1 1 {:08}\n", 100, 130));
    let (mut verbs, mut exc) = (String::from(licence), String::new());
    for i in 0..80 {
        let base = format!("verb{}", suffix(i + 1));
        verbs.push_str(&format!("{base} v 1 0 1 3 {:08}\n", 900 + i));
        exc.push_str(&format!("{base}ed {base}\n"));
    }
    for (name, text) in [("index.noun", index), ("data.noun", data), ("index.verb", verbs), ("verb.exc", exc)] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    }
    Ok(())
}

/// Writes a tiny random CLIP in Hugging Face layout (`config.json` + `model.safetensors`; CLIP's
/// real BPE vocabulary size so real prompts tokenise, 32x32 images in 8x8 patches, 16 text
/// positions), seeded.
pub fn write_tiny_clip(dir: &Path, seed: i64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let config = serde_json::json!({
        "model_type": "clip", "projection_dim": 16, "logit_scale_init_value": 2.6592,
        "text_config": {"hidden_size": 24, "intermediate_size": 48, "num_attention_heads": 4, "num_hidden_layers": 2,
            "max_position_embeddings": 16, "vocab_size": 49408, "bos_token_id": 49406, "eos_token_id": 49407,
            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "image_size": 32, "patch_size": 8, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    });
    let path = dir.join("config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap_or_default())
        .map_err(|e| Error::io(&path, e))?;
    let parsed = moram_models::clip::ClipConfig::from_hf_json(&path)?;
    let opts = (Kind::Float, Device::Cpu);
    let tensors: Vec<(String, Tensor)> = seeded(seed, || {
        moram_models::clip::expected_keys(&parsed, moram_models::clip::Layout::HuggingFace)
            .into_iter()
            .map(|(k, shape)| {
                let norm = ["layer_norm", "layernorm", "layrnorm"].iter().any(|n| k.contains(n));
                let t = if norm && k.ends_with(".weight") {
                    Tensor::ones(shape.as_slice(), opts)
                } else if k == "logit_scale" {
                    // cpu: a checkpoint written to a file.
                    Tensor::from(2.6592f32)
                } else {
                    let fan_in = shape.last().copied().unwrap_or(1).max(1) as f64;
                    Tensor::randn(shape.as_slice(), opts) / fan_in.sqrt()
                };
                (k, t)
            })
            .collect()
    });
    Tensor::write_safetensors(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// Writes `<dir>/<class>/<i>.png` (and `.jpg` for odd `i`) images of `classes` classes: a bright
/// square at a class-specific corner on a noisy background, `per_class` each, seeded.
pub fn write_image_folders(dir: &Path, classes: &[&str], per_class: usize, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (c, name) in classes.iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
        for i in 0..per_class {
            let mut img = image::RgbImage::new(40, 40);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let inside = (x / 20) as usize == c % 2 && (y / 20) as usize == (c / 2) % 2;
                let base: u8 = if inside { 220 } else { 30 };
                let noise = |rng: &mut ChaCha8Rng| base.saturating_add(rng.random_range(0..30));
                *p = image::Rgb([noise(&mut rng), noise(&mut rng), noise(&mut rng)]);
            }
            let path = d.join(format!("{i:03}.{}", if i.is_multiple_of(2) { "png" } else { "jpg" }));
            img.save(&path).map_err(|e| Error::Data { path: path.clone(), entry: None, message: e.to_string() })?;
        }
    }
    Ok(())
}

fn idx_file(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    dims.iter().for_each(|d| v.extend(d.to_be_bytes()));
    v.extend(data);
    v
}

/// A miniature X-TAIL root for tests: caltech101 and eurosat (CoOp JSON, PNG/JPEG files), aircraft
/// (its text files, JPEG) and MNIST (torchvision IDX layout), a few images per class.
pub fn write_mini_xtail_root(root: &Path) -> Result<()> {
    // CoOp: images in <root>/caltech101/101_ObjectCategories/<class>/*, split JSON with 3 per class train, 2 test.
    for (key, folder, file, images, classes) in [
        (
            "caltech101",
            "caltech101",
            "split_zhou_Caltech101.json",
            "caltech101/101_ObjectCategories",
            ["face", "leopard"],
        ),
        ("eurosat", "eurosat", "split_zhou_EuroSAT.json", "eurosat/2750", ["Forest", "River"]),
    ] {
        let img_root = root.join(images);
        write_image_folders(&img_root, &classes, 5, key.len() as u64)?;
        let item = |c: usize, i: usize| {
            let ext = if i.is_multiple_of(2) { "png" } else { "jpg" };
            serde_json::json!([format!("{}/{i:03}.{ext}", classes[c]), c, classes[c]])
        };
        let split = serde_json::json!({
            "train": (0..2).flat_map(|c| (0..3).map(move |i| (c, i))).map(|(c, i)| item(c, i)).collect::<Vec<_>>(),
            "val": [],
            "test": (0..2).flat_map(|c| (3..5).map(move |i| (c, i))).map(|(c, i)| item(c, i)).collect::<Vec<_>>(),
        });
        let p = root.join(folder).join(file);
        put(&p, split.to_string())?;
    }
    // Aircraft: ids as file names.
    let data = root.join("fgvc-aircraft-2013b/data");
    write_image_folders(&data.join("tmp"), &["a"], 6, 9)?;
    mkdir(&data.join("images"))?;
    for i in 0..6usize {
        let ext = if i.is_multiple_of(2) { "png" } else { "jpg" };
        let src = data.join(format!("tmp/a/{i:03}.{ext}"));
        let img =
            image::open(&src).map_err(|e| Error::Data { path: src.clone(), entry: None, message: e.to_string() })?;
        let dst = data.join(format!("images/{i:07}.jpg"));
        img.save_with_format(&dst, image::ImageFormat::Jpeg).map_err(|e| Error::Data {
            path: dst.clone(),
            entry: None,
            message: e.to_string(),
        })?;
    }
    put(&data.join("variants.txt"), "707-320\nA300B4\n")?;
    put(&data.join("images_variant_train.txt"), "0000000 707-320\n0000001 707-320\n0000002 A300B4\n0000003 A300B4\n")?;
    put(&data.join("images_variant_test.txt"), "0000004 707-320\n0000005 A300B4\n")?;
    // MNIST (torchvision raw layout): 2 images per digit in train, 1 in test.
    let raw = root.join("MNIST/raw");
    mkdir(&raw)?;
    for (prefix, per) in [("train", 2u8), ("t10k", 1u8)] {
        let labels: Vec<u8> = (0..10u8).flat_map(|d| std::iter::repeat_n(d, per as usize)).collect();
        let px: Vec<u8> = labels.iter().flat_map(|&d| std::iter::repeat_n(d * 20, 28 * 28)).collect();
        let n = labels.len() as u32;
        put(&raw.join(format!("{prefix}-images-idx3-ubyte")), idx_file(&[n, 28, 28], &px))?;
        put(&raw.join(format!("{prefix}-labels-idx1-ubyte")), idx_file(&[n], &labels))?;
    }
    Ok(())
}

fn put(p: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(p, bytes).map_err(|e| Error::io(p, e))
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))
}
