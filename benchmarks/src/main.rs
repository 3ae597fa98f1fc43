//! `moram-bench`: the Rust side of `cargo xtask bench`. Prints one JSON object per line with the
//! median time of each case, so the xtask can interleave it with the PyTorch scripts.

use anyhow::{ensure, Result};
use clap::{Parser, Subcommand};
use moram_core::{MoramConfig, MoramLinear, ValuePath};
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

mod eval_row;
mod gpu_check;
mod train;

#[derive(Parser)]
struct Cli {
    /// Intra-op threads (inter-op is set to 1).
    #[arg(long, default_value_t = 1)]
    threads: i32,
    /// Timed repetitions per case (after warm-up).
    #[arg(long, default_value_t = 20)]
    reps: usize,
    #[command(subcommand)]
    which: Which,
}

#[derive(Subcommand)]
enum Which {
    /// MoramLinear vs a frozen linear: d_in = d_out = 768, 8 x 197 tokens, k = 16, R in {16, 64, 160}.
    Core,
    /// The CLIP ViT-B/16 image encoder (random weights, eval, batch 8), without and with MoRAM
    /// atoms (q, k, v, o, fc1, fc2, r = 16, one task).
    Clip {
        /// Images per batch.
        #[arg(long, default_value_t = 8)]
        batch: i64,
    },
    /// A GGUF LLM (SmolLM2-135M): prefill of `prompt_len` tokens (next-token logits, as in
    /// generation), a forward of `prompt_len` tokens with every position's logits, and greedy
    /// generation of `new_tokens` tokens after a 16-token prompt; f32 weights, KV cache.
    Llm {
        /// The GGUF file.
        #[arg(long)]
        gguf: std::path::PathBuf,
        /// Prefill length.
        #[arg(long, default_value_t = 128)]
        prompt_len: i64,
        /// Tokens generated greedily.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
    },
    /// One case of a TRACE-style continual-learning job on a GGUF LLM (`train_<L>`: an optimiser
    /// step; `eval_short` / `eval_repeat` / `eval_long`: batched greedy generation); prints its
    /// peak RSS too.
    Train {
        /// The GGUF file.
        #[arg(long)]
        gguf: std::path::PathBuf,
        /// `train_192`, `train_4096`, `eval_short`, `eval_repeat`, `eval_prefill`, `eval_long`,
        /// `eval_meetingbank`.
        #[arg(long)]
        case: String,
        /// Base weights in bf16 (atoms stay f32).
        #[arg(long)]
        bf16: bool,
        /// Serve timed calls on request (`run` / `done` lines on stdin) instead of `--reps`.
        #[arg(long)]
        serve: bool,
    },
    /// One row of a continual-learning run's evaluations on a run config's tasks (LLM learner,
    /// one task's atoms in every adapted layer, prefix memo warm): task by task, or in one call
    /// with partial batches filled across tasks.
    EvalRow {
        /// The run config (e.g. `configs/demo.toml` with the paths of `moram demo-data`).
        #[arg(long)]
        config: std::path::PathBuf,
        /// `key=value` overrides of the config, as `moram train --set`.
        #[arg(long = "set")]
        set: Vec<String>,
        /// Score the tasks one by one (each with its own partial batch).
        #[arg(long)]
        by_task: bool,
        /// Serve timed calls on request (`run` / `done` lines on stdin) instead of `--reps`.
        #[arg(long)]
        serve: bool,
    },
    /// CPU against a device: a MoRAM layer, SmolLM2's logits and greedy tokens, 20 training
    /// steps' losses (f32 and bf16), the device's step and generation times, its peak memory and
    /// a one-process all-reduce; writes `gpu-check.{json,md}` into `--out` (`cargo xtask
    /// gpu-check`).
    GpuCheck {
        /// `cuda` (device 0) or `cpu` (the script checking itself).
        #[arg(long, default_value = "cuda", value_parser = ["cuda", "cpu"])]
        device: String,
        /// SmolLM2-135M's GGUF file.
        #[arg(long)]
        gguf: std::path::PathBuf,
        /// Training steps compared.
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Folder for the report.
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// Sustained f32 and bf16 matmul throughput at the LLM's shapes (GFLOP/s per CPU second).
    Matmul,
    /// Dequantisation of every tensor of a GGUF file to f32, by storage type and in all.
    Dequant {
        /// The GGUF file.
        #[arg(long)]
        gguf: std::path::PathBuf,
    },
}

#[derive(Serialize)]
struct Row {
    case: String,
    impl_name: &'static str,
    /// Median wall-clock time.
    median_ms: f64,
    /// Median CPU time of the process (all threads): robust to other load on a shared machine,
    /// exact for one thread.
    median_cpu_ms: f64,
    /// Case-specific figures (peak memory, throughput).
    #[serde(flatten)]
    extra: serde_json::Map<String, serde_json::Value>,
}

/// CPU time consumed by this process so far, in ms.
fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Median wall and CPU time in ms of `f` over `reps` runs after [`warm_up`].
fn time(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let Ok(()) = warm_up(|| {
        f();
        Ok::<(), std::convert::Infallible>(())
    });
    let (wall, cpu): (Vec<f64>, Vec<f64>) = (0..reps)
        .map(|_| {
            let ((), wall, cpu) = timed_call(&mut f);
            (wall, cpu)
        })
        .unzip();
    (median(wall), median(cpu))
}

/// The warm-up before timed calls: one call, and two more when it took at most half a second.
fn warm_up<E>(mut f: impl FnMut() -> std::result::Result<(), E>) -> std::result::Result<(), E> {
    let t = Instant::now();
    f()?;
    if t.elapsed().as_secs_f64() <= 0.5 {
        f()?;
        f()?;
    }
    Ok(())
}

/// One call of `f`: its result, wall ms and process CPU ms.
fn timed_call<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (t, c) = (Instant::now(), process_cpu_ms());
    let out = f();
    (out, t.elapsed().as_secs_f64() * 1e3, process_cpu_ms() - c)
}

