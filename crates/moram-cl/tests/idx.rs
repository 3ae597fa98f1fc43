//! IDX image sets (plain and gzip) as class-incremental CLIP tasks; bad files named; and the real
//! Fashion-MNIST from Debian's `dataset-fashion-mnist` when `cargo xtask setup` fetched it.

use moram_cl::data::idx::{idx_tasks, read_idx};
use std::io::Write;
use std::path::Path;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `n` 28x28 images per class for 4 classes; image pixels all equal to `10 * class + i`.
fn write_set(dir: &Path, prefix: &str, n: usize, compress: bool) {
    let (mut px, mut labels) = (Vec::new(), Vec::new());
    for c in 0..4u8 {
        for i in 0..n as u8 {
            px.extend(std::iter::repeat_n(10 * c + i, 28 * 28));
            labels.push(c);
        }
    }
    let total = labels.len() as u32;
    let files = [
        (format!("{prefix}-images-idx3-ubyte"), idx_bytes(&[total, 28, 28], &px)),
        (format!("{prefix}-labels-idx1-ubyte"), idx_bytes(&[total], &labels)),
    ];
    for (name, bytes) in files {
        if compress {
            std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn class_incremental_tasks_from_idx() {
    let tmp = tempfile::tempdir().unwrap();
    write_set(tmp.path(), "train", 5, true);
    write_set(tmp.path(), "t10k", 3, false);
    let a = read_idx(&tmp.path().join("train-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!((a.dims.clone(), a.data[..6].to_vec()), (vec![20], vec![0, 0, 0, 0, 0, 1]));
    let names: Vec<String> = ["first", "second"].iter().map(|s| s.to_string()).collect();
    let classes: Vec<String> = ["zero", "one", "two", "three"].iter().map(|s| s.to_string()).collect();
    let tasks = idx_tasks(tmp.path(), &names, &classes, 2, "a photo of a {}.", 4, Some(2), 32, 9).unwrap();
    assert_eq!(tasks.len(), 2);
    assert_eq!(tasks[1].classnames, ["two", "three"]);
    assert_eq!(tasks[1].train_labels, [0, 0, 0, 0, 1, 1, 1, 1]);
    assert_eq!(tasks[1].test_labels, [0, 0, 1, 1]);
    // Test image 0 of task 2 is class 2's first test image: every pixel 20, grey replicated to RGB
    // and normalised with CLIP's statistics.
    let x = tasks[1].test_images.batch(&[0], None).unwrap();
    assert_eq!(x.size(), [1, 3, 32, 32]);
    for (ch, (m, s)) in moram_models::clip::CLIP_MEAN.iter().zip(moram_models::clip::CLIP_STD).enumerate() {
        let want = (20.0 / 255.0 - m) / s;
        let got = x.get(0).get(ch as i64).mean(tch::Kind::Float).double_value(&[]) as f32;
        assert!((got - want).abs() < 1e-5, "channel {ch}: {got} vs {want}");
    }
    let t = tasks[0].train_images.batch(&[0, 7], Some(1)).unwrap();
    assert_eq!(t.size(), [2, 3, 32, 32]);

    // Errors name the file and what is wrong.
    let e = idx_tasks(tmp.path(), &names, &classes[..3], 2, "{}", 4, None, 32, 9).unwrap_err().to_string();
    assert!(e.contains("3 classes do not make 2 tasks of 2"), "{e}");
    std::fs::write(tmp.path().join("bad"), [0u8, 0, 0x0d, 1, 0, 0, 0, 1, 0]).unwrap();
    // Each bad file is a data error that names it.
    let data_error = |name: &str| {
        let err = read_idx(&tmp.path().join(name)).unwrap_err();
        assert!(
            matches!(&err, moram_cl::Error::Data { path, .. } if path.ends_with(name)),
            "{name}: a data error naming the file, got {err:?}"
        );
        err.to_string()
    };
    assert!(data_error("bad").contains("not an IDX file"));
    std::fs::write(tmp.path().join("short"), idx_bytes(&[5, 2], &[1, 2, 3])).unwrap();
    let e = data_error("short");
    assert!(e.contains("short: dimensions [5, 2] need 10 bytes of data, found 3"), "{e}");
    std::fs::write(tmp.path().join("broken.gz"), [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
    assert!(data_error("broken.gz").contains("corrupt gzip"));
    std::fs::remove_file(tmp.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let e = idx_tasks(tmp.path(), &names, &classes, 2, "{}", 4, None, 32, 9).unwrap_err().to_string();
    assert!(e.contains("t10k-labels-idx1-ubyte: missing IDX file"), "{e}");
}

/// The real Fashion-MNIST (Debian `dataset-fashion-mnist`, fetched by `cargo xtask setup`).
#[test]
fn real_fashion_mnist() {
    let Some(dir) = moram_assets::test_asset("fashion-mnist") else { return };
    let labels = read_idx(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(labels.dims, [10000]);
    let mut counts = [0usize; 10];
    for &l in &labels.data {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    let classes: Vec<String> =
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let names: Vec<String> = (0..5).map(|t| format!("fmnist-{t}")).collect();
    let tasks = idx_tasks(&dir, &names, &classes, 2, "a photo of a {}.", 16, Some(50), 224, 42).unwrap();
    assert_eq!(tasks[4].classnames, ["Bag", "Ankle boot"]);
    assert_eq!((tasks[0].train_labels.len(), tasks[0].test_labels.len()), (32, 100));
    let x = tasks[2].test_images.batch(&[0, 99], None).unwrap();
    assert_eq!(x.size(), [2, 3, 224, 224]);
    // As set up, the folder is also an extra X-TAIL domain (classes.txt, template.txt).
    let o = moram_cl::data::xtail::XtailOptions {
        shots: 16,
        test_per_class: Some(10),
        size: 224,
        seed: 1,
        shot_cache: None,
    };
    let t = moram_cl::data::xtail::xtail_task(dir.parent().unwrap(), "fashion-mnist", &o).unwrap();
    assert_eq!(t.classnames.len(), 10);
    assert_eq!(t.prompts()[9], "a photo of a Ankle boot, a type of clothing.");
    assert_eq!((t.train_labels.len(), t.test_labels.len()), (160, 100));
}
