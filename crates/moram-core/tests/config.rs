//! MoramConfig: profiles, serde round-trips and validation errors.

use moram_core::{MoramConfig, Profile, Routing};

#[test]
fn profiles_have_the_protocol_values() {
    let p = Profile::Paper.config();
    assert_eq!((p.r, p.top_k, p.temperature, p.threshold, p.value_scale, p.dropout), (16, 16, 0.01, 0.2, 1.0, 0.0));
    let x = Profile::Xtail.config();
    assert_eq!(x.eps, 1e-12);
    let t = Profile::TraceCode.config();
    assert_eq!((t.r, t.top_k, t.temperature, t.eps, t.value_scale, t.dropout), (8, 8, 0.03, 1e-8, 2.0, 0.1));
    assert!(t.compat.unscaled_frozen_values && t.compat.untrained_atoms_in_eval);
    let tp = Profile::TracePaper.config();
    assert_eq!((tp.r, tp.top_k, tp.temperature), (16, 16, 0.03));
    assert!(!tp.compat.unscaled_frozen_values && !tp.compat.untrained_atoms_in_eval);
    assert_eq!(MoramConfig::default(), p);
    for profile in Profile::ALL {
        profile.config().validate().expect("profiles are valid");
        assert_eq!(profile.name().parse::<Profile>().ok(), Some(profile));
    }
    let err = "xtail_code".parse::<Profile>().unwrap_err().to_string();
    assert!(err.contains("valid: paper, xtail, trace_code, trace_paper"), "{err}");
}

#[test]
fn toml_and_json_round_trip() -> anyhow::Result<()> {
    for profile in Profile::ALL {
        let c = profile.config();
        assert_eq!(MoramConfig::from_toml_str(&toml::to_string(&c)?)?, c);
        assert_eq!(MoramConfig::from_json_str(&c.to_json())?, c);
    }
    let c = MoramConfig::from_toml_str(
        "r = 4\ntop_k = 2\n[routing]\nkind = \"moe_lora\"\nuse_temperature = true\n[compat]\nunscaled_frozen_values = true\n",
    )?;
    assert_eq!(c.routing, Routing::MoeLora { use_top_k: true, use_temperature: true });
    assert!(c.compat.unscaled_frozen_values);
    assert_eq!(c.temperature, 0.01, "unlisted fields keep the defaults");
    let c = MoramConfig::from_toml_str("[routing]\nkind = \"self_activated\"\nuse_threshold = false\n")?;
    assert_eq!(c.routing, Routing::SelfActivated { use_top_k: true, use_temperature: true, use_threshold: false });
    // The switches' names before the `use_` prefix, as adapter files written then store them.
    let old = r#"{"routing": {"kind": "self_activated", "top_k": false, "temperature": true, "threshold": false}}"#;
    let c = MoramConfig::from_json_str(old)?;
    assert_eq!(c.routing, Routing::SelfActivated { use_top_k: false, use_temperature: true, use_threshold: false });
    assert!(c.to_json().contains("\"use_top_k\":false"), "written with the new names: {}", c.to_json());
    Ok(())
}

#[test]
fn validation_names_the_field_and_value() {
    // (config, the field `Error::InvalidConfig` names or "" for a parse error, message part)
    let cases: [(&str, &str, &str); 12] = [
        ("r = 0", "r", "`r` must be at least 1"),
        ("top_k = 0", "top_k", "`top_k` must be at least 1"),
        ("temperature = 0.0", "temperature", "`temperature` must be finite and > 0, found 0"),
        ("temperature = -1.0", "temperature", "found -1"),
        ("threshold = 1.0", "threshold", "`threshold` must lie in [0, 1), found 1"),
        ("threshold = -0.1", "threshold", "found -0.1"),
        ("eps = 0.0", "eps", "`eps`"),
        ("dropout = 1.0", "dropout", "`dropout`"),
        ("value_scale = 0.0", "value_scale", "`value_scale`"),
        ("temperature = nan", "temperature", "`temperature`"),
        (
            "[routing]\nkind = \"lora\"\n[compat]\nuntrained_atoms_in_eval = true",
            "compat.untrained_atoms_in_eval",
            "compat.untrained_atoms_in_eval",
        ),
        ("key_init = \"xavier\"", "", "unknown variant `xavier`"),
    ];
    for (text, field, expected) in cases {
        let err = MoramConfig::from_toml_str(text).expect_err(text);
        match (&err, field) {
            (moram_core::Error::InvalidConfig { field: f, .. }, _) => assert_eq!(*f, field, "{text:?}"),
            (moram_core::Error::ConfigParse { .. }, "") => {}
            _ => panic!("{text:?}: expected a `{field}` error, got {err:?}"),
        }
        let err = err.to_string();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn unknown_keys_are_rejected_by_name_with_their_line() {
    let err = MoramConfig::from_toml_str("r = 4\ntemprature = 0.1\n").unwrap_err().to_string();
    assert!(err.contains("temprature") && err.contains("line 2"), "{err}");
    assert!(err.contains("temperature"), "the valid keys are listed: {err}");
    let err = MoramConfig::from_toml_str("[routing]\nkind = \"lora\"\nuse_top_k = true\n").unwrap_err().to_string();
    assert!(err.contains("use_top_k"), "{err}");
    let err = MoramConfig::from_json_str(r#"{"rank": 4}"#).unwrap_err().to_string();
    assert!(err.contains("rank"), "{err}");
}

#[test]
fn config_files_are_read_by_extension_and_errors_name_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let toml_path = dir.path().join("m.toml");
    std::fs::write(&toml_path, "r = 3\n")?;
    assert_eq!(MoramConfig::from_file(&toml_path)?.r, 3);
    let json_path = dir.path().join("m.json");
    std::fs::write(&json_path, r#"{"r": 5}"#)?;
    assert_eq!(MoramConfig::from_file(&json_path)?.r, 5);
    std::fs::write(&toml_path, "r = \"three\"\n")?;
    let err = MoramConfig::from_file(&toml_path).unwrap_err();
    assert!(
        matches!(&err, moram_core::Error::ConfigParse { origin: Some(o), .. } if o == &toml_path),
        "a parse error naming the file: {err:?}"
    );
    let err = err.to_string();
    assert!(err.contains("m.toml") && err.contains("line 1"), "{err}");
    let err = MoramConfig::from_file(dir.path().join("absent.toml")).unwrap_err();
    assert!(matches!(&err, moram_core::Error::Io { path, .. } if path.ends_with("absent.toml")), "{err:?}");
    Ok(())
}
