//! `moram train|resume` as one worker of a data-parallel job, or as the launcher of N local
//! workers (`--nproc N`, what `torchrun --nproc-per-node N --no-python moram ...` also does).

use anyhow::{bail, Context, Result};
use moram_cl::config::DeviceChoice;
use moram_cl::RunConfig;
use moram_dist::launch::{run_local, LocalLaunch};
use moram_dist::{Backend, Group};
use std::sync::Arc;

/// Starts `n` workers running this command line without `--nproc`, each with `threads` libtorch
/// threads (default: this machine's cores / n), and waits for them. A failed worker fails the
/// command, naming its rank.
pub fn launch(n: usize, threads: Option<i32>) -> Result<()> {
    if n == 0 {
        bail!("--nproc must be at least 1");
    }
    if std::env::var_os("WORLD_SIZE").is_some() {
        bail!("--nproc inside a launched worker (WORLD_SIZE is set): let the launcher start the workers");
    }
    let program = std::env::current_exe().context("locating the moram executable")?;
    let mut args: Vec<String> = Vec::new();
    let mut given = std::env::args().skip(1);
    while let Some(a) = given.next() {
        if a == "--nproc" {
            given.next();
        } else if !a.starts_with("--nproc=") {
            args.push(a);
        }
    }
    if threads.is_none() {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        let each = (cores / n).max(1);
        args.splice(0..0, ["--threads".to_string(), each.to_string()]);
    }
    // Ctrl-C reaches every worker of the terminal's process group; they stop together at the
    // next step boundary, and this process waits for them instead of dying first.
    ctrlc::set_handler(|| eprintln!("\nwaiting for the workers to stop after their current step ..."))
        .context("installing the Ctrl-C handler")?;
    let launch = LocalLaunch::new(n);
    tracing::info!(workers = n, "starting local data-parallel workers");
    let outcome = run_local(&program, &args, &launch)?;
    if let Some(rank) = outcome.first_failure {
        bail!("worker {rank} of {n} failed ({}); see its messages above", outcome.statuses[rank]);
    }
    Ok(())
}

/// This process's place in the job the environment describes (alone when `WORLD_SIZE` is unset):
/// Gloo for a CPU run, NCCL for a CUDA run.
pub fn join(cfg: &RunConfig) -> Result<Arc<Group>> {
    let cuda = cfg.model.as_ref().is_some_and(|m| match m.device {
        DeviceChoice::Cuda(_) => true,
        DeviceChoice::Auto => tch::Cuda::is_available(),
        DeviceChoice::Cpu => false,
    });
    let backend = if cuda { Backend::Nccl } else { Backend::Gloo };
    let group = Group::from_env(backend).context("joining the data-parallel job")?;
    if group.world() > 1 {
        tracing::info!(rank = group.rank(), world = group.world(), ?backend, "data-parallel worker");
    }
    Ok(Arc::new(group))
}

/// The config this rank builds its model from: on CUDA, the GPU of its `LOCAL_RANK`. The run
/// folder keeps the config as given.
pub fn config_for_rank(cfg: &RunConfig, group: &Group) -> Result<RunConfig> {
    let mut cfg = cfg.clone();
    if group.world() > 1 {
        if let Some(m) = cfg.model.as_mut() {
            if m.device.resolve()?.is_cuda() {
                m.device = DeviceChoice::Cuda(group.local_rank());
            }
        }
    }
    Ok(cfg)
}
