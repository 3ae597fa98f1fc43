//! [`Group`]: the workers of one data-parallel job and the collectives the trainer needs.
//!
//! A group of one process does no communication and never calls into C++. Larger groups meet
//! through a c10d `TCPStore` (hosted by rank 0, or by torchrun's agent) and communicate through a
//! c10d process group: Gloo for CPU tensors, NCCL for GPU tensors (`nccl` feature).
//!
//! Every rank also writes a heartbeat into the store every [`HEARTBEAT`]; when a collective fails,
//! the error names the ranks whose heartbeat stopped (a killed or crashed worker), or says that
//! the store itself is gone (rank 0 hosts it unless torchrun's agent does).

use crate::env::DistEnv;
use crate::error::{Error, Result};
use crate::ffi;
use std::ffi::{c_int, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tch::{Kind, Tensor};

/// How often each rank refreshes its heartbeat key.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// Which c10d process group carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `ProcessGroupGloo`: CPU tensors, TCP transport.
    Gloo,
    /// `ProcessGroupNCCL`: CUDA tensors (`nccl` feature, a CUDA libtorch).
    Nccl,
}

/// Reduction of [`Group::all_reduce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    /// The sum divided by the world size (floating-point tensors; Gloo has no average, so this
    /// is a sum followed by a division).
    Mean,
    Max,
    Min,
}

impl ReduceOp {
    fn code(self) -> c_int {
        match self {
            ReduceOp::Sum | ReduceOp::Mean => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        }
    }
}

struct Store(*mut ffi::MoramStore);

// SAFETY: a c10d TCPStore client serialises its operations with its own mutex; each handle is
// used by one thread at a time here (the heartbeat thread has a clone of its own).
unsafe impl Send for Store {}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by moram_store_new/clone, freed once.
        unsafe { ffi::moram_store_free(self.0) }
    }
}

impl Store {
    fn set(&self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        let key = CString::new(key).map_err(|e| e.to_string())?;
        // SAFETY: valid handle, key NUL-terminated, value a live slice.
        ffi::call(|err| unsafe { ffi::moram_store_set(self.0, key.as_ptr(), value.as_ptr(), value.len(), err) })
    }

    fn check(&self, key: &str) -> std::result::Result<bool, String> {
        let key = CString::new(key).map_err(|e| e.to_string())?;
        let mut exists: c_int = 0;
        // SAFETY: valid handle and out pointer.
        ffi::call(|err| unsafe { ffi::moram_store_check(self.0, key.as_ptr(), &mut exists, err) })?;
        Ok(exists != 0)
    }

    fn get(&self, key: &str) -> std::result::Result<Vec<u8>, String> {
        let key = CString::new(key).map_err(|e| e.to_string())?;
        let mut data: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: valid handle and out pointers; on success data holds len malloc'ed bytes.
        ffi::call(|err| unsafe { ffi::moram_store_get(self.0, key.as_ptr(), &mut data, &mut len, err) })?;
        // SAFETY: see above; copied, then freed once.
        let out = unsafe { std::slice::from_raw_parts(data, len) }.to_vec();
        unsafe { ffi::moram_dist_free_bytes(data) };
        Ok(out)
    }
}

struct Connected {
    group: *mut ffi::MoramGroup,
    store: Store,
    addr: String,
    stop_heartbeat: Arc<AtomicBool>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.stop_heartbeat.store(true, Ordering::SeqCst);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        // SAFETY: created by moram_group_new_*, freed once, before its store.
        unsafe { ffi::moram_group_free(self.group) }
    }
}

/// The workers of a data-parallel job (or this process alone).
pub struct Group {
    rank: usize,
    world: usize,
    local_rank: usize,
    /// Where this group's collectives take their tensors: the CPU for Gloo, this rank's GPU for
    /// NCCL (which reduces CUDA tensors only).
    device: tch::Device,
    connected: Option<Connected>,
}

// SAFETY: the handles point to c10d objects that libtorch makes safe to use from any thread (the
// process group queues work under its own lock, the TCPStore client serialises its requests).
// Collectives must still be issued in the same order on every rank, as with torch.distributed.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("rank", &self.rank).field("world", &self.world).finish()
    }
}

