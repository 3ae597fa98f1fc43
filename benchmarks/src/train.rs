//! `moram-bench train`: the Rust side of `cargo xtask bench train` (see `benchmarks/train_pytorch.py`
//! for the PyTorch side and `benchmarks/batch.py` for the inputs, built here by the same rules).
//!
//! SmolLM2-135M from its GGUF (f32, or bf16 base weights with f32 atoms), one task of r = 8 atoms
//! (top-k 8, tau 0.03, delta 0.2, value scale 2, dropout 0: the demo's settings) on every linear
//! layer of the last 8 blocks. Each case runs in its own process, so the peak RSS it prints is its
//! own.

use anyhow::{bail, Context, Result};
use moram_cl::config::{OptimizerConfig, OptimizerKind, ScheduleKind};
use moram_cl::optim::Adam;
use moram_core::{MoramConfig, Profile};
use moram_models::llm::{CausalLm, GenerationConfig, GgufFile, PrefixMemo};
use moram_models::TargetSpec;
use tch::{Device, Kind, Tensor};

/// Ordinary token ids of row `row` (`batch.py` `tokens`).
fn tokens(row: i64, length: i64) -> Vec<i64> {
    (0..length).map(|i| 300 + (row * 101 + i * 37) % 5000).collect()
}

/// `(ids, labels, mask)` `(B, L)` of `batch.py` `train_batch`.
pub fn train_batch(seq: i64) -> (Tensor, Tensor, Tensor) {
    let (rows, answer) = if seq <= 512 { (8, 24) } else { (1, 128) };
    let (mut ids, mut labels, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rows {
        let n = seq - 8 * r;
        let t = tokens(r, n);
        let pad = (seq - n) as usize;
        ids.extend(std::iter::repeat_n(0, pad).chain(t.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, n as usize)));
        labels.extend(
            std::iter::repeat_n(-100, (seq - answer) as usize).chain(t[(n - answer) as usize..].iter().copied()),
        );
    }
    let t = |v: Vec<i64>| Tensor::from_slice(&v).view([rows, seq]);
    (t(ids), t(labels), t(mask))
}

/// Prompts and new-token count of `batch.py` `eval_batch` (`short`, `repeat`, `prefill`, `long`,
/// `meetingbank`; `repeat` is `short`'s batch, `prefill` its prompts with one new token).
pub fn eval_batch(kind: &str) -> Result<(Vec<Vec<i64>>, usize)> {
    let (rows, length, step, new) = match kind {
        "short" | "repeat" => (16, 160, 4, 8),
        "prefill" => (16, 160, 4, 1),
        "long" => (4, 512, 16, 64),
        "meetingbank" => (1, 4096, 0, 32),
        other => bail!("unknown eval case `{other}` (short, repeat, prefill, long, meetingbank)"),
    };
    Ok(((0..rows).map(|r| tokens(r, length - step * r)).collect(), new))
}

/// The model with one task of atoms on the last 8 blocks; base weights in `base`.
fn model(gguf: &std::path::Path, base: Kind) -> Result<CausalLm> {
    model_on(&GgufFile::open(gguf)?, base, Device::Cpu)
}

/// [`model`] from an open GGUF file on `device`: r = 8 atoms (the demo's layer settings, seeded)
/// on every linear of the last 8 blocks, task 0 begun.
pub fn model_on(file: &GgufFile, base: Kind, device: Device) -> Result<CausalLm> {
    let mut model = CausalLm::from_gguf(file, base, device)?;
    let n = model.config().num_hidden_layers as usize;
    let spec =
        TargetSpec { encoders: vec!["all".into()], modules: vec!["all".into()], layers: Some((n - 8..n).collect()) };
    let config = MoramConfig { r: 8, top_k: 8, dropout: 0.0, ..Profile::TracePaper.config() };
    tch::manual_seed(0);
    model.inject(&spec, &config)?;
    model.begin_task(0)?;
    Ok(model)
}

/// Peak resident memory of this process so far, MB.
pub fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return f64::NAN;
    }
    usage.ru_maxrss as f64 / 1024.0
}

