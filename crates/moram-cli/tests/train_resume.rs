//! `moram train` / `moram resume` through the built binary on a tiny random LLaMA: a run killed
//! (SIGKILL) during task 2 of 3 and resumed ends with exactly the results of an uninterrupted run.

use moram_cl::synthetic::write_tiny_run_with;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn moram() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moram"));
    c.args(["--threads", "1", "-q"]);
    c
}

/// The tests' tiny run ([`write_tiny_run_with`]) over three tasks of 150 steps, long enough to
/// be killed in the middle of the second; q/v adapted, no dropout.
fn setup(root: &Path) -> std::path::PathBuf {
    let sets = ["seed=9", "method.dropout=0.0", "model.targets.modules=[\"q_proj\", \"v_proj\"]"];
    write_tiny_run_with(root, "moram", 150, &["LastWord", "Count", "Half"], &sets).unwrap()
}

fn results(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

fn tasks_done(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("state.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["matrix"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn killed_during_task_two_then_resumed_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let full = tmp.path().join("full");
    let out = moram().arg("train").arg("--config").arg(&config).arg("--out").arg(&full).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 task(s) finished"));

    let cut = tmp.path().join("cut");
    let mut child = moram().arg("train").arg("--config").arg(&config).arg("--out").arg(&cut).spawn().unwrap();
    let start = Instant::now();
    while tasks_done(&cut) < 1 {
        assert!(start.elapsed() < Duration::from_secs(120), "task 1 never finished");
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(tasks_done(&cut), 1, "killed during task 2");
    let steps = std::fs::read_to_string(cut.join("metrics.jsonl")).unwrap();
    assert!(steps.lines().count() >= 150, "task 1's steps are logged");

    let out = moram().arg("resume").arg(&cut).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (a, b) = (results(&full), results(&cut));
    assert_eq!(a["state"]["matrix"], b["state"]["matrix"]);
    let losses = |v: &serde_json::Value| -> Vec<f64> {
        v["state"]["tasks"].as_array().unwrap().iter().map(|t| t["final_loss"].as_f64().unwrap()).collect()
    };
    assert_eq!(losses(&a), losses(&b));
    for t in 0..3 {
        let load = |d: &Path| {
            moram_core::AdapterFile::load(d.join(format!("adapter-task{t}.safetensors")), tch::Device::Cpu).unwrap()
        };
        let (x, y) = (load(&full), load(&cut));
        for layer in x.layer_names() {
            let (p, q) = (x.bank(layer).unwrap(), y.bank(layer).unwrap());
            assert!(p.keys_tensor().equal(&q.keys_tensor()) && p.values_tensor().equal(&q.values_tensor()));
        }
        // Equal adapters are equal files, so runs can be compared by checksum.
        let file = |d: &Path| std::fs::read(d.join(format!("adapter-task{t}.safetensors"))).unwrap();
        assert!(file(&full) == file(&cut), "adapter-task{t}.safetensors differs in its bytes");
    }
}

/// A run whose paths were given relative to the working directory (as `moram demo` gives them)
/// still works from anywhere: `eval`, `resume` and a rerun of its saved config, started elsewhere.
#[test]
fn a_run_folder_works_from_any_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    // The data next to the run, as the demo lays it out (runs/demo/data beside runs/demo/moram).
    std::fs::create_dir_all(tmp.path().join("runs")).unwrap();
    std::fs::rename(tmp.path().join("data"), tmp.path().join("runs/data")).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = moram()
        .current_dir(tmp.path())
        .args(["train", "--config"])
        .arg(&config)
        .args(["--set", "data.dir=runs/data", "--set", "model.path=model", "--set", "training.iterations=4"])
        .args(["--set", "data.tasks=[\"LastWord\", \"Count\"]", "--out", "runs/rel"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = tmp.path().join("runs/rel");
    let stored = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(stored.contains("dir = \"../data\""), "the data beside the run is stored relative to it:\n{stored}");
    let out = moram().current_dir(elsewhere.path()).arg("eval").arg(&run).output().unwrap();
    assert!(out.status.success(), "eval from elsewhere: {}", String::from_utf8_lossy(&out.stderr));
    let rerun = tmp.path().join("rerun");
    let out = moram()
        .current_dir(elsewhere.path())
        .args(["train", "--config"])
        .arg(run.join("config.toml"))
        .arg("--out")
        .arg(&rerun)
        .output()
        .unwrap();
    assert!(out.status.success(), "rerun of the saved config: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(results(&run)["state"]["matrix"], results(&rerun)["state"]["matrix"]);
    // Moving the runs folder together with its data keeps the run usable.
    let moved = tmp.path().join("moved");
    std::fs::create_dir_all(&moved).unwrap();
    std::fs::rename(tmp.path().join("runs"), moved.join("runs")).unwrap();
    let out = moram().current_dir(elsewhere.path()).arg("eval").arg(moved.join("runs/rel")).output().unwrap();
    assert!(out.status.success(), "eval after moving: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn train_reports_config_errors_by_key_and_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let text = std::fs::read_to_string(&config).unwrap().replace("batch_size = 4", "batch_size = 4\nbatchsize = 4");
    std::fs::write(&config, text).unwrap();
    let out = moram().arg("train").arg("--config").arg(&config).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown field `batchsize`") && err.contains("run.toml"), "{err}");
    assert!(err.contains("remedy: fix the key named above"), "{err}");

    let out = moram().args(["train", "--config", "/nonexistent/run.toml"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/nonexistent/run.toml"), "{err}");
    assert!(err.contains("remedy: check the path"), "{err}");

    let out = moram().arg("resume").arg(tmp.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is not a moram run folder"), "{err}");

    let text =
        std::fs::read_to_string(&config).unwrap().replace("batchsize = 4\n", "").replace("\"Half\"]", "\"Missing\"]");
    std::fs::write(&config, text).unwrap();
    let out =
        moram().arg("train").arg("--config").arg(&config).arg("--out").arg(tmp.path().join("o")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("1 problem(s)") && err.contains("Missing: missing task folder"),
        "{err}"
    );
}

#[test]
fn ctrl_c_stops_at_a_step_boundary_and_keeps_finished_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let dir = tmp.path().join("int");
    let child = moram()
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while tasks_done(&dir) < 1 {
        assert!(start.elapsed() < Duration::from_secs(120), "task 1 never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("interrupted in task 1 (`Count`)") && err.contains("can be resumed"), "{err}");
    assert!(err.contains("remedy: `moram resume DIR` continues"), "{err}");
    assert_eq!(tasks_done(&dir), 1);
}

/// Log lines written to a pipe (or a file) are plain text: colour only on a terminal.
#[test]
fn logs_to_a_pipe_have_no_colour_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_moram"))
        .args(["--threads", "1", "train", "--config"])
        .arg(&config)
        .args(["--set", "training.iterations=2", "--set", "data.tasks=[\"LastWord\"]", "--out"])
        .arg(tmp.path().join("logged"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("INFO") && log.contains("finished; checkpoint"), "{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a piped log: {log:?}");
}
