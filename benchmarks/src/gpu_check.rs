//! `moram-bench gpu-check`: what `cargo xtask gpu-check` runs on a device (docs/performance.md,
//! "GPU check"). Everything is computed on the CPU and on the device, from the same weights and
//! inputs, and compared:
//!
//! 1. one MoRAM layer (768 x 768, 8 x 197 tokens, R = 16 and 160 atoms): output, input gradient
//!    and atom gradients, f32 and bf16;
//! 2. SmolLM2-135M from its GGUF: last-position logits of a 4-prompt batch and 12 greedy tokens,
//!    f32 and bf16 base weights;
//! 3. 20 Adam steps of r = 8 atoms on the last 8 blocks (8 rows of 192 tokens): every step's loss;
//! 4. the device's time of a training step and of a batched generation (16 prompts of 160 tokens,
//!    8 new), and its peak memory;
//! 5. a sum all-reduce over a process group of one (NCCL on CUDA, Gloo on the CPU).
//!
//! With `--device cpu` both sides are the CPU: the script then checks itself (it must run and
//! agree exactly) and CI keeps it from rotting.

use crate::train::{eval_batch, peak_rss_mb, train_batch};
use anyhow::{bail, Context, Result};
use moram_cl::config::{OptimizerConfig, OptimizerKind, ScheduleKind};
use moram_cl::optim::Adam;
use moram_core::{MoramLinear, ValuePath};
use moram_models::llm::{CausalLm, GenerationConfig, GgufFile, KvCache};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Largest `|a - b|` over the largest `|a|` (the reference's scale), on the CPU in f64.
fn rel_diff(reference: &Tensor, other: &Tensor) -> f64 {
    let a = reference.to_device(Device::Cpu).to_kind(Kind::Double);
    let b = other.to_device(Device::Cpu).to_kind(Kind::Double);
    let scale = a.abs().max().double_value(&[]).max(1e-30);
    (a - b).abs().max().double_value(&[]) / scale
}

/// Tolerance of a relative difference between two devices in `kind` (documented in the report).
fn tolerance(kind: Kind) -> f64 {
    if kind == Kind::Float {
        1e-4
    } else {
        3e-2
    }
}

/// [`crate::layer`] (`r_total` atoms in tasks of 16) on `weight`'s device, every atom equal to
/// `like`'s when given (so two devices hold the same layer).
fn layer_on(r_total: i64, weight: &Tensor, bias: &Tensor, like: Option<&MoramLinear>) -> Result<MoramLinear> {
    let layer = crate::layer(r_total, ValuePath::Auto, weight, bias)?;
    if let Some(like) = like {
        let _guard = tch::no_grad_guard();
        let all = |l: &MoramLinear| {
            let mut v = l.bank().frozen_tensors();
            v.extend(l.bank().trainable_tensors());
            v
        };
        for (mut mine, theirs) in all(&layer).into_iter().zip(all(like)) {
            mine.copy_(&theirs);
        }
    }
    Ok(layer)
}

/// Check 1: the layer's forward and backward on both devices.
fn layer_parity(device: Device) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for kind in [Kind::Float, Kind::BFloat16] {
        for r_total in [16i64, 160] {
            tch::manual_seed(0);
            let d = 768i64;
            let weight = (Tensor::randn([d, d], (Kind::Float, Device::Cpu)) * 0.02).to_kind(kind);
            let bias = (Tensor::randn([d], (Kind::Float, Device::Cpu)) * 0.02).to_kind(kind);
            let x = Tensor::randn([8, 197, d], (Kind::Float, Device::Cpu)).to_kind(kind);
            let g = Tensor::randn([8, 197, d], (Kind::Float, Device::Cpu)).to_kind(kind);
            let mut sides = Vec::new();
            let cpu = layer_on(r_total, &weight, &bias, None)?;
            let dev = layer_on(r_total, &weight.to_device(device), &bias.to_device(device), Some(&cpu))?;
            for l in [&cpu, &dev] {
                let x = x.to_device(l.weight().device()).detach().set_requires_grad(true);
                let y = l.forward(&x)?;
                (&y * g.to_device(y.device())).sum(Kind::Float).backward();
                let grads: Vec<Tensor> = l.bank().trainable_tensors().iter().map(|t| t.grad()).collect();
                sides.push((y.detach(), x.grad(), grads));
            }
            let (a, b) = (&sides[0], &sides[1]);
            let atoms = a.2.iter().zip(&b.2).map(|(p, q)| rel_diff(p, q)).fold(0.0, f64::max);
            let diffs = [rel_diff(&a.0, &b.0), rel_diff(&a.1, &b.1), atoms];
            let worst = diffs.iter().copied().fold(0.0, f64::max);
            rows.push(json!({
                "check": "layer", "kind": format!("{kind:?}"), "atoms": r_total,
                "output": diffs[0], "input_grad": diffs[1], "atom_grads": diffs[2],
                "tolerance": tolerance(kind), "pass": worst <= tolerance(kind),
            }));
        }
    }
    Ok(rows)
}

