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
