use super::*;
use moram_core::{MoramConfig, Profile};
use serde_json::Value;
use tch::Kind;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// The plan of one `moram-bench train` case (`benchmarks/src/train.rs`): r = 8 atoms on every
/// linear of the last 8 blocks, one task; `train_<L>` is one row of L tokens with 128 answer
/// tokens, `eval_long` 4 prompts of 512 tokens with 64 new, `eval_meetingbank` one of 4,096
/// with 32 new.
fn bench_plan(config: &LlmConfig, gguf_bytes: u64, base: Kind, case: &str) -> (MemoryPlan, Phase) {
    let n = config.num_hidden_layers as usize;
    let modules = config.block_linears();
    let sites = config
        .linear_sites()
        .iter()
        .filter(|s| s.layer + 8 >= n)
        .map(|s| {
            let (_, i, o) = modules.iter().find(|m| m.0 == s.module).copied().unwrap();
            (s.layer, i, o)
        })
        .collect();
    let (row_tokens, eval) = match case {
        "eval_long" => (0, (4, 512, 64)),
        "eval_meetingbank" => (0, (1, 4096, 32)),
        train => (train.strip_prefix("train_").unwrap().parse().unwrap(), (1, 1, 1)),
    };
    let input = LlmPlanInput {
        config: config.clone(),
        gguf_bytes: Some(gguf_bytes),
        base,
        device: PlanDevice::Cpu,
        sites,
        layer: MoramConfig { r: 8, top_k: 8, dropout: 0.0, ..Profile::TracePaper.config() },
        method: Default::default(),
        method_name: "moram".into(),
        tasks: 1,
        micro_rows: 1,
        row_tokens: row_tokens.max(128),
        answer_tokens: 128,
        eval_rows: eval.0,
        prompt_tokens: eval.1,
        new_tokens: eval.2,
        // The bench calls the model directly: no frozen-prefix cache.
        train_examples: Some(0),
        world: 1,
    };
    (input.plan().unwrap(), if row_tokens > 0 { Phase::Train } else { Phase::Eval })
}

/// Every measured peak of `benchmarks/results/plan.md` (SmolLM2-135M, which the factors come
/// from, and Gemma 3 270M, which checks them; f32 and bf16 base weights; training steps of 1,024
/// and 2,048 tokens and two generation batches) is within 15% of the plan's peak of that phase
/// (loading included: the process peak is the larger).
#[test]
fn the_plan_is_within_15_percent_of_every_measured_peak() {
    let text = std::fs::read_to_string(repo("benchmarks/results/plan.json")).unwrap();
    let measured: Value = serde_json::from_str(&text).unwrap();
    let mut worst: f64 = 0.0;
    let cases = measured["cases"].as_array().unwrap();
    assert!(cases.len() >= 16, "both models, both dtypes, four cases each");
    for case in cases {
        let model = case["model"].as_str().unwrap();
        let config = LlmConfig::from_hf_json(repo(&format!("tests/fixtures/llm/published/{model}.json"))).unwrap();
        let base = if case["dtype"] == "bf16" { Kind::BFloat16 } else { Kind::Float };
        let name = case["case"].as_str().unwrap();
        let (plan, phase) = bench_plan(&config, case["gguf_bytes"].as_u64().unwrap(), base, name);
        let predicted = plan.phase_bytes(phase).max(plan.phase_bytes(Phase::Load)) / MIB;
        let peak = case["peak_rss_mib"].as_f64().unwrap();
        let error = predicted / peak - 1.0;
        eprintln!("{model} {name} {base:?}: plan {predicted:.0} MiB, measured {peak:.0} MiB ({:+.1}%)", 100.0 * error);
        worst = worst.max(error.abs());
    }
    assert!(worst <= 0.15, "worst relative error {worst:.3}");
}