/// The upper median of `v` (the middle value, or the upper of the two middle ones), as the
/// timings have always been summarised; NaN for no value.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn emit(case: String, impl_name: &'static str, (median_ms, median_cpu_ms): (f64, f64)) -> Result<()> {
    let extra = serde_json::Map::new();
    println!("{}", serde_json::to_string(&Row { case, impl_name, median_ms, median_cpu_ms, extra })?);
    Ok(())
}

/// [`emit`] for moram with case-specific figures `extra` (a JSON object).
fn emit_with(case: String, (median_ms, median_cpu_ms): (f64, f64), extra: serde_json::Value) -> Result<()> {
    let extra = match extra {
        serde_json::Value::Object(map) => map,
        other => anyhow::bail!("extra figures must be an object, found {other}"),
    };
    println!("{}", serde_json::to_string(&Row { case, impl_name: "moram", median_ms, median_cpu_ms, extra })?);
    Ok(())
}

/// A layer of R atoms in tasks of 16 (the last task trainable) with trained-looking values.
fn layer(r_total: i64, path: ValuePath, weight: &Tensor, bias: &Tensor) -> Result<MoramLinear> {
    let config =
        MoramConfig { r: 16, top_k: 16, temperature: 0.01, threshold: 0.2, value_path: path, ..MoramConfig::default() };
    let mut layer = MoramLinear::new(weight, Some(bias), &config)?;
    for task in 0..(r_total / 16) as u32 {
        layer.bank_mut().begin_task(task)?;
        let _guard = tch::no_grad_guard();
        for (name, mut t) in layer.bank().named_trainable_tensors() {
            if name == "values" {
                t.copy_(&(t.randn_like() * 0.02));
            }
        }
    }
    Ok(layer)
}

