//! The ten X-TAIL datasets in the layouts the official code reads (protocol 3.2): CoOp
//! `split_zhou_*.json` files, FGVC-Aircraft's text files and torchvision's MNIST, with X-TAIL's
//! templates, class-name quirks (EuroSAT's " satellite location", MNIST's doubled `number:`) and
//! 16-shot training sets drawn per dataset with a dedicated seeded generator (A7: the official
//! shots depend on Python's global RNG and cannot be reproduced outside it).

use super::idx::load_split;
use super::{data_error, draw_shots, ImageTask, Images};
use crate::error::{Error, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A dataset's key, folder, split file (or `None` for the special layouts), image root and template.
struct Spec {
    key: &'static str,
    split: Option<(&'static str, &'static str)>,
    images: &'static str,
    template: &'static str,
    /// Classes of the dataset (X-TAIL's 1,100 in all).
    classes: usize,
}

/// The ten X-TAIL dataset keys, in the official code's order 1.
pub fn xtail_keys() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.key)
}

/// Classes of X-TAIL dataset `key` (protocol: 1,100 over the ten), `None` for another name; what
/// the memory plan encodes per step before any data is read.
pub fn xtail_classes(key: &str) -> Option<usize> {
    SPECS.iter().find(|s| s.key == key).map(|s| s.classes)
}

const SPECS: [Spec; 10] = [
    Spec {
        key: "aircraft",
        split: None,
        images: "fgvc-aircraft-2013b/data/images",
        template: "a photo of a {}, a type of aircraft.",
        classes: 100,
    },
    Spec {
        key: "caltech101",
        split: Some(("caltech101", "split_zhou_Caltech101.json")),
        images: "caltech101/101_ObjectCategories",
        template: "a photo of a {}.",
        classes: 100,
    },
    Spec {
        key: "dtd",
        split: Some(("dtd", "split_zhou_DescribableTextures.json")),
        images: "dtd/images",
        template: "{} texture.",
        classes: 47,
    },
    Spec {
        key: "eurosat",
        split: Some(("eurosat", "split_zhou_EuroSAT.json")),
        images: "eurosat/2750",
        template: "a centered satellite photo of the {}.",
        classes: 10,
    },
    Spec {
        key: "oxford_flowers",
        split: Some(("flowers-102", "split_zhou_OxfordFlowers.json")),
        images: "flowers-102/jpg",
        template: "a photo of a {}, a type of flower.",
        classes: 102,
    },
    Spec {
        key: "food101",
        split: Some(("food-101", "split_zhou_Food101.json")),
        images: "food-101/images",
        template: "a photo of a {}, a type of food.",
        classes: 101,
    },
    Spec { key: "mnist", split: None, images: "MNIST/raw", template: "a photo of the number: \"{}\".", classes: 10 },
    Spec {
        key: "oxford_pets",
        split: Some(("oxford-iiit-pet", "split_zhou_OxfordPets.json")),
        images: "oxford-iiit-pet/images",
        template: "a photo of a {}, a type of pet.",
        classes: 37,
    },
    Spec {
        key: "stanford_cars",
        split: Some(("stanford_cars", "split_zhou_StanfordCars.json")),
        images: "stanford_cars",
        template: "a photo of a {}.",
        classes: 196,
    },
    Spec {
        key: "sun397",
        split: Some(("SUN397", "split_zhou_SUN397.json")),
        images: "SUN397",
        template: "a photo of a {}.",
        classes: 397,
    },
];

const MNIST_CLASSES: [&str; 10] = [
    "0 - zero",
    "1 - one",
    "2 - two",
    "3 - three",
    "4 - four",
    "5 - five",
    "6 - six",
    "7 - seven",
    "8 - eight",
    "9 - nine",
];

