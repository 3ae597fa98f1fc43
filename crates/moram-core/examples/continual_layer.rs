//! A MoRAM layer learning three toy tasks in a row: each task appends 8 atoms, freezes the older
//! ones, trains only its own atoms with AdamW, and the frozen checksum proves old atoms never move.
//!
//! Run with `cargo run -p moram-core --example continual_layer`.

use moram_core::{plan_pruning, save_adapter, AdapterFile, MoramConfig, MoramLinear, PruneScope, StatsMode};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    tch::manual_seed(0);
    let (d_in, d_out) = (32, 16);
    let weight = Tensor::randn([d_out, d_in], (Kind::Float, Device::Cpu)) * 0.1;
    let config = MoramConfig { r: 8, top_k: 8, temperature: 0.1, threshold: 0.2, ..MoramConfig::default() };
    let mut layer = MoramLinear::new(&weight, None, &config)?;

    for task in 0..3u32 {
        layer.bank_mut().begin_task(task)?;
        let frozen_before = layer.bank().frozen_checksum()?;
        // Each task: map inputs from its own region of input space to a task-specific target.
        let target_map = Tensor::randn([d_out, d_in], (Kind::Float, Device::Cpu)) * 0.1;
        let mut opt = tch::COptimizer::adamw(1e-2, 0.9, 0.999, 0.01, 1e-8, false)?;
        for t in layer.bank().trainable_tensors() {
            opt.add_parameters(&t, 0)?;
        }
        layer.set_training(true);
        let (mut first_loss, mut loss_value) = (f64::NAN, 0.0);
        for step in 0..200 {
            let x = Tensor::randn([64, d_in], (Kind::Float, Device::Cpu)) + (task as f64 - 1.0);
            let y = layer.forward(&x)?;
            let loss = (y - x.matmul(&(&weight + &target_map).tr())).square().mean(Kind::Float);
            opt.zero_grad()?;
            loss.backward();
            opt.step()?;
            loss_value = loss.double_value(&[]);
            if step == 0 {
                first_loss = loss_value;
            }
        }
        layer.set_training(false);
        assert_eq!(layer.bank().frozen_checksum()?, frozen_before, "frozen atoms moved");
        println!(
            "task {task}: {} atoms ({} frozen), training loss {first_loss:.4} -> {loss_value:.4}",
            layer.bank().len(),
            layer.bank().n_frozen()
        );
    }

    // Post-pruning: keep the atoms carrying 99% of the activation mass on some inputs.
    layer.start_stats(StatsMode::AsUsed);
    let _ = layer.forward(&(Tensor::randn([256, d_in], (Kind::Float, Device::Cpu)) + 1.0))?;
    let stats = layer.take_stats().expect("recording was on");
    let plan = plan_pruning(layer.bank(), &stats, 0.99, PruneScope::All)?;
    println!("pruning at 99% mass keeps {} of {} atoms", plan.keep.len(), layer.bank().len());

    let dir = std::env::temp_dir().join(format!("moram-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("adapter.safetensors");
    save_adapter(&path, [("layer", layer.bank())], &Default::default())?;
    let reloaded = AdapterFile::load(&path, Device::Cpu)?;
    println!("saved and reloaded {} ({} tasks)", path.display(), reloaded.num_tasks());
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
