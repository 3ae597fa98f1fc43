//! Starting N local workers without torchrun: what `moram train --nproc N` does.
//!
//! Each worker is this program again with the variables torchrun would set (`RANK`,
//! `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR=127.0.0.1`, a free
//! `MASTER_PORT`). When one worker fails, the others get `grace` to fail on their own (their
//! collectives notice the lost peer) and are then killed, so nothing is left running.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// A free TCP port on the loopback interface (bound, read, released; as torchrun picks one).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::Worker { rank: 0, message: format!("finding a free port: {e}") })?;
    let port = listener.local_addr().map_err(|e| Error::Worker { rank: 0, message: e.to_string() })?.port();
    Ok(port)
}

/// How the local workers ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit status of each rank.
    pub statuses: Vec<ExitStatus>,
    /// The first rank that failed, if any.
    pub first_failure: Option<usize>,
}

/// How to start local workers.
#[derive(Debug, Clone)]
pub struct LocalLaunch {
    /// Number of workers.
    pub nproc: usize,
    /// Extra environment variables for every worker.
    pub envs: Vec<(String, String)>,
    /// After a worker fails, how long the others may take to fail on their own before they are
    /// killed.
    pub grace: Duration,
    /// Kill every worker after this long (tests); `None`: wait as long as they run.
    pub limit: Option<Duration>,
    /// Write each worker's stdout and stderr to `rank{r}.log` here instead of this terminal.
    pub log_dir: Option<PathBuf>,
}

impl LocalLaunch {
    /// `nproc` workers, a 60-second grace, no limit.
    pub fn new(nproc: usize) -> LocalLaunch {
        LocalLaunch { nproc, envs: Vec::new(), grace: Duration::from_secs(60), limit: None, log_dir: None }
    }
}

/// Runs `program args` as `launch.nproc` workers on this machine and waits for all of them.
/// Errors when a worker cannot be started; a worker's failure is in [`Outcome::first_failure`].
pub fn run_local(program: &Path, args: &[String], launch: &LocalLaunch) -> Result<Outcome> {
    let (nproc, grace) = (launch.nproc, launch.grace);
    let started = Instant::now();
    if nproc == 0 {
        return Err(Error::Worker { rank: 0, message: "--nproc must be at least 1".into() });
    }
    let port = free_port()?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let (stdout, stderr) = match &launch.log_dir {
            Some(dir) => {
                let path = dir.join(format!("rank{rank}.log"));
                let file = std::fs::File::create(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
                let copy = file.try_clone().map_err(|source| Error::Io { path, source })?;
                (Stdio::from(file), Stdio::from(copy))
            }
            None => (Stdio::inherit(), Stdio::inherit()),
        };
        let child = Command::new(program)
            .stdout(stdout)
            .stderr(stderr)
            .args(args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("WORLD_SIZE", nproc.to_string())
            .env("LOCAL_WORLD_SIZE", nproc.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            .envs(launch.envs.iter().map(|(k, v)| (k, v)))
            .spawn();
        match child {
            Ok(c) => children.push(Some(c)),
            Err(e) => {
                for c in children.iter_mut().flatten() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(Error::Worker { rank, message: format!("starting {}: {e}", program.display()) });
            }
        }
    }
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; nproc];
    let mut first_failure = None;
    let mut deadline: Option<Instant> = None;
    while statuses.iter().any(Option::is_none) {
        for rank in 0..nproc {
            let Some(child) = children[rank].as_mut() else { continue };
            match child.try_wait() {
                Ok(Some(status)) => {
                    statuses[rank] = Some(status);
                    children[rank] = None;
                    if !status.success() && first_failure.is_none() {
                        tracing::error!(rank, %status, "worker failed; waiting {:?} for the others", grace);
                        first_failure = Some(rank);
                        deadline = Some(Instant::now() + grace);
                    }
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Worker { rank, message: format!("waiting: {e}") }),
            }
        }
        let over_limit = launch.limit.is_some_and(|l| started.elapsed() >= l);
        if over_limit {
            tracing::error!("workers ran past the limit of {:?}", launch.limit);
            first_failure = first_failure.or_else(|| statuses.iter().position(Option::is_none));
        }
        if over_limit || deadline.is_some_and(|d| Instant::now() >= d) {
            for (rank, child) in children.iter_mut().enumerate() {
                if let Some(c) = child.as_mut() {
                    tracing::error!(rank, "worker still running after a peer failed; killing it");
                    let _ = c.kill();
                    statuses[rank] = c.wait().ok();
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let statuses = statuses
        .into_iter()
        .enumerate()
        .map(|(rank, s)| s.ok_or_else(|| Error::Worker { rank, message: "exit status lost".into() }))
        .collect::<Result<Vec<_>>>()?;
    Ok(Outcome { statuses, first_failure })
}