/// How the X-TAIL datasets are read.
#[derive(Debug, Clone)]
pub struct XtailOptions {
    /// Training images per class (16).
    pub shots: usize,
    /// Test images kept per class (all when `None`).
    pub test_per_class: Option<usize>,
    /// Model input side.
    pub size: usize,
    /// Seed of the shots (each dataset derives its own generator from it).
    pub seed: u64,
    /// Folder caching each file-based dataset's drawn shots as JSON (reused when present, so a
    /// run keeps its shots even if the dataset folder is re-listed differently later).
    pub shot_cache: Option<PathBuf>,
}

/// Items of one split: (image path, label), and class names by label.
type Split = (Vec<(PathBuf, i64)>, Vec<String>);

fn spec(key: &str) -> Result<&'static Spec> {
    SPECS.iter().find(|s| s.key == key).ok_or_else(|| {
        let keys: Vec<&str> = SPECS.iter().map(|s| s.key).collect();
        Error::config(
            "data.tasks",
            format!("`{key}` is not an X-TAIL dataset (valid: {}) nor a custom domain folder", keys.join(", ")),
        )
    })
}

/// Reads a CoOp split file: `{"train": [[path, label, classname], ...], "test": [...]}`.
fn coop_split(root: &Path, s: &Spec, split: &str) -> Result<Split> {
    let (folder, file) = s.split.ok_or_else(|| Error::task(s.key, "not a CoOp dataset"))?;
    let path = root.join(folder).join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| data_error(&path, None, format!("cannot read the split file: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| data_error(&path, None, format!("malformed JSON: {e}")))?;
    let items = json
        .get(split)
        .and_then(|v| v.as_array())
        .ok_or_else(|| data_error(&path, None, format!("no `{split}` list")))?;
    let mut out = Vec::with_capacity(items.len());
    let mut names: Vec<Option<String>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let bad = || {
            data_error(&path, Some(format!("{split} entry {i}")), "expected [image path, integer label, class name]")
        };
        let a = item.as_array().filter(|a| a.len() == 3).ok_or_else(bad)?;
        let (rel, label, name) =
            (a[0].as_str().ok_or_else(bad)?, a[1].as_i64().ok_or_else(bad)?, a[2].as_str().ok_or_else(bad)?);
        if label < 0 {
            return Err(bad());
        }
        let l = label as usize;
        if names.len() <= l {
            names.resize(l + 1, None);
        }
        names[l].get_or_insert_with(|| name.to_string());
        out.push((root.join(s.images).join(rel), label));
    }
    let names = names
        .into_iter()
        .enumerate()
        .map(|(l, n)| n.ok_or_else(|| data_error(&path, None, format!("label {l} never appears in `{split}`"))))
        .collect::<Result<Vec<_>>>()?;
    Ok((out, names))
}

/// FGVC-Aircraft: `variants.txt` (label = line) and `images_variant_<split>.txt` ("<id> <variant>").
fn aircraft_split(root: &Path, split: &str) -> Result<Split> {
    let data = root.join("fgvc-aircraft-2013b/data");
    let read = |name: &str| {
        let p = data.join(name);
        std::fs::read_to_string(&p).map_err(|e| data_error(&p, None, format!("cannot read: {e}")))
    };
    let variants: Vec<String> =
        read("variants.txt")?.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    let file = format!("images_variant_{split}.txt");
    let mut out = Vec::new();
    for (i, line) in read(&file)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (id, variant) = line.trim().split_once(' ').ok_or_else(|| {
            data_error(&data.join(&file), Some(format!("line {}", i + 1)), "expected `<id> <variant>`")
        })?;
        let label = variants.iter().position(|v| v == variant).ok_or_else(|| {
            data_error(
                &data.join(&file),
                Some(format!("line {}", i + 1)),
                format!("variant `{variant}` is not in variants.txt"),
            )
        })?;
        out.push((data.join("images").join(format!("{id}.jpg")), label as i64));
    }
    Ok((out, variants))
}

