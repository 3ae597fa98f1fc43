//! Bad data and bad configs: each error names the file, entry, task or key.

use moram_cl::data::trace::{load_split, load_task_split};
use moram_cl::data::{ImageTask, Images};
use moram_cl::learners::llm::TextTask;
use moram_cl::{Error, RunConfig};
use std::path::Path;
use tch::{Kind, Tensor};

#[test]
fn trace_json_errors_name_file_and_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("train.json");
    std::fs::write(&p, r#"[{"prompt": "a", "answer": "b"}, {"prompt": "c"}]"#).unwrap();
    let err = load_split(&p).unwrap_err();
    assert!(
        matches!(&err, Error::Data { path, entry: Some(entry), .. } if path == &p && entry == "entry 1"),
        "a data error naming the file and the entry: {err:?}"
    );
    let e = err.to_string();
    assert!(e.contains("train.json (entry 1): needs a string field `answer`"), "{e}");
    std::fs::write(&p, r#"[{"prompt": "a", "answer": 3}]"#).unwrap();
    assert!(load_split(&p).unwrap_err().to_string().contains("(entry 0): needs a string field `answer`"));
    std::fs::write(&p, "[{\"prompt\": \"a\",\n \"answer\": }]").unwrap();
    let err = load_split(&p).unwrap_err();
    assert!(matches!(&err, Error::Data { path, entry: None, .. } if path == &p), "{err:?}");
    let e = err.to_string();
    assert!(e.contains("train.json: malformed JSON") && e.contains("line 2"), "{e}");
    std::fs::write(&p, r#"{"prompt": "a"}"#).unwrap();
    assert!(load_split(&p).unwrap_err().to_string().contains("expected a JSON array"));
    let e = load_task_split(tmp.path(), "Nope", "test").unwrap_err().to_string();
    assert!(e.contains("Nope/test.json: missing split file"), "{e}");
    // An empty split is an empty task.
    let d = tmp.path().join("Empty");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("train.json"), "[]").unwrap();
    std::fs::write(d.join("test.json"), r#"[{"prompt": "a", "answer": "b"}]"#).unwrap();
    let err = TextTask::load(tmp.path(), "Empty", moram_cl::config::Split::Test, None).unwrap_err();
    assert!(matches!(&err, Error::Task { task, .. } if task == "Empty"), "{err:?}");
    assert_eq!(err.to_string(), "task `Empty`: the train split is empty");
}

#[test]
fn image_task_checks_labels_and_shapes() {
    let img = |n| Tensor::zeros([n, 3, 8, 8], (Kind::Float, tch::Device::Cpu));
    let mut t = ImageTask {
        name: "cars".into(),
        classnames: vec!["a".into(), "b".into()],
        template: "a photo of a {}.".into(),
        train_images: Images::Tensor(img(2)),
        train_labels: vec![0, 2],
        test_images: Images::Tensor(img(1)),
        test_labels: vec![1],
    };
    let err = t.validate().unwrap_err();
    assert!(matches!(&err, Error::Task { task, .. } if task == "cars"), "{err:?}");
    assert_eq!(err.to_string(), "task `cars`: train label 2 at index 1 is outside 0..2");
    t.train_labels = vec![0];
    assert!(t.validate().unwrap_err().to_string().contains("train: 2 images but 1 labels"));
    t.train_labels = vec![0, 1];
    t.template = "no slot".into();
    assert!(t.validate().unwrap_err().to_string().contains("has no `{}`"));
    t.template = "{}".into();
    t.validate().unwrap();
    assert_eq!(t.prompts(), vec!["a", "b"]);
}

/// The error of parsing `text`, with its source chain (as the CLI prints it).
fn parse(text: &str) -> String {
    chain(&RunConfig::from_toml_str(text, Path::new("run.toml")).unwrap_err())
}

/// The config key a parse error of `text` names (`Error::Config`), or the file (`Error::ConfigFile`,
/// TOML and serde errors, whose message names the line).
fn parse_kind(text: &str) -> String {
    match RunConfig::from_toml_str(text, Path::new("run.toml")).unwrap_err() {
        Error::Config { key, .. } => format!("key {key}"),
        Error::Method { .. } => "key method".into(),
        Error::ConfigFile { path, .. } => format!("file {}", path.display()),
        other => panic!("not a config error: {other:?}"),
    }
}

/// `err` with its source chain, joined by `: `.
fn chain(err: &Error) -> String {
    let mut out = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

#[test]
fn config_errors_name_the_key() {
    let base = "[method]\nname = \"moram\"\n[training]\niterations = 5\nbatch_size = 4\n";
    RunConfig::from_toml_str(base, Path::new("run.toml")).unwrap();
    let e = parse(&format!("{base}bogus = 1\n"));
    assert!(e.contains("run.toml") && e.contains("unknown field `bogus`"), "{e}");
    assert_eq!(parse_kind(&format!("{base}bogus = 1\n")), "file run.toml");
    assert_eq!(parse_kind("[method]\nname = \"moram\"\n[training]\nbatch_size = 4\n"), "key training");
    assert_eq!(parse_kind(&format!("{base}micro_batch_size = 3\n")), "key training.micro_batch_size");
    assert_eq!(parse_kind(&format!("{base}[optimizer]\nlr = -1.0\n")), "key optimizer.lr");
    assert_eq!(parse_kind(&base.replace("name = \"moram\"", "name = \"moram\"\ntemperature = 0.0")), "key method");
    let e = parse("[method]\nname = \"lora-plus\"\n[training]\niterations = 5\nbatch_size = 4\n");
    assert!(e.contains("`method.name`") && e.contains("`lora-plus`: unknown method") && e.contains("seq-lora"), "{e}");
    let e = parse("[method]\nname = \"moram\"\n[training]\nbatch_size = 4\n");
    assert_eq!(e, "config `training`: give exactly one of `iterations` and `epochs`");
    let e = parse(&format!("{base}micro_batch_size = 3\n"));
    assert_eq!(e, "config `training.micro_batch_size`: must divide batch_size 4, found 3");
    let e = parse(&base.replace("name = \"moram\"", "name = \"moram\"\nprofile = \"xtail_v2\""));
    assert!(e.contains("run.toml") && e.contains("line 3") && e.contains("unknown variant `xtail_v2`"), "{e}");
    assert!(e.contains("`paper`, `xtail`, `trace_code`, `trace_paper`"), "the valid profiles are listed: {e}");
    let e = parse(&base.replace("name = \"moram\"", "name = \"moram\"\ntemperature = 0.0"));
    assert!(e.starts_with("config `method`: invalid layer settings: ") && e.contains("temperature"), "{e}");
    let e = parse(&format!("{base}[optimizer]\nlr = -1.0\n"));
    assert_eq!(e, "config `optimizer.lr`: must be > 0, found -1");
    let epochs = "[method]\nname = \"moram\"\n[training]\nepochs = [1, 2]\nbatch_size = 4\n[data]\nformat = \"trace\"\ndir = \"d\"\ntasks = [\"A\", \"B\", \"C\"]\n";
    assert_eq!(parse(epochs), "config `training.epochs`: has 2 values for 3 tasks (give one, or one per task)");
    assert!(moram_cl::metrics::TaskMetric::from_name("bleu").unwrap_err().to_string().contains("valid: accuracy"));
    // --set overrides go through the same checks.
    let mut c = RunConfig::from_toml_str(base, Path::new("run.toml")).unwrap();
    c.set("training.iterations=7").unwrap();
    c.set("method.name=seq-lora").unwrap();
    assert_eq!(c.training.iterations, Some(7));
    assert_eq!(c.method.name, moram_cl::Method::SEQ_LORA);
    let err = c.set("training.batch_size=0").unwrap_err();
    assert!(matches!(&err, Error::Config { key, .. } if key == "training.batch_size"), "{err:?}");
    assert!(c.set("nonsense").is_err());
}

#[test]
fn trace_dir_check_lists_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = r#"[{"prompt": "a", "answer": "b"}]"#;
    for (task, train, test) in [("Good", ok, ok), ("BadJson", "[{", ok), ("Empty", ok, "[]")] {
        let d = tmp.path().join(task);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("train.json"), train).unwrap();
        std::fs::write(d.join("test.json"), test).unwrap();
    }
    std::fs::create_dir_all(tmp.path().join("NoTest")).unwrap();
    std::fs::write(tmp.path().join("NoTest/train.json"), ok).unwrap();
    let tasks: Vec<String> = ["Good", "BadJson", "Empty", "NoTest", "Absent"].iter().map(|s| s.to_string()).collect();
    let p = moram_cl::data::trace::check_dir(tmp.path(), &tasks, &["train", "test"]);
    assert_eq!(p.len(), 4, "{p:#?}");
    assert!(p[0].contains("BadJson/train.json: malformed JSON"));
    assert!(p[1].contains("Empty/test.json: empty split"));
    assert!(p[2].contains("NoTest/test.json: missing split file"));
    assert!(p[3].contains("Absent: missing task folder"));
    assert!(moram_cl::data::trace::check_dir(&tmp.path().join("nope"), &tasks, &["train"])[0].contains("not a folder"));
}

#[test]
fn later_overrides_win() {
    let base = "[method]\nname = \"moram\"\n[training]\niterations = 5\nbatch_size = 4\n[data]\nformat = \"xtail\"\ndir = \"d\"\ntasks = [\"mnist\"]\n";
    let mut c = RunConfig::from_toml_str(base, Path::new("run.toml")).unwrap();
    c.set_all(&["data.shot_cache=\"/a\"", "data.tasks=[\"dtd\"]", "data.shot_cache=\"/b\""]).unwrap();
    let d = c.data.unwrap();
    assert_eq!((d.shot_cache.unwrap(), d.tasks), (std::path::PathBuf::from("/b"), vec!["dtd".to_string()]));
}

/// `training.epochs` takes one number or one per task; choosing `iterations` or `epochs` on the
/// command line replaces the other one the file gave.
#[test]
fn epochs_as_a_number_and_iterations_epochs_overrides() {
    let one = "[method]\nname = \"moram\"\n[training]\nepochs = 1\nbatch_size = 4\n";
    let c = RunConfig::from_toml_str(one, Path::new("run.toml")).unwrap();
    assert_eq!(c.training.epochs.as_deref(), Some(&[1][..]));
    assert_eq!(c.training.epochs_for(5), Some(1));
    let listed = RunConfig::from_toml_str(&one.replace("epochs = 1", "epochs = [1]"), Path::new("run.toml")).unwrap();
    assert_eq!(c, listed, "`epochs = 1` means `epochs = [1]`");
    let e = parse(&one.replace("epochs = 1", "epochs = \"two\""));
    assert!(e.contains("run.toml") && e.contains("a number of epochs or a list of them"), "{e}");
    let mut c = c;
    c.set("training.iterations=7").unwrap();
    assert_eq!((c.training.iterations, c.training.epochs.clone()), (Some(7), None), "iterations replace epochs");
    c.set("training.epochs=2").unwrap();
    assert_eq!((c.training.iterations, c.training.epochs.clone()), (None, Some(vec![2])), "and back");
    let e = c.set_all(&["training.epochs=2", "training.iterations=3"]).unwrap_err().to_string();
    assert!(e.contains("give exactly one of `iterations` and `epochs`"), "both at once is still refused: {e}");
}

/// Typed config values: the device, the evaluation batch, the metric and split names, and a model
/// kind that cannot learn the data format, each refused with its key.
#[test]
fn typed_config_values_are_checked_by_key() {
    use moram_cl::config::{DeviceChoice, Split};
    let base = "[method]\nname = \"moram\"\nprofile = \"trace_paper\"\n[training]\niterations = 5\nbatch_size = 4\n";
    let with = |extra: &str| RunConfig::from_toml_str(&format!("{base}{extra}"), Path::new("run.toml"));
    let model = |device: &str| {
        format!("[model]\nkind = \"llm\"\npath = \"m\"\ndevice = \"{device}\"\ntargets = {{ modules = [\"q\"] }}\n")
    };
    for (text, want) in [
        ("auto", DeviceChoice::Auto),
        ("cpu", DeviceChoice::Cpu),
        ("cuda", DeviceChoice::Cuda(0)),
        ("cuda:3", DeviceChoice::Cuda(3)),
    ] {
        let c = with(&model(text)).unwrap();
        assert_eq!(c.model.as_ref().unwrap().device, want);
        assert_eq!(want.to_string(), if text == "cuda" { "cuda:0" } else { text });
    }
    let e = with(&model("gpu")).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("`gpu` is not a device (auto, cpu, cuda, cuda:N)"), "{e}");
    let e = moram_cl::config::DeviceChoice::Cuda(99).resolve().unwrap_err().to_string();
    assert!(e.contains("model.device") && e.contains("cuda:99 is not available"), "{e}");
    let e = with("[evaluation]\nbatch_size = 0\n").unwrap_err();
    assert!(matches!(e, moram_cl::Error::Config { ref key, .. } if key == "evaluation.batch_size"), "{e}");
    let clip_on_trace = format!(
        "{}[data]\nformat = \"trace\"\ndir = \"d\"\ntasks = [\"A\"]\n",
        model("cpu").replace("kind = \"llm\"", "kind = \"clip\"")
    );
    let e = with(&clip_on_trace).unwrap_err();
    assert!(matches!(e, moram_cl::Error::Config { ref key, .. } if key == "data.format"), "{e}");
    assert!(e.to_string().contains("Trace data cannot train a Clip model"), "{e}");
    let data = "[data]\nformat = \"trace\"\ndir = \"d\"\ntasks = [\"A\"]\neval_split = \"eval\"\nmetrics = { A = \"rouge_l_upstream\" }\n";
    let c = with(data).unwrap();
    let d = c.data.unwrap();
    assert_eq!((d.eval_split, d.metrics["A"]), (Split::Eval, moram_cl::metrics::TaskMetric::RougeLUpstream));
    let e = with(&data.replace("rouge_l_upstream", "bleu")).unwrap_err().to_string();
    assert!(e.contains("unknown variant `bleu`") && e.contains("rouge_l"), "{e}");
    let e = with(&data.replace("\"eval\"", "\"dev\"")).unwrap_err().to_string();
    assert!(e.contains("unknown variant `dev`") && e.contains("test"), "{e}");
    // A bad layer setting keeps moram-core's error as the source.
    let e = with("").unwrap().set("method.temperature=0").unwrap_err();
    assert!(matches!(e, moram_cl::Error::Method { .. }), "{e}");
    let source = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default();
    assert!(source.contains("temperature") && source.contains("> 0"), "{source}");
    // Overrides that do not parse name the overridden keys.
    let e = with("").unwrap().set_all(&["training.batch_size=\"four\""]).unwrap_err();
    assert!(matches!(e, moram_cl::Error::Override { ref keys, .. } if keys == "training.batch_size"), "{e}");
}

/// Run folders written before `[evaluation] batch_size` existed (`generation.batch_size`) still
/// load; giving both spellings is refused by name.
#[test]
fn legacy_generation_batch_size_is_read_as_the_evaluation_batch() {
    let base = "[method]\nname = \"moram\"\n[training]\niterations = 5\nbatch_size = 4\n";
    let legacy = format!("{base}[generation]\nmax_new_tokens = 8\nbatch_size = 16\n");
    let c = RunConfig::from_toml_str(&legacy, Path::new("old/config.toml")).unwrap();
    assert_eq!((c.evaluation.batch_size, c.generation.max_new_tokens), (16, 8));
    let current = format!("{base}[generation]\nmax_new_tokens = 8\n[evaluation]\nbatch_size = 16\n");
    assert_eq!(c, RunConfig::from_toml_str(&current, Path::new("config.toml")).unwrap());
    let both = format!("{legacy}[evaluation]\nbatch_size = 16\n");
    let e = parse(&both);
    assert!(e.contains("unknown field `batch_size`"), "{e}");
}
