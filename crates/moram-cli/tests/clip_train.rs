//! `moram train` on CLIP image domains from folders (real PNG/JPEG files) with a tiny random CLIP
//! checkpoint on disk: X-TAIL's loss and task-agnostic evaluation from the command line.

use moram_cl::synthetic::{write_image_folders, write_mini_xtail_root, write_tiny_clip};
use std::path::Path;
use std::process::{Command, Output};

/// `moram --threads 1 -q train --config CONFIG --out OUT --set S ...`.
fn train(config: &Path, out: &Path, sets: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moram"));
    cmd.args(["--threads", "1", "-q", "train", "--config"]).arg(config).arg("--out").arg(out);
    for set in sets {
        cmd.args(["--set", set]);
    }
    cmd.output().unwrap()
}

/// A temporary folder, or a kept one when `MORAM_KEEP_TEST_DIR` is set (to look at the figures).
struct KeepDir(Option<std::path::PathBuf>, tempfile::TempDir);

impl KeepDir {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(self.1.path())
    }
}

#[test]
fn clip_sequence_from_image_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let tmp = KeepDir(std::env::var_os("MORAM_KEEP_TEST_DIR").map(std::path::PathBuf::from), tmp);
    write_tiny_clip(&tmp.path().join("clip"), 5).unwrap();
    for (i, (task, classes)) in
        [("pets", ["cat", "dog", "owl"]), ("cars", ["van", "bus", "car"]), ("trees", ["oak", "elm", "fir"])]
            .iter()
            .enumerate()
    {
        write_image_folders(&tmp.path().join("data").join(task), classes, 6, i as u64).unwrap();
    }
    let config = r#"
name = "clip-folders"
seed = 1
[method]
name = "moram"
profile = "xtail"
r = 4
top_k = 4
[optimizer]
lr = 0.005
[training]
iterations = 3
batch_size = 6
[evaluation]
batch_size = 8
[model]
kind = "clip"
path = "clip"
targets = { modules = ["q", "v"] }
[data]
format = "folders"
dir = "data"
tasks = ["pets", "cars", "trees"]
shots = 4
"#;
    let cfg = tmp.path().join("run.toml");
    std::fs::write(&cfg, config).unwrap();
    let out = tmp.path().join("out");
    let o = train(&cfg, &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let matrix = results["state"]["matrix"].as_array().unwrap();
    assert_eq!(matrix.len(), 3);
    // 2 test images per class, 3 classes: every score is a multiple of 100/6.
    for v in matrix.iter().flat_map(|r| r.as_array().unwrap()) {
        let k = v.as_f64().unwrap() * 6.0 / 100.0;
        assert!((k - k.round()).abs() < 1e-9, "{v}");
    }
    assert!(results["summary"]["xtail_official"]["average"].is_number());

    // eval, viz (with per-patch maps) and prune work on CLIP runs too.
    let moram = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_moram")).args(["--threads", "1", "-q"]).args(args).arg(&out).output().unwrap()
    };
    let o = moram(&["eval"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("equal to the run's stored row"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = moram(&["viz", "--examples", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let panel = image::open(out.join("figures/patch-map-cars.png")).unwrap();
    // The image and one map per task (3), 32 px each with 4 px gaps, framed by 8 px margins,
    // under a title and one label per panel.
    assert_eq!(panel.width(), 8 + 4 * 36 + 8);
    assert!(panel.height() > 32 + 2 * 20, "{}", panel.height());
    let o = moram(&["prune", "--share", "0.9", "--examples", "4"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("after pruning (0.9)") && text.contains("atom parameters"), "{text}");
    assert!(out.join("adapter-pruned-0.9.safetensors").exists());

    // Image folder problems are listed together, before the model loads.
    std::fs::remove_dir_all(tmp.path().join("data/cars/bus")).unwrap();
    std::fs::create_dir_all(tmp.path().join("data/cars/bus")).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"trees\"]", "\"trees\", \"ghost\"]");
    std::fs::write(&cfg, text).unwrap();
    let o = train(&cfg, &tmp.path().join("o2"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("2 problem(s)")
            && err.contains("class `bus` has 0 image(s)")
            && err.contains("ghost: missing image folder"),
        "{err}"
    );

    // A model kind that cannot learn the data format is refused with a remedy.
    let text = std::fs::read_to_string(&cfg).unwrap().replace("kind = \"clip\"", "kind = \"llm\"");
    std::fs::write(&cfg, text).unwrap();
    let o = train(&cfg, &tmp.path().join("o3"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("data.format")
            && err.contains("Folders data cannot train a Llm model")
            && err.contains("remedy"),
        "{err}"
    );
}

/// `moram train` with `format = "xtail"`: the shipped order-1 config, shrunk with `--set`, on a
/// miniature root in the official layouts (CoOp JSON, aircraft text files, MNIST IDX).
#[test]
fn xtail_sequence_from_the_official_layouts() {
    let tmp = tempfile::tempdir().unwrap();
    write_tiny_clip(&tmp.path().join("clip"), 6).unwrap();
    write_mini_xtail_root(&tmp.path().join("data")).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/xtail/order1-paper.toml");
    let out = tmp.path().join("out");
    let paths = [
        format!("model.path={:?}", tmp.path().join("clip").display().to_string()),
        format!("data.dir={:?}", tmp.path().join("data").display().to_string()),
    ];
    let shrink = [
        r#"data.tasks=["aircraft", "eurosat", "mnist"]"#,
        "training.iterations=2",
        "training.batch_size=8",
        "method.r=2",
        "method.top_k=2",
    ];
    let o = train(&config, &out, &[&paths[..], &shrink.map(String::from)[..]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["state"]["task_names"], serde_json::json!(["aircraft", "eurosat", "mnist"]));
    assert!(results["summary"]["xtail_official"]["last"].is_number());
    // The missing datasets of the full order are all named at once.
    let o = train(&config, &tmp.path().join("o2"), &paths);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("6 dataset(s) unusable"), "{err}");
    for k in ["dtd", "oxford_flowers", "food101", "oxford_pets", "stanford_cars", "sun397"] {
        assert!(err.contains(&format!("{k}: ")), "{k} not named: {err}");
    }
}