/// The model of checks 2-4 ([`crate::train::model_on`]: SmolLM2 with r = 8 atoms on the last 8
/// blocks) in `kind` on `device`, its atoms equal to `like`'s when given.
fn model_on(gguf: &GgufFile, kind: Kind, device: Device, like: Option<&CausalLm>) -> Result<CausalLm> {
    let model = crate::train::model_on(gguf, kind, device)?;
    if let Some(like) = like {
        let _guard = tch::no_grad_guard();
        for (mut mine, theirs) in model.trainable_tensors().into_iter().zip(like.trainable_tensors()) {
            mine.copy_(&theirs);
        }
    }
    Ok(model)
}

/// Check 2 on `cpu` and `dev` (the same model on two devices): last-position logits of a prompt
/// and 12 greedy tokens for four prompts.
fn model_parity(cpu: &CausalLm, dev: &CausalLm, kind: Kind) -> Result<Value> {
    let (prompts, _) = eval_batch("short")?;
    let prompts: Vec<Vec<i64>> = prompts.into_iter().take(4).collect();
    let ids = Tensor::from_slice(&prompts[0]).unsqueeze(0);
    let logits: Vec<Tensor> = [cpu, dev]
        .iter()
        .map(|m| m.forward_last(&ids.to_device(m.device()), &mut KvCache::default()))
        .collect::<std::result::Result<_, _>>()?;
    let settings = GenerationConfig { max_new_tokens: 12, pad_id: 0, ..GenerationConfig::default() };
    let tokens: Vec<Vec<Vec<i64>>> = [cpu, dev]
        .iter()
        .map(|m| m.generate_with_prefixes(&prompts, &settings, None))
        .collect::<std::result::Result<_, _>>()?;
    let same: usize =
        tokens[0].iter().zip(&tokens[1]).map(|(a, b)| a.iter().zip(b).take_while(|(x, y)| x == y).count()).sum();
    let total: usize = tokens[0].iter().map(Vec::len).sum();
    let logit_diff = rel_diff(&logits[0], &logits[1]);
    // bf16 greedy decoding may part ways where two logits are within rounding.
    let pass = logit_diff <= tolerance(kind) && (kind != Kind::Float || same == total);
    Ok(json!({
        "check": "smollm2", "kind": format!("{kind:?}"), "logits": logit_diff,
        "greedy_tokens_equal": same, "greedy_tokens": total, "tolerance": tolerance(kind), "pass": pass,
    }))
}

