//! The built `moram` binary runs (libtorch found through the rpath) and reports user errors clearly.

use std::process::Command;

fn moram() -> Command {
    Command::new(env!("CARGO_BIN_EXE_moram"))
}

#[test]
fn info_runs_against_libtorch() {
    let out = moram().args(["--threads", "1", "info"]).output().expect("run moram");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "moram info failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("libtorch threads: 1"), "{stdout}");
    assert!(stdout.contains("sum(1, 2, 3) = 6"), "{stdout}");
}

#[test]
fn inspect_describes_an_adapter_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("a.safetensors");
    let config = moram_core::MoramConfig { r: 4, ..Default::default() };
    let mut bank = moram_core::AtomBank::new(8, 6, &config, tch::Device::Cpu)?;
    bank.begin_task(0)?;
    bank.begin_task(1)?;
    moram_core::save_adapter(&path, [("encoder.layers.0.q_proj", &bank)], &Default::default())?;
    let out = moram().arg("inspect").arg(&path).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("tasks: 2"), "{stdout}");
    assert!(stdout.contains("encoder.layers.0.q_proj") && stdout.contains("8->6"), "{stdout}");
    assert!(stdout.contains("1 layers, 8 atoms, 112 parameters"), "{stdout}");
    Ok(())
}

#[test]
fn inspect_of_a_missing_or_corrupt_file_fails_with_its_name() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let out = moram().arg("inspect").arg(dir.path().join("nope.safetensors")).output()?;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nope.safetensors"), "{stderr}");
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"junk")?;
    let out = moram().arg("inspect").arg(&bad).output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid MoRAM adapter"));
    Ok(())
}

/// `moram plan` on the paper's LLaMA-2-7B TRACE config: the architecture from the preset, the
/// base weights at bf16 (6,738,415,616 parameters), the atoms of 8 tasks of r = 16 on q/k/v/o
/// (f32), a peak that is the largest phase; without `--preset` the unset `model.path` is named
/// with the way out.
#[test]
fn plan_prints_the_memory_of_the_papers_llama2_7b_setting() -> anyhow::Result<()> {
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/trace/llama2-7b-paper.toml");
    let out =
        moram().arg("plan").arg(&config).args(["--preset", "llama2-7b", "--device", "cuda", "--json"]).output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let part = |name: &str| {
        plan["parts"].as_array().unwrap().iter().find(|p| p["part"] == name).map(|p| p["mib"].as_f64().unwrap())
    };
    let mib = 1024.0 * 1024.0;
    assert!((part("base weights").unwrap() - 6_738_415_616.0 * 2.0 / mib).abs() < 1e-6);
    // 32 blocks x 4 projections x (4096 + 4096) x 16 atoms x 8 tasks, f32.
    assert!((part("atoms").unwrap() - 32.0 * 4.0 * 8192.0 * 16.0 * 8.0 * 4.0 / mib).abs() < 1e-6);
    let phases = ["load_mib", "train_mib", "eval_mib"].map(|k| plan[k].as_f64().unwrap());
    assert_eq!(plan["peak_mib"].as_f64().unwrap(), phases.iter().copied().fold(0.0, f64::max));

    let out = moram().arg("plan").arg(&config).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("model.path") && stderr.contains("--preset"), "{stderr}");
    Ok(())
}
