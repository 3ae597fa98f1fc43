//! Every run config shipped in `configs/` parses, validates, and says what it claims.

use moram_cl::{Method, RunConfig};
use std::path::Path;

fn configs(sub: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(sub);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

#[test]
fn shipped_run_configs_parse_and_match_their_names() {
    let trace = configs("trace");
    assert_eq!(trace.len(), 6);
    for p in &trace {
        let c = RunConfig::from_file(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let m = c.layer_config().unwrap();
        let data = c.data.as_ref().unwrap();
        assert_eq!(data.tasks.len(), 8, "{stem}");
        assert_eq!(c.training.epochs.as_deref(), Some(&[2, 1, 3, 2, 1, 2, 2, 3][..]));
        assert_eq!(c.method.name, Method::MORAM);
        if stem.ends_with("-code") {
            assert_eq!((m.r, m.top_k, c.training.batch_size), (8, 8, 32), "{stem}");
            assert!(m.compat.unscaled_frozen_values && m.compat.untrained_atoms_in_eval);
        } else {
            assert_eq!((m.r, m.top_k, c.training.batch_size), (16, 16, 4), "{stem}");
            assert!(!m.compat.unscaled_frozen_values);
        }
    }
    let cl = configs("cl-benchmark");
    assert_eq!(cl.len(), 6);
    for (i, p) in cl.iter().enumerate() {
        let c = RunConfig::from_file(p).unwrap();
        let n = c.data.as_ref().unwrap().tasks.len();
        assert_eq!(n, if i < 3 { 4 } else { 15 }, "{}", p.display());
        let m = c.layer_config().unwrap();
        assert_eq!((m.r, m.top_k, m.temperature), (8, 4, 0.1));
    }
    let xtail = configs("xtail");
    assert_eq!(xtail.len(), 4);
    for p in &xtail {
        let c = RunConfig::from_file(p).unwrap();
        let d = c.data.as_ref().unwrap();
        assert_eq!(d.format, moram_cl::config::DataFormat::Xtail);
        assert_eq!(d.tasks.len(), 10);
        assert_eq!((c.training.iterations, c.training.batch_size, c.optimizer.betas), (Some(500), 64, [0.9, 0.9999]));
        let order1 = p.file_name().unwrap().to_str().unwrap().starts_with("order1");
        assert_eq!(d.tasks[0], if order1 { "aircraft" } else { "stanford_cars" });
    }
    for p in configs("clip") {
        let c = RunConfig::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let d = c.data.as_ref().unwrap();
        assert_eq!(d.classes.as_ref().unwrap().len(), d.tasks.len() * d.classes_per_task.unwrap());
    }
    let demo = RunConfig::from_file(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/demo.toml")).unwrap();
    assert_eq!(demo.name, "demo");
}

#[test]
fn the_shipped_studies_expand_to_seed_major_runs_with_the_method_line_as_the_only_difference() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/study");
    let demo = RunConfig::from_file(dir.join("../demo.toml")).unwrap();
    for (file, methods, tasks) in [
        ("demo.toml", 5, ["bbc-topic", "wordnet-category", "wordnet-verb-base", "bbc-desk"]),
        ("formats.toml", 5, ["topic", "topic-letter", "desk", "headline"]),
    ] {
        let study = moram_cl::study::StudyConfig::from_file(dir.join(file)).unwrap();
        assert_eq!(study.baseline(), Some(Method::SEQ_LORA));
        let runs = study.runs(Path::new("out"), &["training.iterations=2".to_string()]).unwrap();
        assert_eq!(runs.len(), 3 * methods, "{file}");
        // Seed by seed: the first runs are every method on seed 1.
        assert!(runs[..methods].iter().all(|r| r.seed == 1) && runs[methods].seed == 2, "{file}");
        let setting = file.trim_end_matches(".toml");
        assert_eq!(runs[methods + 1].dir, Path::new("out").join(setting).join("moram").join("seed-2"));
        for r in &runs {
            assert_eq!(r.config.training.iterations, Some(2), "extra overrides reach every run");
            assert_eq!(r.config.seed, r.seed);
            assert_eq!(r.config.data.as_ref().unwrap().tasks, tasks, "{file}");
            let mut a = r.config.clone();
            let mut b = runs[0].config.clone();
            (a.method.name, a.seed, a.name) = (b.method.name.clone(), b.seed, b.name.clone());
            b.name = a.name.clone();
            assert_eq!(a, b, "only method, seed and name differ");
            // The demo's budget: the study measures exactly what the demo runs.
            assert_eq!(
                (r.config.optimizer.clone(), r.config.training.batch_size),
                (demo.optimizer.clone(), demo.training.batch_size)
            );
        }
        assert!(runs[0].config.layer_config().unwrap().key_subspace.is_none(), "SeqLoRA has no subspace");
        let gated = runs.iter().find(|r| r.config.method.name == Method::NOVELTY_GATED).unwrap();
        let ks = gated.config.layer_config().unwrap().key_subspace.unwrap();
        assert_eq!((ks.energy, ks.mode, ks.quantile), (0.97, moram_core::SubspaceMode::NoveltyGated, 0.99));
    }
}

#[test]
fn the_paper_budget_study_sets_the_papers_settings() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/study");
    let study = moram_cl::study::StudyConfig::from_file(dir.join("paper-budget.toml")).unwrap();
    let runs = study.runs(Path::new("out"), &[]).unwrap();
    assert_eq!(runs.len(), 2 * 3);
    for r in &runs {
        let m = r.config.layer_config().unwrap();
        let targets = &r.config.model.as_ref().unwrap().targets;
        assert_eq!(targets.layers, None, "every block");
        assert_eq!(r.config.training.iterations, Some(200));
        match r.setting.as_str() {
            "trace" => {
                assert_eq!((m.r, m.top_k, m.temperature, m.dropout), (16, 16, 0.03, 0.1));
                assert_eq!((r.config.optimizer.lr, r.config.optimizer.betas), (5e-4, [0.9, 0.95]));
                assert_eq!(targets.modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
            }
            "standard-cl" => {
                assert_eq!((m.r, m.top_k, m.temperature), (8, 4, 0.1));
                assert_eq!(targets.modules, ["q_proj", "k_proj"]);
            }
            other => panic!("unexpected setting {other}"),
        }
    }
}

/// The standard CL benchmark studies: the three orders of paper Table 7, the demo's budget (or the
/// paper's A.2 settings), every prompt kept whole (the longest are about 250 tokens).
#[test]
fn the_cl_benchmark_studies_run_the_papers_orders() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/study");
    let orders = [
        ["dbpedia", "amazon", "yahoo", "agnews"],
        ["dbpedia", "amazon", "agnews", "yahoo"],
        ["yahoo", "amazon", "agnews", "dbpedia"],
    ];
    let study = moram_cl::study::StudyConfig::from_file(dir.join("cl-benchmark.toml")).unwrap();
    assert_eq!(study.seeds, [1, 2, 3, 4, 5]);
    // The methods the plasticity issue's acceptance names: MTL, SeqLoRA, O-LoRA, faithful MoRAM
    // and the recommended setting.
    let names: Vec<String> = study.methods.iter().map(|m| m.name()).collect();
    assert_eq!(names, ["seq-lora", "mtl", "o-lora", "moram", "moram-task-gated"]);
    let runs = study.runs(Path::new("out"), &[]).unwrap();
    for (setting, tasks) in ["order1", "order2", "order3"].iter().zip(&orders) {
        let r = runs.iter().find(|r| &r.setting == setting).unwrap();
        let data = r.config.data.as_ref().unwrap();
        assert_eq!(data.tasks, tasks, "{setting}");
        assert_eq!(data.eval_split, moram_cl::config::Split::Test);
        assert_eq!(r.config.generation.max_prompt_tokens, 320);
        assert_eq!(r.config.training.iterations, Some(32), "the demo's budget");
    }
    let paper = moram_cl::study::StudyConfig::from_file(dir.join("cl-benchmark-paper.toml")).unwrap();
    let runs = paper.runs(Path::new("out"), &[]).unwrap();
    assert!(runs.iter().any(|r| r.config.method.name == Method::MTL));
    for r in &runs {
        let m = r.config.layer_config().unwrap();
        assert_eq!((m.r, m.top_k, m.temperature, m.dropout), (8, 4, 0.1, 0.1));
        assert_eq!((r.config.training.epochs.clone(), r.config.training.batch_size), (Some(vec![1]), 64));
        assert_eq!(r.config.model.as_ref().unwrap().targets.modules, ["q_proj", "k_proj"]);
        assert_eq!(r.config.data.as_ref().unwrap().tasks, orders[0]);
    }
}

/// `configs/README.md` documents `method.name`; every registered method must be listed there and
/// every name listed there must parse, so the table and the registry cannot drift apart.
#[test]
fn the_configs_readme_lists_exactly_the_registered_methods() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/README.md")).unwrap();
    let row = readme.lines().find(|l| l.starts_with("| `method.name` |")).expect("a `method.name` row");
    let cell = row.trim_start_matches("| `method.name` |");
    // Backticked words in the cell; the file paths it cites are not method names.
    let listed: Vec<&str> = cell.split('`').skip(1).step_by(2).filter(|w| !w.contains('/')).collect();
    for m in Method::all() {
        assert!(listed.contains(&m.name().as_str()), "`{}` is registered but not in configs/README.md", m.name());
    }
    for name in &listed {
        assert!(Method::from_name(name).is_ok(), "configs/README.md lists `{name}`, which is not a method");
    }
    assert_eq!(listed.len(), Method::all().count(), "a name listed twice: {listed:?}");
}