/// Checks 3-4 on `cpu` and `dev`: `steps` Adam steps on both (every loss compared), the device's
/// step time, and a batched generation's time on the device.
fn training_parity(cpu: &mut CausalLm, dev: &mut CausalLm, kind: Kind, steps: usize) -> Result<(Value, Value)> {
    let (ids, labels, mask) = train_batch(192);
    let device = dev.device();
    let mut losses = Vec::new();
    let mut step_ms = Vec::new();
    for m in [&mut *cpu, &mut *dev] {
        m.set_training(true);
        let opt_config = OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: 5e-4,
            betas: [0.9, 0.95],
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: ScheduleKind::Constant,
            warmup_steps: 0,
        };
        let mut opt = Adam::new(m.trainable_tensors(), &opt_config);
        let d = m.device();
        let (ids, labels, mask) = (ids.to_device(d), labels.to_device(d), mask.to_device(d));
        let mut curve = Vec::new();
        for _ in 0..steps {
            let t = Instant::now();
            let loss = m.causal_lm_loss(&ids, &labels, Some(&mask))?;
            loss.backward();
            opt.clip_grad_norm(Some(1.0))?;
            opt.step(5e-4);
            opt.zero_grad();
            curve.push(loss.double_value(&[]));
            step_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        losses.push(curve);
    }
    // The device's steps are the second half.
    let mut step_ms = step_ms.split_off(steps);
    if losses.iter().flatten().any(|l| !l.is_finite()) {
        bail!("a non-finite loss in the {kind:?} training check: {losses:?}");
    }
    let worst = losses[0].iter().zip(&losses[1]).map(|(a, b)| (a - b).abs() / a.abs().max(1e-12)).fold(0.0, f64::max);
    let tol = if kind == Kind::Float { 1e-3 } else { 5e-2 };
    let row = json!({
        "check": "training", "kind": format!("{kind:?}"), "steps": steps,
        "first_loss": [losses[0][0], losses[1][0]], "last_loss": [losses[0][steps - 1], losses[1][steps - 1]],
        "worst_relative_loss_gap": worst, "tolerance": tol, "pass": worst <= tol,
    });
    step_ms.sort_by(f64::total_cmp);
    let median_step = step_ms.get(step_ms.len() / 2).copied().unwrap_or(f64::NAN);

    dev.set_training(false);
    let (prompts, new) = eval_batch("short")?;
    let settings = GenerationConfig { max_new_tokens: new, pad_id: 0, ..GenerationConfig::default() };
    dev.generate_with_prefixes(&prompts, &settings, None)?; // warm-up
    let t = Instant::now();
    let out = dev.generate_with_prefixes(&prompts, &settings, None)?;
    let gen_ms = t.elapsed().as_secs_f64() * 1e3;
    let generated: usize = out.iter().map(Vec::len).sum();
    let timing = json!({
        "device": format!("{device:?}"),
        "train_step_ms": median_step, "train_tokens_per_s": (8 * 192) as f64 / median_step * 1e3,
        "generate_ms": gen_ms, "generated_tokens_per_s": generated as f64 / gen_ms * 1e3,
    });
    Ok((row, timing))
}

/// Check 5: a sum all-reduce over a group of one process on the device's backend.
fn collective(device: Device) -> Result<Value> {
    use moram_dist::{Backend, DistEnv, Group, ReduceOp};
    let backend = if device.is_cuda() { Backend::Nccl } else { Backend::Gloo };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // A real process group of one (the launcher's variables would give `Group::single`, which
    // skips the backend).
    let env = DistEnv {
        rank: 0,
        world: 1,
        local_rank: 0,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart_count: 0,
        socket_interface: None,
        timeout: std::time::Duration::from_secs(120),
    };
    let group = Group::connect(&env, backend)?;
    let mut t = Tensor::arange(1 << 20, (Kind::Float, group.collective_device()));
    let expected = t.copy();
    let start = Instant::now();
    group.all_reduce(&mut t, ReduceOp::Sum)?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    let pass = rel_diff(&expected, &t) == 0.0;
    let two = if device.is_cuda() && tch::Cuda::device_count() >= 2 {
        "2 GPUs present: run `moram train --nproc 2` on a tiny config to check two processes (not automated yet)"
    } else {
        "not run: one device"
    };
    Ok(json!({"check": "all-reduce", "backend": format!("{backend:?}"), "world": 1, "elements": 1 << 20,
              "ms": ms, "pass": pass, "two_processes": two}))
}

/// Peak device memory in MiB: the CPU's resident peak, or the largest `memory.used` nvidia-smi
/// reported for this process while `sampler` ran.
fn peak_memory(device: Device, sampled: Option<f64>) -> Value {
    match device {
        Device::Cpu => json!({"what": "peak RSS (MiB)", "value": peak_rss_mb()}),
        _ => {
            json!({"what": "largest nvidia-smi used_memory of this process, sampled every 0.2 s (MiB)", "value": sampled})
        }
    }
}

