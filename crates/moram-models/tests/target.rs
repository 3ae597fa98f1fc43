//! TargetSpec: aliases, shorthands, layer subsets, and strict errors.

use moram_models::{LinearSite, ModuleNames, TargetSpec};

// CLIP's real vocabulary: canonical q k v o fc1 fc2, the official names as aliases, and the
// shorthand tokens of `qkvoinout`.
const CLIPISH: ModuleNames = moram_models::clip::CLIP_MODULES;

fn sites() -> Vec<LinearSite> {
    let mut v = Vec::new();
    for encoder in ["vision", "text"] {
        for layer in 0..3 {
            for module in CLIPISH.canonical {
                v.push(LinearSite {
                    path: format!("{encoder}.layers.{layer}.{module}"),
                    encoder: encoder.into(),
                    layer,
                    module: module.to_string(),
                });
            }
        }
    }
    v
}

fn paths(spec: &TargetSpec) -> Vec<String> {
    spec.select(&sites(), &CLIPISH).expect("selects").into_iter().map(|s| s.path.clone()).collect()
}

#[test]
fn the_official_shorthand_selects_all_six_modules_in_both_encoders() {
    let spec = TargetSpec::all_encoders(&["qkvoinout"]);
    assert_eq!(paths(&spec).len(), 2 * 3 * 6);
    let spec = TargetSpec::all_encoders(&["qkvo"]);
    assert_eq!(paths(&spec).len(), 2 * 3 * 4);
    assert!(paths(&spec).iter().all(|p| !p.ends_with("fc1") && !p.ends_with("fc2")));
}

#[test]
fn aliases_encoders_and_layer_subsets() {
    let spec = TargetSpec {
        encoders: vec!["vision".into()],
        modules: vec!["out_proj".into(), "c_fc".into()],
        layers: Some(vec![0, 2]),
    };
    assert_eq!(
        paths(&spec),
        vec!["vision.layers.0.o", "vision.layers.0.fc1", "vision.layers.2.o", "vision.layers.2.fc1"]
    );
    let spec = TargetSpec { encoders: vec!["text".into()], modules: vec!["all".into()], layers: None };
    assert_eq!(paths(&spec).len(), 18);
}

#[test]
fn patterns_that_match_nothing_are_errors_naming_them() {
    let s = sites();
    let err = |spec: TargetSpec| spec.select(&s, &CLIPISH).unwrap_err().to_string();
    let e = err(TargetSpec { encoders: vec!["audio".into()], modules: vec!["q".into()], layers: None });
    assert!(e.contains("encoder `audio` does not exist; valid: all, text, vision"), "{e}");
    let e = err(TargetSpec::all_encoders(&["qx"]));
    assert!(e.contains("module `qx` is not known") && e.contains("out_proj (= o)"), "{e}");
    let e = err(TargetSpec::all_encoders(&["gate_proj"]));
    assert!(e.contains("`gate_proj`"), "{e}");
    let e = err(TargetSpec { encoders: vec!["all".into()], modules: vec!["q".into()], layers: Some(vec![1, 7]) });
    assert!(e.contains("layer 7 does not exist (blocks are 0..=2)"), "{e}");
    let e = err(TargetSpec::all_encoders(&[]));
    assert!(e.contains("no modules"), "{e}");
    // A module present in the model but not in the chosen encoder.
    let only_vision_fc: Vec<LinearSite> =
        s.iter().filter(|x| x.encoder == "vision" || x.module != "fc1").cloned().collect();
    let e = TargetSpec { encoders: vec!["text".into()], modules: vec!["c_fc".into()], layers: None }
        .select(&only_vision_fc, &CLIPISH)
        .unwrap_err()
        .to_string();
    assert!(e.contains("module `c_fc` (fc1) matches no layer in encoder(s) text"), "{e}");
}

#[test]
fn specs_read_from_toml_reject_unknown_fields() -> anyhow::Result<()> {
    let spec: TargetSpec = toml::from_str("modules = [\"qkvoinout\"]\nlayers = [0]\n")?;
    assert_eq!(spec.encoders, vec!["all"]);
    let err = toml::from_str::<TargetSpec>("modules = [\"q\"]\nencoder = [\"vision\"]\n").unwrap_err().to_string();
    assert!(err.contains("encoder"), "{err}");
    Ok(())
}
