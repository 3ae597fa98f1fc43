//! `moram study` end to end on a tiny random LLaMA: a 2 methods x 2 seeds grid, its report with
//! intervals and paired differences, the figure, continuing a study, `--report-only`, bad files.

use moram_cl::study::StudyReport;
use moram_cl::synthetic::{write_tiny_llama, write_trace_tasks, TinyLlama};
use std::path::Path;
use std::process::{Command, Output};

fn moram(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moram")).args(["--threads", "1", "-q"]).args(args).output().unwrap()
}

fn setup(root: &Path) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    write_tiny_llama(&root.join("model"), &repo.join("tests/fixtures/llm/tokenizer"), TinyLlama::default(), 7).unwrap();
    write_trace_tasks(&root.join("data"), &[("A", "last-word"), ("B", "count")], 16, 8, 11).unwrap();
    let base = r#"
name = "tiny"
[method]
name = "moram"
profile = "trace_paper"
r = 2
top_k = 2
[optimizer]
kind = "adam"
lr = 0.01
schedule = "constant"
[training]
iterations = 6
batch_size = 4
micro_batch_size = 4
[diagnostics]
examples = 4
[generation]
max_new_tokens = 3
max_prompt_tokens = 64
max_answer_tokens = 16
[model]
kind = "llm"
path = "model"
targets = { modules = ["q_proj", "v_proj"] }
[data]
format = "trace"
dir = "data"
tasks = ["A", "B"]
eval_split = "eval"
"#;
    std::fs::write(root.join("base.toml"), base).unwrap();
    let study = r#"
name = "tiny-study"
base = "base.toml"
methods = ["moram-novel-routing", "seq-lora"]
seeds = [1, 2]

[method_set]
"seq-lora" = ["optimizer.lr=0.02"]
"#;
    std::fs::write(root.join("study.toml"), study).unwrap();
}

fn report(dir: &Path) -> StudyReport {
    serde_json::from_str(&std::fs::read_to_string(dir.join("study.json")).unwrap()).unwrap()
}

/// `report` without the wall-clock times, which differ between two trainings of the same runs.
fn untimed(dir: &Path) -> StudyReport {
    let mut r = report(dir);
    for c in &mut r.cells {
        c.seconds_per_task = None;
        for run in &mut c.runs {
            run.seconds_per_task = 0.0;
        }
    }
    r
}