fn core(reps: usize) -> Result<()> {
    tch::manual_seed(0);
    let (d, tokens) = (768i64, [8i64, 197]);
    let opts = (Kind::Float, Device::Cpu);
    let weight = Tensor::randn([d, d], opts) * 0.02;
    let bias = Tensor::randn([d], opts) * 0.02;
    let x = Tensor::randn([tokens[0], tokens[1], d], opts);
    let grad_y = Tensor::randn([tokens[0], tokens[1], d], opts);
    let base = time(reps, || {
        let _g = tch::no_grad_guard();
        let _ = x.linear(&weight, Some(&bias));
    });
    emit("frozen_linear".into(), "moram", base)?;
    for r_total in [16i64, 64, 160] {
        for (label, path) in
            [("eval", ValuePath::Auto), ("eval_dense", ValuePath::Dense), ("eval_sparse", ValuePath::Sparse)]
        {
            let l = layer(r_total, path, &weight, &bias)?;
            let t = time(reps, || {
                let _g = tch::no_grad_guard();
                let _ = l.forward(&x);
            });
            emit(format!("{label}_R{r_total}"), "moram", t)?;
        }
        let mut l = layer(r_total, ValuePath::Auto, &weight, &bias)?;
        l.set_training(true);
        let trainable = l.bank().trainable_tensors();
        let mut failure = None;
        let t = time(reps, || {
            for p in &trainable {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
            match l.forward(&x) {
                Ok(y) => (y * &grad_y).sum(Kind::Float).backward(),
                Err(e) => failure = Some(e),
            }
        });
        if let Some(e) = failure {
            return Err(e.into());
        }
        emit(format!("train_fwd_bwd_R{r_total}"), "moram", t)?;
    }
    // Decoding-like: one token through a bank of 160 atoms, where the sparse path can pay off.
    let x1 = x.narrow(0, 0, 1).narrow(1, 0, 1);
    for (label, path) in
        [("eval_1tok", ValuePath::Auto), ("eval_1tok_dense", ValuePath::Dense), ("eval_1tok_sparse", ValuePath::Sparse)]
    {
        let l = layer(160, path, &weight, &bias)?;
        let t = time(reps * 20, || {
            let _g = tch::no_grad_guard();
            let _ = l.forward(&x1);
        });
        emit(format!("{label}_R160"), "moram", t)?;
    }
    Ok(())
}

fn clip(reps: usize, batch: i64) -> Result<()> {
    use moram_models::clip::{ClipConfig, ClipModel};
    let config = ClipConfig::vit_b16();
    let mut model = ClipModel::random(&config, 0, Kind::Float, Device::Cpu)?;
    let pixels = Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu));
    let run = |model: &ClipModel| {
        let mut failure = None;
        let t = time(reps, || {
            let _g = tch::no_grad_guard();
            if let Err(e) = model.encode_image(&pixels) {
                failure = Some(e);
            }
        });
        failure.map_or(Ok(t), Err)
    };
    emit(format!("clip_image_b{batch}"), "moram", run(&model)?)?;
    let spec =
        moram_models::TargetSpec { encoders: vec!["vision".into()], modules: vec!["qkvoinout".into()], layers: None };
    model.inject(&spec, &moram_core::Profile::Xtail.config())?;
    model.begin_task(0)?;
    emit(format!("clip_image_moram1task_b{batch}"), "moram", run(&model)?)?;
    Ok(())
}

