//! Replays what fuzzing found and what it starts from:
//! - every input kept under `tests/fixtures/fuzz/<target>/` (each once made a harness panic, hang
//!   or allocate without bound) must now be refused with an error naming its file;
//! - every valid seed must be accepted, so a harness cannot silently refuse all inputs.

use moram_fuzz::{run, seeds, ORIGIN, TARGETS};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn kept_findings_are_refused_with_a_named_error() -> anyhow::Result<()> {
    let dir = root().join("tests/fixtures/fuzz");
    let mut replayed = 0;
    for t in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(t.name)) else { continue };
        for e in entries {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "md") {
                continue;
            }
            let bytes = std::fs::read(&path)?;
            let outcome = run(t.name, &bytes).expect("listed target");
            // A finding fixed by accepting the input (a valid file) is fine too.
            if let Err(m) = outcome {
                assert!(m.contains(ORIGIN), "{}: the refusal `{m}` does not name the input", path.display());
            }
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no kept finding under {}", dir.display());
    Ok(())
}

#[test]
fn valid_seeds_are_accepted_by_their_harness() -> anyhow::Result<()> {
    // The real files among the seeds when setup fetched them (required under `cargo xtask test`).
    let assets = moram_assets::test_asset(moram_assets::SMOLLM2.file).and(moram_assets::assets_dir().ok());
    let all = seeds::seeds(&root(), assets.as_deref())?;
    for t in TARGETS {
        let valid: Vec<_> = all.iter().filter(|s| s.target == t.name && s.valid).collect();
        assert!(!valid.is_empty(), "target {} has no valid seed", t.name);
        for s in valid {
            if let Err(m) = run(t.name, &s.bytes).expect("listed target") {
                panic!("target {}: valid seed {} refused: {m}", t.name, s.name);
            }
        }
    }
    Ok(())
}

#[test]
fn refusals_name_the_input() {
    // One refused input per target: the message names the file it came from.
    let cases: [(&str, &[u8]); 8] = [
        ("gguf", b"GGUF\x03\x00\x00\x00"),
        ("safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}"),
        ("adapter", b"\x02\x00\x00\x00\x00\x00\x00\x00{}"),
        ("run_state", b"{\"format\": 1}"),
        ("results", b"[]"),
        ("trace_json", b"{\"prompt\": 1}"),
        ("idx", b"\x00\x00\x08\x01\xff\xff\xff\xff"),
        ("image", b"\x89PNG\r\n\x1a\n\x00"),
    ];
    for (target, bytes) in cases {
        let m = run(target, bytes).expect("listed target").expect_err("refused");
        assert!(m.contains(ORIGIN), "{target}: `{m}` does not name the input");
    }
}

#[test]
fn every_harness_has_a_cargo_fuzz_target() -> anyhow::Result<()> {
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml"))?;
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \"").and_then(|r| r.strip_suffix('"')))
        .filter(|n| *n != "moram-fuzz-targets")
        .collect();
    let names: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
    assert_eq!(bins, names, "fuzz/Cargo.toml's [[bin]] targets, in order");
    for t in TARGETS {
        let src = std::fs::read_to_string(root().join(format!("fuzz/fuzz_targets/{}.rs", t.name)))?;
        assert!(src.contains(&format!("moram_fuzz::run(\"{}\", data)", t.name)), "{} calls its own harness", t.name);
    }
    Ok(())
}
