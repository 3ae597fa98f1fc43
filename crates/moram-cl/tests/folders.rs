//! Folder-per-class image domains: both layouts, seeded shots, real PNG/JPEG decoding, errors.

use moram_cl::data::folders::{folder_task, FolderOptions};
use moram_cl::synthetic::write_image_folders;

fn opts(shots: usize) -> FolderOptions {
    FolderOptions { shots, test_per_class: None, template: "a photo of a {}.".into(), size: 32, seed: 7 }
}

#[test]
fn single_folder_layout_is_split_with_seeded_shots() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folders(tmp.path(), &["red_fox", "owl", "cat"], 6, 1).unwrap();
    let t = folder_task("animals", tmp.path(), &opts(4)).unwrap();
    assert_eq!(t.classnames, ["cat", "owl", "red fox"]);
    assert_eq!(t.prompts()[2], "a photo of a red fox.");
    assert_eq!(t.train_labels, [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
    assert_eq!(t.test_labels, [0, 0, 1, 1, 2, 2]);
    let again = folder_task("animals", tmp.path(), &opts(4)).unwrap();
    let paths = |t: &moram_cl::data::ImageTask| match &t.train_images {
        moram_cl::data::Images::Files { paths, .. } => paths.clone(),
        _ => unreachable!(),
    };
    assert_eq!(paths(&t), paths(&again), "seeded");
    // Real decoding through CLIP's transforms (PNG and JPEG files).
    let eval = t.test_images.batch(&[0, 1, 5], None).unwrap();
    assert_eq!(eval.size(), [3, 3, 32, 32]);
    let train = t.train_images.batch(&[0, 11], Some(3)).unwrap();
    assert_eq!(train.size(), [2, 3, 32, 32]);
    assert!(train.isfinite().all().int64_value(&[]) == 1);
    // More shots than images: drawn with replacement, the rest kept for testing.
    let t = folder_task("animals", tmp.path(), &opts(16)).unwrap();
    assert_eq!((t.train_labels.len(), t.test_labels.len()), (48, 3));
}

#[test]
fn train_test_layout_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    write_image_folders(&tmp.path().join("train"), &["a", "b"], 3, 2).unwrap();
    write_image_folders(&tmp.path().join("test"), &["a", "b"], 2, 3).unwrap();
    let t = folder_task("ab", tmp.path(), &FolderOptions { test_per_class: Some(1), ..opts(2) }).unwrap();
    assert_eq!((t.train_labels.clone(), t.test_labels.clone()), (vec![0, 0, 1, 1], vec![0, 1]));

    let err = folder_task("x", &tmp.path().join("missing"), &opts(2)).unwrap_err();
    assert!(matches!(&err, moram_cl::Error::Data { path, .. } if path.ends_with("missing")), "{err:?}");
    assert!(err.to_string().contains("missing image folder"), "{err}");
    std::fs::create_dir_all(tmp.path().join("empty")).unwrap();
    let err = folder_task("x", &tmp.path().join("empty"), &opts(2)).unwrap_err();
    assert!(matches!(&err, moram_cl::Error::Data { path, .. } if path.ends_with("empty")), "{err:?}");
    assert!(err.to_string().contains("no class folders"), "{err}");
    // A class with one image has nothing left for testing; a class folder without images fails.
    let d = tmp.path().join("thin");
    write_image_folders(&d, &["one"], 1, 4).unwrap();
    std::fs::create_dir_all(d.join("none")).unwrap();
    let e = folder_task("x", &d, &opts(2)).unwrap_err().to_string();
    assert!(e.contains("class `none` has 0 image(s); at least 2") && e.contains("class `one` has 1 image(s)"), "{e}");
    // A corrupt image is named when its batch is read.
    let c = tmp.path().join("corrupt");
    write_image_folders(&c, &["a"], 3, 5).unwrap();
    std::fs::write(c.join("a/000.png"), b"not a png").unwrap();
    let t = folder_task("c", &c, &FolderOptions { shots: 1, ..opts(1) }).unwrap();
    let all: Vec<usize> = (0..t.test_labels.len()).collect();
    let err = t.test_images.batch(&all, None).err().map(|e| e.to_string()).unwrap_or_default()
        + &t.train_images.batch(&[0], None).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("000.png") && err.contains("not a decodable image"), "{err}");
}