/// X-TAIL's 16 shots: per label in order of first appearance, without replacement when the class
/// has enough items, else with replacement.
fn few_shot(items: &[(PathBuf, i64)], shots: usize, rng: &mut ChaCha8Rng) -> Vec<(PathBuf, i64)> {
    let mut order: Vec<i64> = Vec::new();
    for (_, l) in items {
        if !order.contains(l) {
            order.push(*l);
        }
    }
    let mut out = Vec::new();
    for l in order {
        let class: Vec<&(PathBuf, i64)> = items.iter().filter(|(_, x)| *x == l).collect();
        out.extend(draw_shots(&class, shots, rng).into_iter().cloned());
    }
    out
}

fn dataset_seed(seed: u64, key: &str) -> u64 {
    let h = Sha256::digest(key.as_bytes());
    seed ^ u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn mnist_task(
    root: &Path,
    s: &Spec,
    shots: usize,
    test_per_class: Option<usize>,
    size: usize,
    seed: u64,
) -> Result<ImageTask> {
    let raw = root.join(s.images);
    let (train, train_labels) = load_split(&raw, "train")?;
    let (test, test_labels) = load_split(&raw, "t10k")?;
    let mut rng = ChaCha8Rng::seed_from_u64(dataset_seed(seed, s.key));
    let (mut tr, mut trl) = (Vec::new(), Vec::new());
    for c in 0..10u8 {
        let idx: Vec<usize> = (0..train_labels.len()).filter(|&i| train_labels[i] == c).collect();
        let pick = draw_shots(&idx, shots, &mut rng);
        trl.extend(std::iter::repeat_n(c as i64, pick.len()));
        tr.extend(pick);
    }
    let mut counts = [0usize; 10];
    let (mut te, mut tel) = (Vec::new(), Vec::new());
    for (i, &l) in test_labels.iter().enumerate() {
        let l = l as usize % 10;
        if test_per_class.is_none_or(|k| counts[l] < k) {
            counts[l] += 1;
            te.push(i);
            tel.push(l as i64);
        }
    }
    // The official class names wrap the torchvision names as `number: "<c>"` (protocol A5).
    let classnames = MNIST_CLASSES.iter().map(|c| format!("number: \"{}\"", c.replace('_', " "))).collect();
    let task = ImageTask {
        name: s.key.into(),
        classnames,
        template: s.template.into(),
        train_images: Images::Grey { images: train, items: tr, size },
        train_labels: trl,
        test_images: Images::Grey { images: test, items: te, size },
        test_labels: tel,
    };
    task.validate()?;
    Ok(task)
}

/// Loads X-TAIL dataset `key` from `root` (all test items, at most `test_per_class` per class
/// when given; `shots` training items per class; images read per batch). A key that is not one
/// of the ten names an extra custom domain: `<root>/<key>/` holding IDX files plus `classes.txt`
/// (one class name per line), or class folders of images; `template.txt` there overrides the
/// prompt template `a photo of a {}.`.
pub fn xtail_task(root: &Path, key: &str, o: &XtailOptions) -> Result<ImageTask> {
    let s = match spec(key) {
        Ok(s) => s,
        Err(e) => {
            // A custom domain: a folder under the root, or an absolute path (named by its last part).
            let dir = if Path::new(key).is_absolute() { PathBuf::from(key) } else { root.join(key) };
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or(key).to_string();
            return if dir.is_dir() { custom_domain(&dir, &name, o) } else { Err(e) };
        }
    };
    if key == "mnist" {
        return mnist_task(root, s, o.shots, o.test_per_class, o.size, o.seed);
    }
    let read = |split: &str| if key == "aircraft" { aircraft_split(root, split) } else { coop_split(root, s, split) };
    let (train, mut names) = read("train")?;
    let (test, _) = read("test")?;
    if key == "eurosat" {
        for n in &mut names {
            n.push_str(" satellite location");
        }
    }
    let shots = cached_shots(root, key, &train, o)?;
    let mut counts = vec![0usize; names.len()];
    let test: Vec<(PathBuf, i64)> = test
        .into_iter()
        .filter(|(_, l)| {
            let c = &mut counts[*l as usize % names.len().max(1)];
            *c += 1;
            o.test_per_class.is_none_or(|k| *c <= k)
        })
        .collect();
    let task = ImageTask {
        name: key.into(),
        classnames: names,
        template: s.template.into(),
        train_images: Images::Files { paths: shots.iter().map(|x| x.0.clone()).collect(), size: o.size },
        train_labels: shots.iter().map(|x| x.1).collect(),
        test_images: Images::Files { paths: test.iter().map(|x| x.0.clone()).collect(), size: o.size },
        test_labels: test.iter().map(|x| x.1).collect(),
    };
    task.validate()?;
    Ok(task)
}

/// The shots of a file-based dataset: from the cache when it holds them, else drawn and cached.
/// Paths are stored relative to the data root, so a moved dataset folder keeps its shots.
fn cached_shots(root: &Path, key: &str, train: &[(PathBuf, i64)], o: &XtailOptions) -> Result<Vec<(PathBuf, i64)>> {
    let file = o.shot_cache.as_ref().map(|d| d.join(format!("{key}-shots{}-seed{}.json", o.shots, o.seed)));
    if let Some(f) = file.as_ref().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        let items: Vec<(PathBuf, i64)> = serde_json::from_str(&text)
            .map_err(|e| data_error(f, None, format!("corrupt shot cache (delete it to redraw): {e}")))?;
        return Ok(items.into_iter().map(|(p, l)| (root.join(p), l)).collect());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(dataset_seed(o.seed, key));
    let shots = few_shot(train, o.shots, &mut rng);
    if let Some(f) = file {
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let relative: Vec<(&Path, i64)> = shots.iter().map(|(p, l)| (p.strip_prefix(root).unwrap_or(p), *l)).collect();
        let text = serde_json::to_string_pretty(&relative).unwrap_or_default();
        crate::checkpoint::write_atomic(&f, text.as_bytes())?;
    }
    Ok(shots)
}

/// An extra domain in a custom folder: IDX files with `classes.txt`, or class folders.
fn custom_domain(dir: &Path, key: &str, o: &XtailOptions) -> Result<ImageTask> {
    let template = std::fs::read_to_string(dir.join("template.txt"))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|_| "a photo of a {}.".into());
    let idx = ["train-images-idx3-ubyte", "train-images-idx3-ubyte.gz"].iter().any(|f| dir.join(f).is_file());
    if idx {
        let path = dir.join("classes.txt");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| data_error(&path, None, format!("an IDX domain needs its class names, one per line: {e}")))?;
        let classes: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
        let n = classes.len();
        let mut tasks = super::idx::idx_tasks(
            dir,
            &[key.to_string()],
            &classes,
            n,
            &template,
            o.shots,
            o.test_per_class,
            o.size,
            dataset_seed(o.seed, key),
        )?;
        return tasks.pop().ok_or_else(|| Error::task(key, "no task"));
    }
    let opts = super::folders::FolderOptions {
        shots: o.shots,
        test_per_class: o.test_per_class,
        template,
        size: o.size,
        seed: dataset_seed(o.seed, key),
    };
    super::folders::folder_task(key, dir, &opts)
}

/// Loads every dataset of `keys`, collecting every problem (missing folders or files, malformed
/// split files, missing images) instead of stopping at the first.
pub fn xtail_tasks(root: &Path, keys: &[String], o: &XtailOptions) -> Result<Vec<ImageTask>> {
    let mut tasks = Vec::new();
    let mut problems = Vec::new();
    let bar = indicatif::ProgressBar::new(keys.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed_precise}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("reading X-TAIL datasets");
    for k in keys {
        match xtail_task(root, k, o) {
            Ok(t) => tasks.push(t),
            Err(e) => problems.push(format!("{k}: {e}")),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if problems.is_empty() {
        Ok(tasks)
    } else {
        Err(data_error(root, None, format!("{} dataset(s) unusable:\n  {}", problems.len(), problems.join("\n  "))))
    }
}
