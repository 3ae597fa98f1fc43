//! `moram demo` end to end on a tiny random LLaMA and BBC- and WordNet-shaped folders (the real
//! run uses SmolLM2, BBC News and WordNet from `cargo xtask setup`): the three methods, the
//! comparison with its intervals, the figures.

use moram_cl::synthetic::{write_fake_bbc, write_fake_wordnet, write_tiny_llama, TinyLlama};
use std::path::Path;
use std::process::Command;

#[test]
fn demo_runs_three_methods_and_writes_the_comparison() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = tmp.path().join("tiny");
    write_tiny_llama(&model, &repo.join("tests/fixtures/llm/tokenizer"), TinyLlama::default(), 3).unwrap();
    write_fake_bbc(&tmp.path().join("assets/bbc"), 30).unwrap();
    write_fake_wordnet(&tmp.path().join("assets/wordnet")).unwrap();
    let out = tmp.path().join("runs/demo");
    let run = |out: &Path, jobs: &str| {
        Command::new(env!("CARGO_BIN_EXE_moram"))
            .args(["--threads", "1", "-q", "demo", "--jobs", jobs, "--assets"])
            .arg(tmp.path().join("assets"))
            .arg("--out")
            .arg(out)
            .arg("--set")
            .arg(format!("model.path={:?}", model.display().to_string()))
            .args(["--set", "model.targets.layers=[0, 1]", "--set", "training.iterations=2"])
            .args(["--set", "training.max_eval_examples=4", "--set", "generation.max_new_tokens=3"])
            .output()
            .unwrap()
    };
    // The three methods as three workers at once.
    let o = run(&out, "3");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for needle in [
        "## seq-lora",
        "## moram",
        "## moram-task-gated",
        "OP (mean of the last row)",
        "BWT, paper Eq. 10",
        "learning (mean of the diagonal)",
        "Differences from seq-lora",
        "bbc-topic",
        "wordnet-category",
        "wordnet-verb-base",
        "bbc-desk",
        "routing leakage after the last task",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    for f in [
        "comparison.md",
        "comparison.json",
        "matrix-moram.png",
        "matrix-seq-lora.png",
        "matrix-moram-task-gated.png",
        "routing-leakage-moram.png",
        "routing-leakage-moram-task-gated.png",
        "moram/results.json",
        "seq-lora/state.json",
        "moram-task-gated/outputs/after-task3/bbc-desk.json",
    ] {
        assert!(out.join(f).exists(), "{f}");
    }
    assert!(!out.join("routing-leakage-seq-lora.png").exists(), "SeqLoRA has no routing");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 3);
    assert_eq!(json["baseline"].as_array().unwrap().len(), 4);
    // Every statistic has, per method, a value inside its interval, and the differences from
    // SeqLoRA are 0 for SeqLoRA itself (the same examples, paired).
    for row in json["intervals"].as_array().unwrap() {
        for v in row["values"].as_array().unwrap() {
            let (x, lo, hi) = (v["value"].as_f64().unwrap(), v["low"].as_f64().unwrap(), v["high"].as_f64().unwrap());
            assert!(lo <= x + 1e-9 && x <= hi + 1e-9, "{row}");
        }
        assert_eq!(row["vs_first"][0]["value"].as_f64(), Some(0.0), "{row}");
    }
    // Every evaluation example carries its score, from which the intervals are drawn.
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("moram/outputs/after-task1/bbc-topic.json")).unwrap())
            .unwrap();
    assert!(outputs.as_array().unwrap().iter().all(|e| e["score"].as_f64().is_some_and(|s| s == 0.0 || s == 100.0)));
    let png = image::open(out.join("matrix-moram.png")).unwrap();
    // Four cells of at least 72 x 48 px each way, plus the labels' margins.
    assert!(png.width() > 4 * 72 && png.height() > 4 * 48, "{} x {}", png.width(), png.height());

    // `moram report` puts both runs side by side (Markdown to stdout, CSV on request).
    let csv = tmp.path().join("summary.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_moram"))
        .arg("report")
        .arg(out.join("moram"))
        .arg(out.join("seq-lora"))
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        md.contains("demo-moram (moram,")
            && md.contains("demo-seq-lora (seq-lora,")
            && md.contains("| tasks finished | 4/4 | 4/4 |"),
        "{md}"
    );
    // Leakage is reported where there is routing (MoRAM), not for SeqLoRA.
    let leak = md.lines().find(|l| l.starts_with("| routing leakage onto earlier tasks (%) |")).unwrap();
    let cells: Vec<&str> = leak.split('|').map(str::trim).collect();
    assert!(cells[2].parse::<f64>().is_ok_and(|v| (0.0..=100.0).contains(&v)) && cells[3] == "-", "{leak}");
    assert!(md.contains("Routing after task 4"), "{md}");
    // Runs of the same examples get the demo's paired bootstrap comparison, here against MoRAM:
    // the same intervals the demo wrote for MoRAM (same examples, same seeds).
    assert!(
        md.contains("## Comparison (95% intervals over the 4 evaluation examples per task, paired bootstrap)"),
        "{md}"
    );
    assert!(md.contains("Differences from moram ("), "{md}");
    let op = &json["intervals"][0]["values"][1];
    let want = format!(
        "{:.1} [{:.1}, {:.1}]",
        op["value"].as_f64().unwrap(),
        op["low"].as_f64().unwrap(),
        op["high"].as_f64().unwrap()
    );
    let row = md.lines().find(|l| l.starts_with("| OP (mean of the last row) |")).unwrap();
    assert!(row.split('|').nth(2).is_some_and(|c| c.trim() == want), "{row} vs {want}");
    // Parsed back: every record has the label and one field per run, labels with commas included.
    let records: Vec<csv::StringRecord> =
        csv::Reader::from_path(&csv).unwrap().records().collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 10);
    assert!(records.iter().all(|r| r.len() == 3), "{records:?}");
    assert_eq!(&records[1][0], "OP (mean of last row)");
    assert_eq!(&records[2][0], "BWT, paper Eq. 10");
    assert!(records[2][1].parse::<f64>().is_ok(), "{:?}", records[2]);
    let o = Command::new(env!("CARGO_BIN_EXE_moram")).arg("report").arg(tmp.path()).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("has no results.json"));

    // `moram eval` reloads a run's adapter and reproduces its stored row exactly.
    let o = Command::new(env!("CARGO_BIN_EXE_moram"))
        .args(["--threads", "1", "-q", "eval"])
        .arg(out.join("seq-lora"))
        .args(["--after", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        text.contains("after task 2 (wordnet-verb-base)") && text.contains("equal to the run's stored row"),
        "{text}"
    );
    assert!(out.join("seq-lora/eval-after-task2.json").exists());

    // `moram viz` draws the run's figures from activation statistics of every task's data.
    let o = Command::new(env!("CARGO_BIN_EXE_moram"))
        .args(["--threads", "1", "-q", "viz"])
        .arg(out.join("moram"))
        .args(["--examples", "4"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let figs = out.join("moram/figures");
    for f in [
        "accuracy-matrix.png",
        "activation-ratio.png",
        "cumulative-mass.png",
        "atoms-per-layer.png",
        "routing-weight-share.png",
        "routing-leakage.png",
    ] {
        image::open(figs.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(figs.join("figures.json")).unwrap()).unwrap();
    // 4 tasks x 8 atoms per task, 4 tasks' data; every layer needs between 1 and 32 atoms for 99%.
    let ratio = summary["activation_ratio"].as_array().unwrap();
    assert_eq!((ratio.len(), ratio[0].as_array().unwrap().len()), (4, 32));
    assert!(summary["atoms_for_99"].as_array().unwrap().iter().all(|n| (1.0..=32.0).contains(&n.as_f64().unwrap())));
    // The weight-share heatmap has a cell of at least 72 x 48 px per (data task, atoms' task), plus
    // its labels; the bar chart a 24 px bar per layer within 24 px of axis and 8 px of margin.
    let share = image::open(figs.join("routing-weight-share.png")).unwrap();
    assert!(share.width() > 4 * 72 && share.height() > 4 * 48, "{} x {}", share.width(), share.height());
    let bars = image::open(figs.join("atoms-per-layer.png")).unwrap();
    assert!(bars.width() >= summary["layers"].as_array().unwrap().len() as u32 * 24 + 48 + 16);

    // A second demo never overwrites the first; one worker at a time gives the same results
    // (each worker has one thread either way), and every run folder keeps its worker's log.
    let o = run(&out, "1");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let again: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("runs/demo-2/comparison.json")).unwrap())
            .unwrap();
    assert_eq!(again["baseline"], json["baseline"]);
    for (a, b) in again["runs"].as_array().unwrap().iter().zip(json["runs"].as_array().unwrap()) {
        assert_eq!((&a["method"], &a["matrix"]), (&b["method"], &b["matrix"]));
    }
    assert_eq!(again["intervals"], json["intervals"]);
    let log = std::fs::read_to_string(out.join("moram-task-gated/train.log")).unwrap();
    assert!(log.contains("task(s) finished; results in"), "{log}");

    // A worker that fails (an optimiser step that diverges) fails the demo, which names the
    // method and shows the end of its log; the other workers still finish.
    let bad = tmp.path().join("runs/diverging");
    let o = Command::new(env!("CARGO_BIN_EXE_moram"))
        .args(["--threads", "1", "-q", "demo", "--jobs", "2", "--assets"])
        .arg(tmp.path().join("assets"))
        .arg("--out")
        .arg(&bad)
        .arg("--set")
        .arg(format!("model.path={:?}", model.display().to_string()))
        .args(["--set", "model.targets.layers=[0, 1]", "--set", "training.iterations=2"])
        .args(["--set", "training.max_eval_examples=4", "--set", "generation.max_new_tokens=3"])
        .args(["--set", "optimizer.lr=1e30", "--set", "training.clip_grad_norm=1e30"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success()
            && err.contains("runs failed")
            && err.contains("seq-lora (exit status: 1) failed; the end of"),
        "{err}"
    );
    assert!(err.contains("non-finite") || err.contains("NaN"), "{err}");
    assert!(!bad.join("comparison.md").exists());

    // Missing assets: one line of cause, one of remedy.
    let o = Command::new(env!("CARGO_BIN_EXE_moram"))
        .args(["-q", "demo", "--assets"])
        .arg(tmp.path().join("nowhere"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("is missing") && err.contains("remedy: run `cargo xtask setup`"),
        "{err}"
    );
}
