//! `cargo xtask trace`: the TRACE benchmark (protocol 4) with the paper's or the official code's
//! settings, on a local checkpoint and a local copy of TRACE's `LLM-CL-Benchmark_500`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Paper Table 2: (preset, OP, BWT) of MoRAM, mean over 3 runs.
const PAPER: [(&str, f64, f64); 3] =
    [("llama2-7b", 44.54, 1.37), ("gemma-2b", 36.27, 2.74), ("llama3.2-1b", 37.77, 3.12)];

/// Hub ids the presets stand for.
const HUB: [(&str, &str); 3] = [
    ("llama2-7b", "meta-llama/Llama-2-7b-chat-hf"),
    ("llama3.2-1b", "meta-llama/Llama-3.2-1B-Instruct"),
    ("gemma-2b", "google/gemma-2b-it"),
];

/// Arguments of `cargo xtask trace`.
#[derive(clap::Args)]
pub struct TraceArgs {
    /// `llama2-7b`, `llama3.2-1b`, `gemma-2b`, or a checkpoint path (HF folder or .gguf).
    #[arg(long)]
    model: String,
    /// The TRACE data root (`<Task>/{train,eval,test}.json` for the 8 tasks).
    #[arg(long)]
    data_dir: PathBuf,
    /// Local checkpoint folder for a preset (default: $MORAM_MODEL_DIR).
    #[arg(long)]
    model_dir: Option<PathBuf>,
    /// `paper` (A.1) or `code` (the official runner).
    #[arg(long, default_value = "paper")]
    profile: String,
    /// Output folder (default: runs/trace-<model>-<profile>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the dev-profile `moram` (target/debug) instead of building a release one (tests, quick looks).
    #[arg(long)]
    debug: bool,
    /// Config overrides passed to `moram train --set` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// What `--model` resolved to.
#[derive(Debug, PartialEq)]
pub struct Resolved {
    /// The preset whose config (`configs/trace/<settings>-<profile>.toml`) the run uses.
    pub settings: String,
    /// The model that runs, as reports name it: the preset, or the checkpoint's file or folder name.
    pub model: String,
    /// The checkpoint.
    pub path: PathBuf,
}

/// The checkpoint folder of `model`: a path as given (run with the `llama2-7b` settings), or a
/// preset's folder from `--model-dir` or `$MORAM_MODEL_DIR`.
pub fn resolve_model(model: &str, model_dir: Option<&Path>, env: Option<PathBuf>) -> Result<Resolved> {
    if let Some((_, hub)) = HUB.iter().find(|(p, _)| *p == model) {
        let dir = model_dir.map(Path::to_path_buf).or(env).with_context(|| {
            format!(
                "`{model}` needs a local checkpoint of {hub} (Hugging Face folder with config.json, \
                 tokenizer.json and safetensors)\nremedy: pass --model-dir DIR or set MORAM_MODEL_DIR"
            )
        })?;
        if !dir.join("config.json").exists() {
            bail!("{} has no config.json: expected a Hugging Face checkpoint folder of {hub}", dir.display());
        }
        return Ok(Resolved { settings: model.to_string(), model: model.to_string(), path: dir });
    }
    let path = PathBuf::from(model);
    if !path.exists() {
        let presets: Vec<&str> = HUB.iter().map(|(p, _)| *p).collect();
        bail!("`{model}` is neither a preset ({}) nor an existing checkpoint path", presets.join(", "));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| model.to_string());
    Ok(Resolved { settings: "llama2-7b".into(), model: name, path })
}

/// Runs the sequence and prints OP / BWT next to the paper's.
pub fn run(args: TraceArgs) -> Result<()> {
    if !["paper", "code"].contains(&args.profile.as_str()) {
        bail!("--profile must be `paper` or `code`, found `{}`", args.profile);
    }
    let resolved =
        resolve_model(&args.model, args.model_dir.as_deref(), std::env::var_os("MORAM_MODEL_DIR").map(PathBuf::from))?;
    let root = crate::paths::workspace_root();
    let config = root.join("configs/trace").join(format!("{}-{}.toml", resolved.settings, args.profile));
    let out = args
        .out
        .unwrap_or_else(|| root.join("runs").join(format!("trace-{}-{}", args.model.replace('/', "_"), args.profile)));
    let bin = crate::paths::build_moram(args.debug)?;
    let mut cmd = std::process::Command::new(bin);
    cmd.arg("train").arg("--config").arg(&config).arg("--out").arg(&out);
    cmd.arg("--set").arg(format!("model.path={:?}", resolved.path.display().to_string()));
    cmd.arg("--set").arg(format!("data.dir={:?}", args.data_dir.display().to_string()));
    for s in &args.set {
        cmd.arg("--set").arg(s);
    }
    crate::paths::run_checked(&mut cmd)?;
    println!("{}", against_paper(&out, &resolved)?);
    Ok(())
}

/// The run's OP / BWT next to the paper's row for the preset whose settings it used; a model that
/// is not that preset is named, and the paper row says it is another model.
fn against_paper(out: &Path, r: &Resolved) -> Result<String> {
    let path = out.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let op = v["summary"]["trace"]["op"].as_f64();
    let bwt = v["summary"]["trace"]["bwt_paper"].as_f64();
    let preset = r.settings.as_str();
    let (_, p_op, p_bwt) = PAPER.iter().find(|(p, _, _)| *p == preset).copied().unwrap_or(("", f64::NAN, f64::NAN));
    let hub = HUB.iter().find(|(p, _)| *p == preset).map_or(preset, |(_, h)| h);
    let show = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into());
    let (title, paper) = if r.model == preset {
        (format!("TRACE, {preset}"), "MoRAM, paper Table 2".to_string())
    } else {
        (format!("TRACE, {} (settings of {preset})", r.model), format!("MoRAM on {hub}, paper Table 2 (another model)"))
    };
    Ok(format!(
        "| {title} | OP | BWT (Eq. 10) |\n|---|---:|---:|\n| moram (this run: {}) | {} | {} |\n| {paper} | {p_op:.2} | {p_bwt:.2} |",
        r.model,
        show(op),
        show(bwt)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_need_a_checkpoint_folder() {
        let e = resolve_model("llama2-7b", None, None).unwrap_err().to_string();
        assert!(
            e.contains("meta-llama/Llama-2-7b-chat-hf")
                && e.contains("remedy: pass --model-dir DIR or set MORAM_MODEL_DIR"),
            "{e}"
        );
        let tmp = std::env::temp_dir().join(format!("xtask-trace-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let e = resolve_model("gemma-2b", Some(&tmp), None).unwrap_err().to_string();
        assert!(e.contains("has no config.json") && e.contains("google/gemma-2b-it"), "{e}");
        std::fs::write(tmp.join("config.json"), "{}").unwrap();
        let gemma = Resolved { settings: "gemma-2b".into(), model: "gemma-2b".into(), path: tmp.clone() };
        assert_eq!(resolve_model("gemma-2b", None, Some(tmp.clone())).unwrap(), gemma);
        let e = resolve_model("/no/such/model", None, None).unwrap_err().to_string();
        assert!(e.contains("neither a preset (llama2-7b, llama3.2-1b, gemma-2b)"), "{e}");
        let _ = std::fs::remove_dir_all(&tmp);
    }

    #[test]
    fn a_checkpoint_path_is_named_and_the_paper_row_says_it_is_another_model() {
        let tmp = std::env::temp_dir().join(format!("xtask-trace-name-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let gguf = tmp.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        std::fs::write(&gguf, b"").unwrap();
        let r = resolve_model(gguf.to_str().unwrap(), None, None).unwrap();
        assert_eq!((r.settings.as_str(), r.model.as_str()), ("llama2-7b", "SmolLM2-135M-Instruct.Q4_1.gguf"));
        std::fs::write(tmp.join("results.json"), r#"{"summary": {"trace": {"op": 12.5, "bwt_paper": 3.25}}}"#).unwrap();
        let table = against_paper(&tmp, &r).unwrap();
        assert!(table.starts_with("| TRACE, SmolLM2-135M-Instruct.Q4_1.gguf (settings of llama2-7b) |"), "{table}");
        assert!(table.contains("| moram (this run: SmolLM2-135M-Instruct.Q4_1.gguf) | 12.50 | 3.25 |"), "{table}");
        assert!(table.contains("MoRAM on meta-llama/Llama-2-7b-chat-hf, paper Table 2 (another model) | 44.54 | 1.37"));
        let preset = Resolved { settings: "llama2-7b".into(), model: "llama2-7b".into(), path: tmp.clone() };
        assert!(against_paper(&tmp, &preset).unwrap().starts_with("| TRACE, llama2-7b |"));
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