/// How a case's calls are timed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// `reps` timed calls after warm-up; prints the case's row.
    Reps(usize),
    /// Warm-up, then `{"ready": true}`; then one timed call per `run` line on stdin, each
    /// answered with `{"wall_ms": .., "cpu_ms": ..}`, until `done` or the end of input; then the
    /// case's row over the served calls. `cargo xtask bench train --pairs` alternates two such
    /// processes (moram and PyTorch) call by call.
    Serve,
}

impl Timing {
    /// Median wall and CPU ms of `call`, timed this way.
    pub fn measure(self, call: &mut dyn FnMut() -> Result<()>) -> Result<(f64, f64)> {
        match self {
            Timing::Reps(reps) => {
                let mut failure = None;
                let t = crate::time(reps, || {
                    if failure.is_none() {
                        failure = call().err();
                    }
                });
                match failure {
                    Some(e) => Err(e),
                    None => Ok(t),
                }
            }
            Timing::Serve => serve(call, std::io::stdin().lock(), std::io::stdout()),
        }
    }
}

/// Runs `case` (`train_<L>` or `eval_<short|repeat|prefill|long|meetingbank>`) and prints its row.
pub fn run(timing: Timing, gguf: &std::path::Path, case: &str, base: Kind) -> Result<()> {
    let mut model = model(gguf, base)?;
    let loaded = peak_rss_mb();
    let (kind, arg) = case.split_once('_').with_context(|| format!("case `{case}` is not kind_arg"))?;
    // (one call, its matmul GFLOP, tokens it processes).
    let (mut call, gflop, tokens): (Box<dyn FnMut() -> Result<()> + '_>, f64, f64) = match kind {
        "train" => {
            let seq: i64 = arg.parse().with_context(|| format!("case `{case}`: sequence length"))?;
            model.set_training(true);
            let (ids, labels, mask) = train_batch(seq);
            let opt_config = OptimizerConfig {
                kind: OptimizerKind::Adamw,
                lr: 1e-3,
                betas: [0.9, 0.999],
                eps: 1e-8,
                weight_decay: 0.0,
                schedule: ScheduleKind::Constant,
                warmup_steps: 0,
            };
            let mut opt = Adam::new(model.trainable_tensors(), &opt_config);
            let gflop = step_flops(model.config(), &labels, &mask)? / 1e9;
            let tokens = ids.numel() as f64;
            let model = &model;
            let step = move || -> Result<()> {
                model.causal_lm_loss(&ids, &labels, Some(&mask))?.backward();
                opt.clip_grad_norm(Some(1.0))?;
                opt.step(1e-3);
                opt.zero_grad();
                Ok(())
            };
            (Box::new(step), gflop, tokens)
        }
        "eval" => {
            model.set_training(false);
            let (prompts, new_tokens) = eval_batch(arg)?;
            let settings = GenerationConfig { max_new_tokens: new_tokens, pad_id: 0, ..GenerationConfig::default() };
            // `repeat`: the prompts of a task evaluated before, as a continual-learning run does
            // after every later task; the frozen blocks' pass is kept from the warm-up call.
            let mut memo = (arg == "repeat").then(PrefixMemo::default);
            let tokens = (prompts.len() * new_tokens) as f64;
            let model = &model;
            let generate = move || -> Result<()> {
                let out = model.generate_with_prefixes(&prompts, &settings, memo.as_mut())?;
                if out.iter().any(|o| o.len() != new_tokens) {
                    bail!("a row stopped early");
                }
                Ok(())
            };
            (Box::new(generate), f64::NAN, tokens)
        }
        _ => bail!(
            "unknown case `{case}` (train_<L>, eval_short, eval_repeat, eval_prefill, eval_long, eval_meetingbank)"
        ),
    };
    let timing = timing.measure(&mut call)?;
    let suffix = if base == Kind::BFloat16 { "_bf16" } else { "" };
    crate::emit_with(
        format!("{case}{suffix}"),
        timing,
        serde_json::json!({"peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": loaded, "gflop": gflop, "tokens": tokens}),
    )
}