fn heartbeat_key(rank: usize) -> String {
    format!("heartbeat/{rank}")
}

impl Group {
    /// This process alone: every collective is the identity.
    pub fn single() -> Group {
        Group { rank: 0, world: 1, local_rank: 0, device: tch::Device::Cpu, connected: None }
    }

    /// The group the launcher's environment describes ([`DistEnv::from_env`]); one process when
    /// `WORLD_SIZE` is unset or 1.
    pub fn from_env(backend: Backend) -> Result<Group> {
        match DistEnv::from_env()? {
            None => Ok(Group::single()),
            Some(env) => Group::connect(&env, backend),
        }
    }

    /// Meets the other workers: the store (rank 0 hosts it unless torchrun's agent does), then the
    /// process group. Blocks until every rank has arrived or `env.timeout` passes.
    pub fn connect(env: &DistEnv, backend: Backend) -> Result<Group> {
        let addr = format!("{}:{}", env.master_addr, env.master_port);
        let store_err =
            |message: String| Error::Store { rank: env.rank, world: env.world, addr: addr.clone(), message };
        let host = CString::new(env.master_addr.as_str()).map_err(|e| store_err(e.to_string()))?;
        let prefix = CString::new(env.store_prefix()).map_err(|e| store_err(e.to_string()))?;
        let timeout_ms = env.timeout.as_millis().min(i64::MAX as u128) as i64;
        let is_server = !env.agent_store && env.rank == 0;
        let mut raw: *mut ffi::MoramStore = std::ptr::null_mut();
        // SAFETY: strings NUL-terminated and alive for the call; out pointer valid.
        ffi::call(|err| unsafe {
            ffi::moram_store_new(
                host.as_ptr(),
                env.master_port,
                c_int::from(is_server),
                env.world as c_int,
                timeout_ms,
                prefix.as_ptr(),
                &mut raw,
                err,
            )
        })
        .map_err(store_err)?;
        let store = Store(raw);
        let mut group: *mut ffi::MoramGroup = std::ptr::null_mut();
        let result = match backend {
            Backend::Gloo => {
                let interface = CString::new(env.socket_interface.clone().unwrap_or_default())
                    .map_err(|e| store_err(e.to_string()))?;
                // Loopback rendezvous: bind the transport there too (a sandbox's hostname may not
                // resolve); otherwise torch.distributed's default device.
                let local = matches!(env.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1");
                let hostname = CString::new(if local { env.master_addr.as_str() } else { "" })
                    .map_err(|e| store_err(e.to_string()))?;
                // SAFETY: valid store handle, strings alive for the call, out pointer valid.
                ffi::call(|err| unsafe {
                    ffi::moram_group_new_gloo(
                        store.0,
                        env.rank as c_int,
                        env.world as c_int,
                        timeout_ms,
                        1,
                        interface.as_ptr(),
                        hostname.as_ptr(),
                        &mut group,
                        err,
                    )
                })
            }
            // SAFETY: valid store handle and out pointer.
            Backend::Nccl => ffi::call(|err| unsafe {
                ffi::moram_group_new_nccl(store.0, env.rank as c_int, env.world as c_int, timeout_ms, &mut group, err)
            }),
        };
        result.map_err(|message| Error::Collective {
            rank: env.rank,
            world: env.world,
            op: format!("creating the {backend:?} process group"),
            peers: String::new(),
            message,
        })?;
        let stop_heartbeat = Arc::new(AtomicBool::new(false));
        let mut clone: *mut ffi::MoramStore = std::ptr::null_mut();
        // SAFETY: valid store handle and out pointer.
        ffi::call(|err| unsafe { ffi::moram_store_clone(store.0, &mut clone, err) }).map_err(store_err)?;
        let beat_store = Store(clone);
        let (rank, stop) = (env.rank, stop_heartbeat.clone());
        let heartbeat = std::thread::Builder::new()
            .name(format!("moram-heartbeat-{rank}"))
            .spawn(move || {
                let mut beat: u64 = 0;
                while !stop.load(Ordering::SeqCst) {
                    beat += 1;
                    if beat_store.set(&heartbeat_key(rank), &beat.to_le_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(HEARTBEAT);
                }
            })
            .map_err(|e| Error::Worker { rank: env.rank, message: format!("heartbeat thread: {e}") })?;
        tracing::debug!(rank = env.rank, world = env.world, %addr, ?backend, "process group ready");
        let device = match backend {
            Backend::Gloo => tch::Device::Cpu,
            Backend::Nccl => tch::Device::Cuda(env.local_rank),
        };
        Ok(Group {
            rank: env.rank,
            world: env.world,
            local_rank: env.local_rank,
            device,
            connected: Some(Connected { group, store, addr, stop_heartbeat, heartbeat: Some(heartbeat) }),
        })
    }

    /// This worker's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of workers.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Index of this worker on its machine (`LOCAL_RANK`).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Where a tensor must be for this group's collectives: the CPU (Gloo, or one process), or
    /// this rank's GPU (NCCL). Host values (flags, byte buffers) go there before a collective.
    pub fn collective_device(&self) -> tch::Device {
        self.device
    }

    /// Sums `values` across ranks in place (host numbers: losses, flags), through a tensor on
    /// [`Group::collective_device`].
    pub fn all_reduce_host_sum(&self, values: &mut [f64]) -> Result<()> {
        if self.connected.is_none() || values.is_empty() {
            return Ok(());
        }
        let mut t = Tensor::f_from_slice(values)?.f_to_device(self.device)?;
        self.all_reduce(&mut t, ReduceOp::Sum)?;
        let summed = Vec::<f64>::try_from(&t.f_to_device(tch::Device::Cpu)?)?;
        values.copy_from_slice(&summed);
        Ok(())
    }

    /// Rank 0: the worker that writes files and reports.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Turns a failed collective into an error naming the peers that stopped: those whose
    /// heartbeat no longer advances (or the store host, when the store is gone).
    fn collective_error(&self, op: &str, message: String) -> Error {
        let peers = self.connected.as_ref().map(|c| self.silent_peers(c)).unwrap_or_default();
        Error::Collective { rank: self.rank, world: self.world, op: op.into(), peers, message }
    }

    fn silent_peers(&self, c: &Connected) -> String {
        let read = |r: usize| -> std::result::Result<Option<Vec<u8>>, String> {
            if c.store.check(&heartbeat_key(r))? {
                c.store.get(&heartbeat_key(r)).map(Some)
            } else {
                Ok(None)
            }
        };
        let others: Vec<usize> = (0..self.world).filter(|&r| r != self.rank).collect();
        let first: std::result::Result<Vec<_>, String> = others.iter().map(|&r| read(r)).collect();
        let store_gone =
            || format!(" (the rendezvous store at {} is gone: rank 0 hosts it, so rank 0 stopped)", c.addr);
        let Ok(first) = first else { return store_gone() };
        std::thread::sleep(HEARTBEAT * 4);
        let mut silent = Vec::new();
        for (&r, before) in others.iter().zip(first) {
            match read(r) {
                Ok(after) if after == before => silent.push(r),
                Ok(_) => {}
                Err(_) => return store_gone(),
            }
        }
        match silent.as_slice() {
            [] => String::new(),
            [r] => format!(" (rank {r} stopped: its heartbeat ended)"),
            rs => format!(" (ranks {rs:?} stopped: their heartbeats ended)"),
        }
    }

    /// In-place all-reduce of one tensor (contiguous, on the backend's device).
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<()> {
        let Some(c) = &self.connected else { return Ok(()) };
        if !tensor.is_contiguous() {
            return Err(Error::Tensor { op: "all_reduce".into(), message: "the tensor is not contiguous".into() });
        }
        if op == ReduceOp::Mean && !tensor.is_floating_point() {
            return Err(Error::Tensor {
                op: "all_reduce".into(),
                message: format!("a mean needs a floating-point tensor, found {:?}", tensor.kind()),
            });
        }
        let ptr = tensor.as_mut_ptr() as *mut std::ffi::c_void;
        // SAFETY: valid group handle; ptr is a live at::Tensor* owned by `tensor`.
        ffi::call(|err| unsafe { ffi::moram_group_allreduce(c.group, ptr, op.code(), err) })
            .map_err(|m| self.collective_error("all_reduce", m))?;
        if op == ReduceOp::Mean {
            let _guard = tch::no_grad_guard();
            let _ = tensor.f_div_scalar_(self.world as f64)?;
        }
        Ok(())
    }

    /// Sums tensors of one kind and device across ranks in one call: flattened into one buffer,
    /// reduced, copied back.
    pub fn all_reduce_sum_many(&self, tensors: &mut [Tensor]) -> Result<()> {
        self.flattened(tensors, |flat| self.all_reduce(flat, ReduceOp::Sum))
    }

    /// Runs `op` on one buffer holding every tensor (flattened, concatenated) and copies the
    /// result back into them; nothing to do for one process or no tensor.
    fn flattened(&self, tensors: &mut [Tensor], op: impl FnOnce(&mut Tensor) -> Result<()>) -> Result<()> {
        if self.connected.is_none() || tensors.is_empty() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        let mut flat = Tensor::f_cat(&tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0)?;
        op(&mut flat)?;
        let mut offset = 0i64;
        for t in tensors.iter_mut() {
            let n = t.numel() as i64;
            t.f_copy_(&flat.narrow(0, offset, n).view_as(t))?;
            offset += n;
        }
        Ok(())
    }

    /// In-place broadcast of one tensor (contiguous) from `root`.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<()> {
        let Some(c) = &self.connected else { return Ok(()) };
        if !tensor.is_contiguous() {
            return Err(Error::Tensor { op: "broadcast".into(), message: "the tensor is not contiguous".into() });
        }
        let ptr = tensor.as_mut_ptr() as *mut std::ffi::c_void;
        // SAFETY: valid group handle; ptr is a live at::Tensor* owned by `tensor`.
        ffi::call(|err| unsafe { ffi::moram_group_broadcast(c.group, ptr, root as c_int, err) })
            .map_err(|m| self.collective_error("broadcast", m))
    }

    /// Broadcasts tensors of one kind and device from `root` in one call (flattened).
    pub fn broadcast_many(&self, tensors: &mut [Tensor], root: usize) -> Result<()> {
        self.flattened(tensors, |flat| self.broadcast(flat, root))
    }

    /// Waits until every rank has arrived.
    pub fn barrier(&self) -> Result<()> {
        let Some(c) = &self.connected else { return Ok(()) };
        // SAFETY: valid group handle.
        ffi::call(|err| unsafe { ffi::moram_group_barrier(c.group, err) })
            .map_err(|m| self.collective_error("barrier", m))
    }

    /// Every rank's bytes, in rank order, on every rank (CPU collectives: lengths, then one
    /// zero-padded buffer with a slot per rank, summed).
    pub fn all_gather_bytes(&self, data: &[u8]) -> Result<Vec<Vec<u8>>> {
        if self.connected.is_none() {
            return Ok(vec![data.to_vec()]);
        }
        // On the collective device: NCCL reduces CUDA tensors only.
        let host = tch::Device::Cpu;
        let mut lengths = Tensor::zeros([self.world as i64], (Kind::Int64, self.device));
        let _ = lengths.get(self.rank as i64).fill_(data.len() as i64);
        self.all_reduce(&mut lengths, ReduceOp::Sum)?;
        let lengths = Vec::<i64>::try_from(&lengths.to_device(host))?;
        let longest = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut buffer = Tensor::zeros([self.world as i64, longest], (Kind::Uint8, self.device));
        if !data.is_empty() {
            let mine = Tensor::from_slice(data).to_device(self.device);
            buffer.get(self.rank as i64).narrow(0, 0, data.len() as i64).copy_(&mine);
        }
        self.all_reduce(&mut buffer, ReduceOp::Sum)?;
        let rows = Vec::<u8>::try_from(&buffer.reshape([-1]).to_device(host))?;
        Ok(lengths
            .iter()
            .enumerate()
            .map(|(r, &len)| rows[r * longest as usize..r * longest as usize + len as usize].to_vec())
            .collect())
    }
}