/// The parts add up as documented: the peak is the largest phase, atoms grow with the tasks for
/// MoRAM and not for SeqLoRA, EWC keeps two copies of the trainable atoms, and a data-parallel
/// rank's micro-batch shrinks with the world size.
#[test]
fn parts_follow_the_method_and_the_setting() {
    let config = LlmConfig::from_hf_json(repo("tests/fixtures/llm/published/smollm2-135m.json")).unwrap();
    let (plan, _) = bench_plan(&config, 0, Kind::Float, "train_1024");
    let phases = [Phase::Load, Phase::Train, Phase::Eval].map(|p| plan.phase_bytes(p));
    assert_eq!(plan.peak_bytes(), phases.iter().copied().fold(0.0, f64::max));
    let part = |p: &MemoryPlan, name: &str| p.parts.iter().find(|x| x.name.starts_with(name)).map(|x| x.bytes);
    // r (d_in + d_out) summed over the 56 sites of the last 8 blocks, f32.
    let width: i64 = config.block_linears().iter().map(|(_, i, o)| i + o).sum::<i64>() * 8;
    assert_eq!(part(&plan, "atoms"), Some(4.0 * 8.0 * width as f64));

    let run = |method: &str, tasks: usize, world: usize| {
        let text = std::fs::read_to_string(repo("configs/demo.toml")).unwrap();
        let mut cfg: RunConfig = toml::from_str(&text).unwrap();
        cfg.set_all(&[format!("method.name={method}").as_str()]).unwrap();
        cfg.data.as_mut().unwrap().tasks = (0..tasks).map(|t| format!("t{t}")).collect();
        let options = PlanOptions { device: PlanDevice::Cpu, world, train_examples: Some(64) };
        super::plan(&cfg, &PlanModel::Llm(Box::new(config.clone()), None), &options).unwrap()
    };
    let (moram4, moram8) = (run("moram", 4, 1), run("moram", 8, 1));
    let atoms = |p: &MemoryPlan| part(p, "atoms").unwrap();
    assert!((atoms(&moram8) / atoms(&moram4) - 2.0).abs() < 1e-9, "MoRAM's atoms grow with the tasks");
    let (seq4, seq8) = (run("seq-lora", 4, 1), run("seq-lora", 8, 1));
    assert_eq!(atoms(&seq4), atoms(&seq8), "SeqLoRA trains one adapter");
    assert_eq!(part(&run("ewc", 4, 1), "ewc state"), Some(2.0 * atoms(&seq4)));
    assert!(part(&moram4, "task gate").is_none());
    assert!(part(&run("moram-task-gated", 4, 1), "task gate").is_some());
    assert!(part(&run("moram-novelty-gated", 4, 1), "protected input subspaces").is_some());
    // The demo's batch of 8 in micro-batches of 8: 2 ranks get 4 rows each.
    let act = |p: &MemoryPlan| part(p, "training activations").unwrap();
    assert!((act(&moram4) / act(&run("moram", 4, 2)) - 2.0).abs() < 1e-9);
    assert!(part(&run("moram", 4, 2), "gradient all-reduce").is_some());
}

/// X-TAIL's class counts add up to the protocol's 1,100, and a CLIP plan encodes the largest
/// task's prompts (SUN397's 397) with gradient.
#[test]
fn an_xtail_plan_encodes_the_largest_tasks_prompts() {
    let total: usize = crate::data::xtail::xtail_keys().map(|k| crate::data::xtail::xtail_classes(k).unwrap()).sum();
    assert_eq!(total, 1100);
    let text = std::fs::read_to_string(repo("configs/xtail/order1-paper.toml")).unwrap();
    let cfg: RunConfig = toml::from_str(&text).unwrap();
    let options = PlanOptions { device: PlanDevice::Cuda, world: 1, train_examples: None };
    let p = super::plan(&cfg, &PlanModel::Clip(Box::new(ClipConfig::vit_b16())), &options).unwrap();
    let act = p.parts.iter().find(|x| x.name == "training activations").unwrap();
    assert!(act.note.contains("397 class prompts"), "{}", act.note);
    // 4,423,680 trainable atoms per task (protocol; paper Table 19's 4.4 M), f32.
    let atoms = p.parts.iter().find(|x| x.name == "atoms").unwrap();
    assert!(atoms.note.starts_with("4.42 M trainable"), "{}", atoms.note);
}