#[test]
fn a_study_runs_every_cell_reports_intervals_and_continues() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let study = tmp.path().join("study.toml");
    let out = tmp.path().join("out");
    let o = moram(&["study", study.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r.tasks, ["A", "B"]);
    assert_eq!(r.baseline.as_deref(), Some("seq-lora"));
    assert_eq!(r.cells.len(), 2);
    for c in &r.cells {
        assert_eq!((c.finished, c.planned), (2, 2), "{}", c.method);
        assert_eq!(c.op.n, 2);
        // Two seeds: the interval is t(0.975, 1) = 12.706 times the standard error.
        let ops: Vec<f64> = c.runs.iter().map(|m| m.op).collect();
        let se = (ops[0] - ops[1]).abs() / 2.0;
        assert!((c.op.ci95.unwrap() - 12.706 * se).abs() < 1e-9, "{:?} {ops:?}", c.op);
        assert!((c.op.mean - (ops[0] + ops[1]) / 2.0).abs() < 1e-12);
    }
    let novel = r.cells.iter().find(|c| c.method == "moram-novel-routing").unwrap();
    let seq = r.cells.iter().find(|c| c.method == "seq-lora").unwrap();
    assert!(novel.leakage.is_some() && seq.leakage.is_none(), "leakage only where there is routing");
    assert!(seq.op_vs_baseline.is_none());
    // Paired by seed: the mean difference equals the difference of the means.
    let d = novel.op_vs_baseline.unwrap();
    assert!((d.mean - (novel.op.mean - seq.op.mean)).abs() < 1e-9);
    // Each run is an ordinary run folder with its own config (the method override applied).
    let cfg = std::fs::read_to_string(out.join("base/seq-lora/seed-2/config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.02") && cfg.contains("seed = 2") && cfg.contains("\"seq-lora\""), "{cfg}");
    let md = std::fs::read_to_string(out.join("study.md")).unwrap();
    assert!(md.contains("| moram-novel-routing | 2/2 |") && md.contains("Mean matrix, `seq-lora`"), "{md}");
    let png = image::open(out.join("study.png")).unwrap();
    assert!(png.width() > 100 && png.height() > 100);

    // Running it again trains nothing and reports the same.
    let before = std::fs::read_to_string(out.join("base/seq-lora/seed-1/state.json")).unwrap();
    let o = moram(&["study", study.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("base/seq-lora/seed-1/state.json")).unwrap(), before);
    assert_eq!(report(&out), r);

    // A study with a third seed reports the finished ones only (--report-only trains nothing).
    std::fs::write(&study, std::fs::read_to_string(&study).unwrap().replace("seeds = [1, 2]", "seeds = [1, 2, 3]"))
        .unwrap();
    let o = moram(&["study", study.to_str().unwrap(), "--out", out.to_str().unwrap(), "--report-only"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!out.join("base/seq-lora/seed-3").exists());
    assert!(report(&out).cells.iter().all(|c| c.finished == 2 && c.planned == 3));

    // The file as it was, grown from the command line: --seeds 1-3 --methods seq-lora trains
    // seq-lora's seed 3 only, reports its three seeds, and records the grid it studied.
    std::fs::write(&study, std::fs::read_to_string(&study).unwrap().replace("seeds = [1, 2, 3]", "seeds = [1, 2]"))
        .unwrap();
    let args = ["--out", out.to_str().unwrap(), "--seeds", "1-3", "--methods", "seq-lora"];
    let o = moram(&[&["study", study.to_str().unwrap()][..], &args].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(out.join("base/seq-lora/seed-1/state.json")).unwrap(), before);
    assert!(!out.join("base/moram-novel-routing/seed-3").exists());
    let cfg = std::fs::read_to_string(out.join("base/seq-lora/seed-3/config.toml")).unwrap();
    assert!(cfg.contains("lr = 0.02") && cfg.contains("seed = 3"), "{cfg}");
    let grown = report(&out);
    assert_eq!(grown.cells.len(), 1);
    assert_eq!((grown.cells[0].method.as_str(), grown.cells[0].finished, grown.cells[0].planned), ("seq-lora", 3, 3));
    let seq_two = &seq.runs;
    assert_eq!(&grown.cells[0].runs[..2], &seq_two[..], "seeds 1 and 2 are the finished runs");
    let written = std::fs::read_to_string(out.join("study.toml")).unwrap();
    assert!(written.contains("methods = [\"seq-lora\"]") && written.contains("seeds = [1, 2, 3]"), "{written}");
    // The written grid is itself a study file that reports the same from the output folder.
    let o =
        moram(&["study", out.join("study.toml").to_str().unwrap(), "--out", out.to_str().unwrap(), "--report-only"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(report(&out), grown);
    // A bad seed list names the flag.
    let o = moram(&["study", study.to_str().unwrap(), "--out", out.to_str().unwrap(), "--seeds", "3-1"]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("--seeds") && stderr.contains("remedy: give seeds as"), "{stderr}");
}

/// The same grid on two worker processes (one thread each) reports exactly what one run after
/// another in one process reports; a study stopped half way (here: its time budget) continues
/// on workers, resuming the runs with finished tasks.
#[test]
fn a_study_on_workers_equals_one_run_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let study = tmp.path().join("study.toml");
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    let o = moram(&["study", study.to_str().unwrap(), "--out", one.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A run with its first task done (copied from the finished one, cut back to that task) is
    // resumed by its worker.
    let partial = two.join("base/seq-lora/seed-1");
    std::fs::create_dir_all(&partial).unwrap();
    for f in ["config.toml", "adapter-task0.safetensors", "metrics.jsonl"] {
        std::fs::copy(one.join("base/seq-lora/seed-1").join(f), partial.join(f)).unwrap();
    }
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("base/seq-lora/seed-1/state.json")).unwrap()).unwrap();
    for key in ["matrix", "tasks", "adapters"] {
        state[key].as_array_mut().unwrap().truncate(1);
    }
    std::fs::write(partial.join("state.json"), state.to_string()).unwrap();
    let o = moram(&["study", study.to_str().unwrap(), "--out", two.to_str().unwrap(), "--jobs", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(untimed(&two), untimed(&one), "the same numbers, the times aside");
    let log = std::fs::read_to_string(partial.join("train.log")).unwrap();
    assert!(log.contains("resuming"), "{log}");
    assert!(two.join("base/moram-novel-routing/seed-2/train.log").exists());
}

#[test]
fn bad_study_files_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let cases = [
        ("methods = [\"moram-novel-routing\", \"seq-lora\"]", "methods = []", "methods"),
        ("seeds = [1, 2]", "seeds = [1, 1]", "seed 1 appears twice"),
        ("\"seq-lora\" = [", "\"moe-lora\" = [", "method_set"),
        ("name = \"tiny-study\"", "name = \"tiny-study\"\nsurprise = 1", "surprise"),
        ("methods = [\"moram-novel-routing\", \"seq-lora\"]", "methods = [\"moram-magic\"]", "moram-magic"),
    ];
    let text = std::fs::read_to_string(tmp.path().join("study.toml")).unwrap();
    for (from, to, expect) in cases {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, text.replace(from, to)).unwrap();
        let o = moram(&["study", path.to_str().unwrap(), "--out", tmp.path().join("o").to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(expect) && err.contains("remedy:"), "{to}: {err}");
    }
    let o = moram(&["study", tmp.path().join("missing.toml").to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("missing.toml"));
}

#[test]
fn cargo_xtask_study_passes_its_arguments_to_moram_study() {
    let tmp = tempfile::tempdir().unwrap();
    setup(tmp.path());
    let out = tmp.path().join("xout");
    let o = Command::new(env!("CARGO"))
        .args(["run", "-q", "-p", "xtask", "--", "study", "--debug", "--threads", "1", "--study"])
        .arg(tmp.path().join("study.toml"))
        .arg("--out")
        .arg(&out)
        .args(["--set", "training.iterations=2", "--max-minutes", "30"])
        .args(["--methods", "moram-novel-routing", "--seeds", "2-3"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r.cells.len(), 1, "{r:?}");
    assert_eq!((r.cells[0].method.as_str(), r.cells[0].finished), ("moram-novel-routing", 2), "{r:?}");
    assert!(!out.join("base/moram-novel-routing/seed-1").exists() && !out.join("base/seq-lora").exists());
    let cfg = std::fs::read_to_string(out.join("base/moram-novel-routing/seed-3/config.toml")).unwrap();
    assert!(cfg.contains("iterations = 2"), "{cfg}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("# Study tiny-study"));
}