/// [`Timing::Serve`]: [`crate::warm_up`], then one timed call per `run` line of
/// `input` (stdin), each answered on `out` (stdout). Returns the median wall and CPU ms of the
/// served calls.
fn serve(
    call: &mut dyn FnMut() -> Result<()>,
    input: impl std::io::BufRead,
    mut out: impl std::io::Write,
) -> Result<(f64, f64)> {
    crate::warm_up(&mut *call)?;
    writeln!(out, "{}", serde_json::json!({"ready": true}))?;
    out.flush()?;
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for line in input.lines() {
        match line.context("reading a command from stdin")?.trim() {
            "run" => {
                let (done, w, c) = crate::timed_call(&mut *call);
                done?;
                wall.push(w);
                cpu.push(c);
                writeln!(out, "{}", serde_json::json!({"wall_ms": w, "cpu_ms": c}))?;
                out.flush()?;
            }
            "done" => break,
            other => bail!("unknown command {other:?} on stdin (`run` or `done`)"),
        }
    }
    if wall.is_empty() {
        bail!("no `run` command arrived on stdin before its end");
    }
    Ok((crate::median(wall), crate::median(cpu)))
}

/// Floating-point operations of one training step on `labels` `(B, L)` with `mask` `(B, L)`
/// (left padding), counted as matmul work on each row's real tokens (moram packs the rows and
/// computes no pad position, `docs/performance.md`): the 7 projections of every block for every
/// token, causal attention (`QK^T` and `AV` over on average half the keys), the LM head on the
/// labelled positions; backward through the last 8 blocks costs their input gradients (the base
/// weights are frozen: one matmul per projection, two per attention product) and the head's.
/// The last block computes keys and values of every token but queries, attention and MLP only
/// for each row's trailing positions the loss reads, and is counted so.
pub fn step_flops(c: &moram_models::llm::LlmConfig, labels: &Tensor, mask: &Tensor) -> Result<f64> {
    let (b, l) = (labels.size()[0], labels.size()[1] as usize);
    let linears = c.block_linears();
    let flops = |names: &[&str]| -> f64 {
        linears
            .iter()
            .filter(|(n, ..)| names.is_empty() || names.contains(n))
            .map(|(_, i, o)| (i * o) as f64)
            .sum::<f64>()
            * 2.0
    };
    let (proj, kv) = (flops(&[]), flops(&["k_proj", "v_proj"]));
    let attn = |keys: f64| 2.0 * 2.0 * (c.num_attention_heads * c.head_dim) as f64 * keys;
    let blocks = c.num_hidden_layers as f64;
    let head_per_token = 2.0 * (c.hidden_size * c.vocab_size) as f64;
    let mut total = 0.0;
    for r in 0..b {
        let labels = Vec::<i64>::try_from(labels.get(r))?;
        let n = Vec::<i64>::try_from(mask.get(r))?.iter().filter(|&&m| m != 0).count() as f64;
        // Trailing positions the loss reads: from the first one whose next label is set.
        let first = (0..l - 1).find(|&j| labels[j + 1] != -100);
        let tail = first.map_or(0.0, |j| (l - j) as f64);
        let labelled = labels.iter().filter(|&&t| t != -100).count() as f64;
        // A tail query sees on average n - tail / 2 keys.
        let last = |attn_products: f64| n * kv + tail * (proj - kv + attn_products * attn(n - tail / 2.0));
        let forward = n * (proj + attn(n / 2.0)) * (blocks - 1.0) + last(1.0) + head_per_token * labelled;
        let backward = n * (proj + 2.0 * attn(n / 2.0)) * 7.0 + last(2.0) + head_per_token * labelled;
        total += forward + backward;
    }
    Ok(total)
}