/// Samples this process's GPU memory with nvidia-smi every 0.2 s until `stop` is set; returns the
/// largest value seen (MiB), `None` without nvidia-smi.
fn sample_gpu_memory(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Option<f64> {
    let pid = std::process::id().to_string();
    let mut peak: Option<f64> = None;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let out = std::process::Command::new("nvidia-smi")
            .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
            .output()
            .ok()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut f = line.split(',').map(str::trim);
            if f.next() == Some(pid.as_str()) {
                if let Some(v) = f.next().and_then(|v| v.parse::<f64>().ok()) {
                    peak = Some(peak.map_or(v, |p: f64| p.max(v)));
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    peak
}

/// Runs every check on `device`, writes `gpu-check.json` and `gpu-check.md` into `out`, and fails
/// when a check fails.
pub fn run(device: Device, gguf: &Path, steps: usize, out: &Path) -> Result<()> {
    if device.is_cuda() && !tch::Cuda::is_available() {
        bail!("--device cuda: no CUDA device is visible to libtorch (tch::Cuda::is_available() is false)");
    }
    let start = Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = device.is_cuda().then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || sample_gpu_memory(stop))
    });
    let file = GgufFile::open(gguf).with_context(|| format!("reading {}", gguf.display()))?;
    let stage = |what: &str| eprintln!("[{:6.1} s] {what}", start.elapsed().as_secs_f64());
    let mut checks = layer_parity(device)?;
    stage("layer checked");
    let mut timing = json!({});
    for kind in [Kind::Float, Kind::BFloat16] {
        let mut cpu = model_on(&file, kind, Device::Cpu, None)?;
        let mut dev = model_on(&file, kind, device, Some(&cpu))?;
        stage(&format!("SmolLM2 {kind:?} loaded twice"));
        checks.push(model_parity(&cpu, &dev, kind)?);
        stage(&format!("SmolLM2 {kind:?} logits and greedy tokens compared"));
        let (row, t) = training_parity(&mut cpu, &mut dev, kind, steps)?;
        checks.push(row);
        timing[format!("{kind:?}")] = t;
        stage(&format!("SmolLM2 {kind:?} training compared and timed"));
    }
    checks.push(collective(device)?);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.and_then(|h| h.join().ok()).flatten();
    let passed = checks.iter().all(|c| c["pass"] == true);
    let report = json!({
        "device": format!("{device:?}"),
        "cuda_devices": tch::Cuda::device_count(),
        "seconds": start.elapsed().as_secs_f64(),
        "passed": passed,
        "checks": checks,
        "timing": timing,
        "peak_memory": peak_memory(device, sampled),
    });
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("gpu-check.json"), serde_json::to_string_pretty(&report)? + "\n")?;
    std::fs::write(out.join("gpu-check.md"), markdown(&report))?;
    println!("{}", markdown(&report));
    if !passed {
        bail!("a check failed; see {}", out.join("gpu-check.md").display());
    }
    Ok(())
}

/// The report as Markdown.
fn markdown(r: &Value) -> String {
    let mut s = format!(
        "# GPU check: CPU against {} ({} CUDA device(s)), {:.0} s, {}\n\n| check | kind | figures | tolerance | pass |\n|---|---|---|---:|---|\n",
        r["device"].as_str().unwrap_or("?"),
        r["cuda_devices"],
        r["seconds"].as_f64().unwrap_or(f64::NAN),
        if r["passed"] == true { "all passed" } else { "FAILED" }
    );
    for c in r["checks"].as_array().into_iter().flatten() {
        let mut figures: Vec<String> = Vec::new();
        for (k, v) in c.as_object().into_iter().flatten() {
            if !["check", "kind", "tolerance", "pass"].contains(&k.as_str()) {
                figures.push(match v.as_f64() {
                    Some(x) if x.fract() != 0.0 => format!("{k} {x:.3e}"),
                    _ => format!("{k} {v}"),
                });
            }
        }
        s += &format!(
            "| {} | {} | {} | {} | {} |\n",
            c["check"].as_str().unwrap_or("?"),
            c["kind"].as_str().unwrap_or("-"),
            figures.join(", "),
            c["tolerance"].as_f64().map_or("-".into(), |t| format!("{t:.0e}")),
            c["pass"]
        );
    }
    s += "\n| base weights | train step (ms) | train tokens/s | generation (ms) | generated tokens/s |\n|---|---:|---:|---:|---:|\n";
    for (kind, t) in r["timing"].as_object().into_iter().flatten() {
        let f = |k: &str| t[k].as_f64().map_or("-".into(), |v| format!("{v:.1}"));
        s += &format!(
            "| {kind} | {} | {} | {} | {} |\n",
            f("train_step_ms"),
            f("train_tokens_per_s"),
            f("generate_ms"),
            f("generated_tokens_per_s")
        );
    }
    s += &format!("\nPeak memory: {} = {}\n", r["peak_memory"]["what"], r["peak_memory"]["value"]);
    s
}
