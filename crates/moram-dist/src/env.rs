//! The launcher's environment: what torchrun (or `moram train --nproc`) tells each worker.

use crate::error::{Error, Result};
use std::time::Duration;

/// Seconds a collective or the rendezvous may wait before failing (`MORAM_DIST_TIMEOUT`):
/// torch.distributed's default, 30 minutes.
pub const DEFAULT_TIMEOUT_S: f64 = 1800.0;

/// Where this worker sits in the job and how to meet the others.
#[derive(Debug, Clone, PartialEq)]
pub struct DistEnv {
    /// `RANK`: 0 ..= world - 1.
    pub rank: usize,
    /// `WORLD_SIZE`: number of workers in the job.
    pub world: usize,
    /// `LOCAL_RANK`: index on this machine (selects the GPU); `rank` when unset.
    pub local_rank: usize,
    /// `MASTER_ADDR`: host of the rendezvous store.
    pub master_addr: String,
    /// `MASTER_PORT`: port of the rendezvous store.
    pub master_port: u16,
    /// `TORCHELASTIC_USE_AGENT_STORE=True`: torchrun's agent hosts the store, every worker is a
    /// client; otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT`: keys of a restarted attempt live under their own prefix.
    pub restart_count: u32,
    /// `GLOO_SOCKET_IFNAME`: network interface for Gloo's transport (multi-node).
    pub socket_interface: Option<String>,
    /// `MORAM_DIST_TIMEOUT` (seconds), [`DEFAULT_TIMEOUT_S`] when unset.
    pub timeout: Duration,
}

fn parse<T: std::str::FromStr>(name: &str, value: &str, expected: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Env { var: name.into(), value: value.into(), expected: expected.into() })
}

fn missing(name: &str, expected: &str) -> Error {
    Error::Env { var: name.into(), value: String::new(), expected: format!("{expected} (WORLD_SIZE > 1 needs it)") }
}

impl DistEnv {
    /// Reads the launcher's variables. `None` when `WORLD_SIZE` is unset or 1 (one process, no
    /// communication); an error names the variable when one is missing or malformed.
    pub fn from_env() -> Result<Option<DistEnv>> {
        DistEnv::from_vars(|name| std::env::var(name).ok())
    }

    /// [`DistEnv::from_env`] over any source of variables (empty values count as unset).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let var = |name: &str| get(name).filter(|v| !v.is_empty());
        let Some(world) = var("WORLD_SIZE") else { return Ok(None) };
        let world: usize = parse("WORLD_SIZE", &world, "a positive integer")?;
        if world == 0 {
            return Err(Error::Env { var: "WORLD_SIZE".into(), value: "0".into(), expected: "at least 1".into() });
        }
        if world == 1 {
            return Ok(None);
        }
        let rank_text = var("RANK").ok_or_else(|| missing("RANK", "this worker's rank"))?;
        let rank: usize = parse("RANK", &rank_text, "an integer")?;
        if rank >= world {
            return Err(Error::Env {
                var: "RANK".into(),
                value: rank_text,
                expected: format!("a rank below WORLD_SIZE={world}"),
            });
        }
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v, "an integer")?,
            None => rank,
        };
        let master_addr = var("MASTER_ADDR").ok_or_else(|| missing("MASTER_ADDR", "the store's host"))?;
        let port_text = var("MASTER_PORT").ok_or_else(|| missing("MASTER_PORT", "the store's port"))?;
        let master_port: u16 = parse("MASTER_PORT", &port_text, "a port number (1-65535)")?;
        if master_port == 0 {
            return Err(Error::Env {
                var: "MASTER_PORT".into(),
                value: port_text,
                expected: "a port in 1-65535".into(),
            });
        }
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let restart_count = match var("TORCHELASTIC_RESTART_COUNT") {
            Some(v) => parse("TORCHELASTIC_RESTART_COUNT", &v, "an integer")?,
            None => 0,
        };
        let timeout_s: f64 = match var("MORAM_DIST_TIMEOUT") {
            Some(v) => parse("MORAM_DIST_TIMEOUT", &v, "seconds (a positive number)")?,
            None => DEFAULT_TIMEOUT_S,
        };
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(Error::Env {
                var: "MORAM_DIST_TIMEOUT".into(),
                value: timeout_s.to_string(),
                expected: "seconds (a positive number)".into(),
            });
        }
        Ok(Some(DistEnv {
            rank,
            world,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            restart_count,
            socket_interface: var("GLOO_SOCKET_IFNAME"),
            timeout: Duration::from_secs_f64(timeout_s),
        }))
    }

    /// The store's key prefix: one per torchrun restart attempt, as torch.distributed uses.
    pub fn store_prefix(&self) -> String {
        format!("/moram/attempt_{}/", self.restart_count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    const JOB: [(&str, &str); 4] =
        [("WORLD_SIZE", "4"), ("RANK", "2"), ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29500")];

    #[test]
    fn no_world_size_or_one_means_one_process() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
    }

    #[test]
    fn torchrun_variables_are_read() {
        let mut vars = JOB.to_vec();
        vars.extend([
            ("LOCAL_RANK", "0"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "3"),
        ]);
        vars.push(("MORAM_DIST_TIMEOUT", "12.5"));
        let e = env(&vars).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.local_rank, e.master_port), (2, 4, 0, 29500));
        assert_eq!(e.master_addr, "10.0.0.1");
        assert!(e.agent_store);
        assert_eq!(e.store_prefix(), "/moram/attempt_3/");
        assert_eq!(e.timeout, Duration::from_millis(12_500));
        // Without torchrun's agent: rank 0 hosts the store, LOCAL_RANK defaults to RANK.
        let e = env(&JOB).unwrap().unwrap();
        assert!(!e.agent_store);
        assert_eq!(e.local_rank, 2);
        assert_eq!(e.timeout, Duration::from_secs(1800));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: [(&str, &str, &str); 6] = [
            ("WORLD_SIZE", "two", "WORLD_SIZE"),
            ("WORLD_SIZE", "0", "WORLD_SIZE"),
            ("RANK", "4", "below WORLD_SIZE=4"),
            ("MASTER_PORT", "70000", "MASTER_PORT"),
            ("MASTER_PORT", "0", "MASTER_PORT"),
            ("MORAM_DIST_TIMEOUT", "-1", "MORAM_DIST_TIMEOUT"),
        ];
        for (key, value, expected) in cases {
            let mut vars: Vec<(&str, &str)> = JOB.iter().copied().filter(|(k, _)| *k != key).collect();
            vars.push((key, value));
            let err = env(&vars).unwrap_err().to_string();
            assert!(err.contains(expected), "{key}={value}: {err}");
        }
        for missing in ["RANK", "MASTER_ADDR", "MASTER_PORT"] {
            let vars: Vec<(&str, &str)> = JOB.iter().copied().filter(|(k, _)| *k != missing).collect();
            let err = env(&vars).unwrap_err().to_string();
            assert!(err.contains(missing), "{missing}: {err}");
        }
    }
}
