//! The X-TAIL dataset layouts on a generated miniature root (real PNG/JPEG files, IDX MNIST):
//! class names, templates and quirks, seeded shots, and every problem listed at once.

use moram_cl::data::xtail::{xtail_task, xtail_tasks, XtailOptions};

fn o(shots: usize, seed: u64) -> XtailOptions {
    XtailOptions { shots, test_per_class: None, size: 32, seed, shot_cache: None }
}
use moram_cl::synthetic::write_mini_xtail_root;
use std::path::Path;

#[test]
fn each_layout_with_its_quirks() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini_xtail_root(tmp.path()).unwrap();
    let t = xtail_task(tmp.path(), "caltech101", &o(16, 42)).unwrap();
    assert_eq!(t.classnames, ["face", "leopard"]);
    assert_eq!(t.prompts()[1], "a photo of a leopard.");
    // Fewer than 16 training items per class: 16 drawn with replacement, per class in order.
    assert_eq!(t.train_labels, [vec![0i64; 16], vec![1; 16]].concat());
    assert_eq!(t.test_labels, [0, 0, 1, 1]);
    let e = xtail_task(tmp.path(), "eurosat", &o(2, 42)).unwrap();
    assert_eq!(e.prompts()[0], "a centered satellite photo of the Forest satellite location.");
    assert_eq!(e.train_labels, [0, 0, 1, 1]);
    let a = xtail_task(tmp.path(), "aircraft", &o(2, 42)).unwrap();
    assert_eq!(a.classnames, ["707-320", "A300B4"]);
    assert_eq!(a.prompts()[1], "a photo of a A300B4, a type of aircraft.");
    assert_eq!(a.test_labels, [0, 1]);
    let x = a.test_images.batch(&[0, 1], None).unwrap();
    assert_eq!(x.size(), [2, 3, 32, 32]);
    let m = xtail_task(tmp.path(), "mnist", &o(2, 42)).unwrap();
    assert_eq!(m.prompts()[0], "a photo of the number: \"number: \"0 - zero\"\".");
    assert_eq!((m.train_labels.len(), m.test_labels.len()), (20, 10));
    // Seeded: same seed, same shots; the seed is per dataset.
    let t2 = xtail_task(tmp.path(), "eurosat", &o(2, 42)).unwrap();
    let paths = |t: &moram_cl::data::ImageTask| match &t.train_images {
        moram_cl::data::Images::Files { paths, .. } => paths.clone(),
        _ => unreachable!(),
    };
    assert_eq!(paths(&e), paths(&t2));
}

#[test]
fn every_problem_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini_xtail_root(tmp.path()).unwrap();
    std::fs::create_dir_all(tmp.path().join("food-101")).unwrap();
    std::fs::write(tmp.path().join("food-101/split_zhou_Food101.json"), "{\"train\": [[\"a.jpg\", 0]]}").unwrap();
    std::fs::remove_file(tmp.path().join("caltech101/101_ObjectCategories/face/000.png")).unwrap();
    let keys: Vec<String> =
        ["aircraft", "caltech101", "dtd", "food101", "mnist", "imagenet"].iter().map(|s| s.to_string()).collect();
    let e = xtail_tasks(tmp.path(), &keys, &o(16, 1)).unwrap_err().to_string();
    assert!(e.contains("4 dataset(s) unusable"), "{e}");
    assert!(
        e.contains("caltech101: task `caltech101`: train: missing image file") && e.contains("face/000.png"),
        "{e}"
    );
    assert!(
        e.contains("dtd: ") && e.contains("split_zhou_DescribableTextures.json: cannot read the split file"),
        "{e}"
    );
    assert!(
        e.contains("food101: ") && e.contains("(train entry 0): expected [image path, integer label, class name]"),
        "{e}"
    );
    assert!(
        e.contains("`imagenet` is not an X-TAIL dataset (valid: aircraft, caltech101")
            && e.contains("nor a custom domain folder"),
        "{e}"
    );
}

#[test]
fn shot_cache_and_custom_domains() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini_xtail_root(tmp.path()).unwrap();
    let cache = tmp.path().join("cache");
    let with_cache = XtailOptions { shot_cache: Some(cache.clone()), ..o(2, 5) };
    let a = xtail_task(tmp.path(), "caltech101", &with_cache).unwrap();
    let file = cache.join("caltech101-shots2-seed5.json");
    assert!(file.is_file());
    // The cached shots are used as written: edit the cache, and the task follows it.
    let mut items: Vec<(std::path::PathBuf, i64)> =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(items.len(), 4);
    items.truncate(3);
    std::fs::write(&file, serde_json::to_string(&items).unwrap()).unwrap();
    let b = xtail_task(tmp.path(), "caltech101", &with_cache).unwrap();
    assert_eq!((a.train_labels.len(), b.train_labels.len()), (4, 3));
    std::fs::write(&file, "not json").unwrap();
    assert!(xtail_task(tmp.path(), "caltech101", &with_cache).unwrap_err().to_string().contains("corrupt shot cache"));
    // Extra domains: a folder of class folders (with its own template), and an IDX set.
    moram_cl::synthetic::write_image_folders(&tmp.path().join("my_birds"), &["robin", "wren"], 4, 3).unwrap();
    std::fs::write(tmp.path().join("my_birds/template.txt"), "a photo of a {}, a type of bird.\n").unwrap();
    let raw = tmp.path().join("MNIST/raw");
    let digits = tmp.path().join("digits");
    std::fs::create_dir_all(&digits).unwrap();
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        std::fs::copy(raw.join(f), digits.join(f)).unwrap();
    }
    let keys: Vec<String> = ["my_birds", "digits", "eurosat"].iter().map(|s| s.to_string()).collect();
    let e = xtail_tasks(tmp.path(), &keys, &o(2, 1)).unwrap_err().to_string();
    assert!(e.contains("digits: ") && e.contains("classes.txt: an IDX domain needs its class names"), "{e}");
    let names: String = (0..10).map(|d| format!("digit {d}\n")).collect();
    std::fs::write(digits.join("classes.txt"), names).unwrap();
    let tasks = xtail_tasks(tmp.path(), &keys, &o(2, 1)).unwrap();
    assert_eq!(tasks[0].prompts()[1], "a photo of a wren, a type of bird.");
    assert_eq!(tasks[1].classnames.len(), 10);
    assert_eq!(tasks[1].prompts()[3], "a photo of a digit 3.");
    assert_eq!(tasks[2].name, "eurosat");
    // An absolute path names a domain anywhere, called by its folder name.
    let abs = vec![tmp.path().join("my_birds").display().to_string()];
    assert_eq!(xtail_tasks(Path::new("/nonexistent"), &abs, &o(2, 1)).unwrap()[0].name, "my_birds");
    // Cached paths are relative to the root: a moved root keeps its shots.
    std::fs::remove_file(&file).unwrap();
    let first = xtail_task(tmp.path(), "eurosat", &with_cache).unwrap();
    let text = std::fs::read_to_string(cache.join("eurosat-shots2-seed5.json")).unwrap();
    assert!(!text.contains(&tmp.path().display().to_string()), "{text}");
    let moved = tmp.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::rename(tmp.path().join("eurosat"), moved.join("eurosat")).unwrap();
    let again = xtail_task(&moved, "eurosat", &with_cache).unwrap();
    assert_eq!(first.train_labels, again.train_labels);
}
