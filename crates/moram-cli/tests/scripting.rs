//! A run as a script or batch job sees it: `moram -q train` keeps its log in the run folder with
//! progress lines (`training.log_every`), Ctrl-C exits 130 keeping finished tasks, bad input
//! exits 2.

use moram_cl::synthetic::write_tiny_run;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn moram() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moram"));
    c.args(["--threads", "1", "-q"]);
    c
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn quiet_training_logs_to_the_run_folder_and_exits_with_meaningful_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_tiny_run(tmp.path(), "moram", 6, &["LastWord", "Half"]).unwrap();
    let out = tmp.path().join("out");
    let o = moram()
        .args(["train", "--set", "training.log_every=2", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // -q: nothing on stderr; the run folder's train.log has the progress lines, plain text.
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    let log = read(&out.join("train.log"));
    for step in ["LastWord step 2/6: loss ", "LastWord step 6/6: loss ", "Half step 4/6: loss "] {
        assert!(log.contains(step), "{step} missing from:\n{log}");
    }
    let line = log.lines().find(|l| l.contains("Half step 6/6")).unwrap();
    assert!(line.contains("tokens/s") && line.contains("eta 0 s") && line.contains(" INFO "), "{line}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log file");
    assert_eq!(log.lines().filter(|l| l.contains(": loss ")).count(), 6, "{log}");

    // Bad input: exit status 2, and the message names the key.
    let o = moram().args(["train", "--set", "training.batch_sizes=4", "--config"]).arg(&config).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("batch_sizes"));
    let o = moram().args(["train", "--config"]).arg(&config).arg("--out").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a finished run's folder is not overwritten");

    // Ctrl-C (SIGINT) while the second task trains: exit 130, the first task kept, resumable.
    let long = tmp.path().join("long");
    let mut child = moram()
        .args(["train", "--set", "training.iterations=400", "--set", "training.log_every=1", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&long)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !read(&long.join("train.log")).contains("Half step 3/400") {
        assert!(start.elapsed() < Duration::from_secs(600), "the second task never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let state: serde_json::Value = serde_json::from_str(&read(&long.join("state.json"))).unwrap();
    assert_eq!(state["matrix"].as_array().unwrap().len(), 1, "the finished task is kept");
    assert!(
        read(&long.join("train.log")).contains("error: interrupted in task 1 (`Half`)"),
        "{}",
        read(&long.join("train.log"))
    );
}
