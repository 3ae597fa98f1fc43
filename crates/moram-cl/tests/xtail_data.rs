//! The X-TAIL dataset layouts on a generated miniature root (real PNG/JPEG files, IDX MNIST):
//! class names, templates and quirks, seeded shots, and every problem listed at once.

use moram_cl::data::xtail::{xtail_task, xtail_tasks};
use moram_cl::synthetic::write_mini_xtail_root;

#[test]
fn each_layout_with_its_quirks() {
    let tmp = tempfile::tempdir().unwrap();
    write_mini_xtail_root(tmp.path()).unwrap();
    let t = xtail_task(tmp.path(), "caltech101", 16, None, 32, 42).unwrap();
    assert_eq!(t.classnames, ["face", "leopard"]);
    assert_eq!(t.prompts()[1], "a photo of a leopard.");
    // Fewer than 16 training items per class: 16 drawn with replacement, per class in order.
    assert_eq!(t.train_labels, [vec![0i64; 16], vec![1; 16]].concat());
    assert_eq!(t.test_labels, [0, 0, 1, 1]);
    let e = xtail_task(tmp.path(), "eurosat", 2, None, 32, 42).unwrap();
    assert_eq!(e.prompts()[0], "a centered satellite photo of the Forest satellite location.");
    assert_eq!(e.train_labels, [0, 0, 1, 1]);
    let a = xtail_task(tmp.path(), "aircraft", 2, None, 32, 42).unwrap();
    assert_eq!(a.classnames, ["707-320", "A300B4"]);
    assert_eq!(a.prompts()[1], "a photo of a A300B4, a type of aircraft.");
    assert_eq!(a.test_labels, [0, 1]);
    let x = a.test_images.batch(&[0, 1], None).unwrap();
    assert_eq!(x.size(), [2, 3, 32, 32]);
    let m = xtail_task(tmp.path(), "mnist", 2, None, 32, 42).unwrap();
    assert_eq!(m.prompts()[0], "a photo of the number: \"number: \"0 - zero\"\".");
    assert_eq!((m.train_labels.len(), m.test_labels.len()), (20, 10));
    // Seeded: same seed, same shots; the seed is per dataset.
    let t2 = xtail_task(tmp.path(), "eurosat", 2, None, 32, 42).unwrap();
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
    let e = xtail_tasks(tmp.path(), &keys, 16, None, 32, 1).unwrap_err().to_string();
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
    assert!(e.contains("`imagenet` is not an X-TAIL dataset; valid: aircraft, caltech101"), "{e}");
}