/// Sustained matmul throughput, GFLOP/s: `(n x k) @ (k x m)` products at the model's own shapes
/// (1,536 tokens through a 576 -> 1,536 projection and back), in f32 and bf16.
pub fn matmul(reps: usize) -> Result<()> {
    for kind in [Kind::Float, Kind::BFloat16] {
        for (n, k, m) in [(1536i64, 576i64, 1536i64), (1536, 1536, 576)] {
            let a = Tensor::randn([n, k], (kind, Device::Cpu));
            let b = Tensor::randn([k, m], (kind, Device::Cpu));
            let t = crate::time(reps, || {
                let _ = a.matmul(&b);
            });
            let gflops = 2.0 * (n * k * m) as f64 / (t.1 * 1e-3) / 1e9;
            let name = if kind == Kind::Float { "f32" } else { "bf16" };
            crate::emit_with(format!("matmul_{name}_{n}x{k}x{m}"), t, serde_json::json!({"gflops_cpu": gflops}))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `--serve` protocol: `ready` after the warm-up, one answer per `run`, `done` ends; a
    /// stray command, a failing call or input without `run` is an error.
    #[test]
    fn serve_times_one_call_per_run_line() -> Result<()> {
        let mut calls = 0;
        let mut count = || -> Result<()> {
            calls += 1;
            Ok(())
        };
        let mut out = Vec::new();
        let (wall, cpu) = serve(&mut count, "run\n run \ndone\nrun\n".as_bytes(), &mut out)?;
        // Three warm-up calls (each well under half a second), then the two before `done`.
        assert_eq!(calls, 5);
        assert!(wall >= 0.0 && cpu >= 0.0);
        let lines: Vec<serde_json::Value> =
            String::from_utf8(out)?.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], serde_json::json!({"ready": true}));
        assert!(lines[1..].iter().all(|l| l["wall_ms"].is_f64() && l["cpu_ms"].is_f64()));
        let mut ok = || -> Result<()> { Ok(()) };
        let e = serve(&mut ok, "run\nwalk\n".as_bytes(), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("\"walk\"") && e.contains("`run` or `done`"), "{e}");
        let e = serve(&mut ok, "done\n".as_bytes(), Vec::new()).unwrap_err().to_string();
        assert!(e.contains("no `run` command"), "{e}");
        let mut n = 0;
        let mut fails_when_timed = || -> Result<()> {
            n += 1;
            if n > 3 {
                bail!("step failed");
            }
            Ok(())
        };
        let e = serve(&mut fails_when_timed, "run\n".as_bytes(), Vec::new()).unwrap_err().to_string();
        assert_eq!(e, "step failed");
        Ok(())
    }

    /// `batch.py` (the PyTorch side's inputs) and this module build the same inputs for every
    /// case: the two copies of the rules cannot drift apart unnoticed.
    #[test]
    fn batch_py_builds_the_same_inputs() -> Result<()> {
        let kinds = ["short", "repeat", "prefill", "long", "meetingbank"];
        let script = format!(
            "import json; from batch import train_batch, eval_batch; \
             print(json.dumps({{'train': [train_batch(n) for n in (192, 4096)], \
             'eval': [eval_batch(k) for k in {kinds:?}]}}))"
        );
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .context("running python3 (batch.py needs no package)")?;
        if !out.status.success() {
            bail!("batch.py: {}", String::from_utf8_lossy(&out.stderr));
        }
        let python: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let rows = |t: &Tensor| -> Result<Vec<Vec<i64>>> {
            (0..t.size()[0]).map(|r| Ok(Vec::<i64>::try_from(t.get(r))?)).collect()
        };
        let mut train = Vec::new();
        for n in [192, 4096] {
            let (ids, labels, mask) = train_batch(n);
            train.push(serde_json::json!([rows(&ids)?, rows(&labels)?, rows(&mask)?]));
        }
        let eval = kinds.iter().map(|k| Ok(serde_json::json!(eval_batch(k)?))).collect::<Result<Vec<_>>>()?;
        assert_eq!(python["train"], serde_json::Value::Array(train));
        assert_eq!(python["eval"], serde_json::Value::Array(eval));
        assert!(eval_batch("other").is_err());
        Ok(())
    }
}
