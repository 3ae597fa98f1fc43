//! CLIP preprocessing against open_clip 3.3.0 / torchvision / Pillow
//! (`tests/fixtures/clip/generate_preprocess.py`): the 8-bit pixels after resize and crop must be
//! identical (SHA-256) and the normalised tensor equal within 1e-5, on synthetic images and on the
//! scikit-image photos fetched by `cargo xtask setup`.

mod common;

use moram_models::clip::preprocess::{eval_pixels, normalize_pixels, train_pixels, Rgb8};
use moram_models::clip::{load_eval_batch, load_train_batch};
use rand::SeedableRng;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    source: String,
    file: String,
    pixels_sha256: String,
    samples: Vec<(usize, usize, usize, f64)>,
    sum: f64,
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/clip")
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn eval_preprocessing_matches_the_reference_pixel_for_pixel() -> anyhow::Result<()> {
    let cases: Cases = serde_json::from_str(&std::fs::read_to_string(fixtures().join("preprocess_cases.json"))?)?;
    let mut checked = 0;
    for case in &cases.cases {
        let path = match case.source.as_str() {
            "fixture" => fixtures().join("images").join(&case.file),
            _ => match common::asset("skimage", &case.file) {
                Some(p) => p,
                None => continue,
            },
        };
        let img = Rgb8::open(&path)?;
        let pixels = eval_pixels(&img, 224);
        assert_eq!((pixels.width, pixels.height), (224, 224));
        assert_eq!(hex(&pixels.data), case.pixels_sha256, "{}: 8-bit pixels differ from the reference", case.name);
        let t = normalize_pixels(&pixels);
        for &(c, y, x, want) in &case.samples {
            let got = f64::from(t[c * 224 * 224 + y * 224 + x]);
            assert!((got - want).abs() <= 1e-5, "{} [{c},{y},{x}]: {got} vs {want}", case.name);
        }
        let sum: f64 = t.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (sum - case.sum).abs() <= 1e-6 * case.sum.abs().max(1.0) * 10.0,
            "{}: sum {sum} vs {}",
            case.name,
            case.sum
        );
        checked += 1;
    }
    assert!(checked >= 6, "the synthetic cases always run");
    println!("checked {checked} of {} cases", cases.cases.len());
    Ok(())
}

#[test]
fn batches_decode_in_parallel_and_name_bad_files() -> anyhow::Result<()> {
    let dir = fixtures().join("images");
    let paths = vec![dir.join("tiny_upscale.png"), dir.join("grey.png"), dir.join("mild_down.png")];
    let batch = load_eval_batch(&paths, 224)?;
    assert_eq!(batch.size(), vec![3, 3, 224, 224]);
    let single = normalize_pixels(&eval_pixels(&Rgb8::open(&paths[1])?, 224));
    assert_eq!(Vec::<f32>::try_from(batch.get(1).flatten(0, -1))?, single);

    let tmp = tempfile::tempdir()?;
    let not_image = tmp.path().join("notes.png");
    std::fs::write(&not_image, b"this is not a png")?;
    let err = load_eval_batch(&[paths[0].clone(), not_image.clone()], 224).unwrap_err().to_string();
    assert!(err.contains("notes.png") && err.contains("not a decodable image"), "{err}");
    let err = load_eval_batch(&[tmp.path().join("absent.png")], 224).unwrap_err().to_string();
    assert!(err.contains("absent.png"), "{err}");
    Ok(())
}

#[test]
fn train_crops_are_reproducible_random_resized_crops() -> anyhow::Result<()> {
    let img = Rgb8::open(&fixtures().join("images/half_pixel_crop.png"))?;
    let crop = |seed| train_pixels(&img, 224, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let a = crop(1);
    assert_eq!((a.width, a.height), (224, 224));
    assert_eq!(a, crop(1), "same seed, same crop");
    assert_ne!(a, crop(2), "different seeds, different crops");
    let paths = vec![fixtures().join("images/half_pixel_crop.png"); 4];
    let b1 = load_train_batch(&paths, 224, 7)?;
    let b2 = load_train_batch(&paths, 224, 7)?;
    assert!(b1.equal(&b2));
    assert!(!b1.get(0).equal(&b1.get(1)), "each image gets its own crop");
    Ok(())
}