fn llm(reps: usize, gguf: &std::path::Path, prompt_len: i64, new_tokens: usize) -> Result<()> {
    use moram_models::llm::{CausalLm, GgufFile, KvCache};
    let file = GgufFile::open(gguf)?;
    let model = CausalLm::from_gguf(&file, Kind::Float, Device::Cpu)?;
    // Deterministic ordinary token ids (no special tokens).
    let ids: Vec<i64> = (0..prompt_len).map(|i| 300 + (i * 37) % 5000).collect();
    let prompt = Tensor::from_slice(&ids).view([1, prompt_len]);
    let mut failure = None;
    // Prefill as generation runs it (next-token logits only), then a forward with every logit.
    for (case, last_only) in [(format!("prefill_{prompt_len}"), true), (format!("forward_{prompt_len}"), false)] {
        let t = time(reps, || {
            let _g = tch::no_grad_guard();
            let mut cache = KvCache::default();
            let out =
                if last_only { model.forward_last(&prompt, &mut cache) } else { model.forward(&prompt, &mut cache) };
            if let Err(e) = out {
                failure = Some(e);
            }
        });
        if let Some(e) = failure.take() {
            return Err(e.into());
        }
        emit(case, "moram", t)?;
    }
    let short = &ids[..16];
    let t = time(reps, || match model.generate_greedy(short, new_tokens, &[]) {
        Ok(out) if out.len() == new_tokens => {}
        Ok(out) => failure = Some(moram_models::Error::Input(format!("generated {} tokens", out.len()))),
        Err(e) => failure = Some(e),
    });
    if let Some(e) = failure {
        return Err(e.into());
    }
    emit(format!("greedy_{new_tokens}"), "moram", t)?;
    Ok(())
}

/// Dequantises every tensor of a GGUF file to f32, grouped by storage type, then the whole file.
fn dequant(reps: usize, gguf: &std::path::Path) -> Result<()> {
    use moram_models::llm::GgufFile;
    let file = GgufFile::open(gguf)?;
    let mut by_type: std::collections::BTreeMap<&'static str, Vec<&str>> = Default::default();
    for (name, info) in &file.tensors {
        by_type.entry(info.ggml_type.name()).or_default().push(name);
    }
    let run = |names: &[&str]| -> Result<()> {
        for n in names {
            let _ = file.tensor(n)?;
        }
        Ok(())
    };
    let mut failure = None;
    for (ty, names) in &by_type {
        let t = time(reps, || {
            if let Err(e) = run(names) {
                failure = Some(e);
            }
        });
        if let Some(e) = failure.take() {
            return Err(e);
        }
        emit(format!("type_{ty}"), "moram", t)?;
    }
    let all: Vec<&str> = by_type.values().flatten().copied().collect();
    let t = time(reps, || {
        if let Err(e) = run(&all) {
            failure = Some(e);
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    emit("whole_file".into(), "moram", t)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    ensure!(cli.threads >= 1 && cli.reps >= 1, "--threads and --reps must be at least 1");
    moram_core::runtime::tune_cpu_allocator();
    tch::set_num_threads(cli.threads);
    tch::set_num_interop_threads(1);
    match cli.which {
        Which::Core => core(cli.reps),
        Which::Clip { batch } => clip(cli.reps, batch),
        Which::Llm { gguf, prompt_len, new_tokens } => llm(cli.reps, &gguf, prompt_len, new_tokens),
        Which::Train { gguf, case, bf16, serve } => {
            let timing = if serve { train::Timing::Serve } else { train::Timing::Reps(cli.reps) };
            train::run(timing, &gguf, &case, if bf16 { Kind::BFloat16 } else { Kind::Float })
        }
        Which::EvalRow { config, set, by_task, serve } => {
            let timing = if serve { train::Timing::Serve } else { train::Timing::Reps(cli.reps) };
            eval_row::run(timing, &config, &set, by_task)
        }
        Which::Matmul => train::matmul(cli.reps),
        Which::GpuCheck { device, gguf, steps, out } => {
            let device = if device == "cuda" { Device::Cuda(0) } else { Device::Cpu };
            gpu_check::run(device, &gguf, steps.max(1), &out)
        }
        Which::Dequant { gguf } => {
            // The K-quant blocks are dequantised with rayon: one pool of --threads threads.
            rayon::ThreadPoolBuilder::new().num_threads(cli.threads as usize).build_global()?;
            dequant(cli.reps, &gguf)
        }
    }
}
