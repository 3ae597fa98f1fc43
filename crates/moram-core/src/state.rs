//! Adapter state: every atom bank of a model in one safetensors file, plus metadata.
//!
//! Layout (format `moram-adapter`, version 1). For each adapted layer `L` (its module path):
//! - `L.keys` f32 `(R, d_in)`, `L.values` f32 `(d_out, R)`;
//! - `L.atom_task` i64 `(R)`: the task that created each atom; `L.frozen` u8 `(R)`: frozen flags
//!   (frozen atoms come first);
//! - router variants: `L.router` f32 `(n, d_in)` and `L.router_frozen` u8 `(n)`; MoE-LoRA also
//!   `L.expert_task` i64 `(E)`;
//! - orthogonal keys ([`crate::config::KeySubspace`]): `L.key_basis` f32 `(d_in, m)`, the protected
//!   input subspace, and `L.basis_cols` i64 `(R)`, its columns that existed when each atom was
//!   created, when `m > 0`;
//! - normalised scores ([`crate::config::ScoreInput`]): `L.score_mean` and `L.score_std` f32
//!   `(d_in)`, when set;
//! - novelty-gated routing: `L.novelty_width` i64 `(n)` and `L.novelty_threshold` f32 `(n)`, the
//!   fitted thresholds per basis width, when any.
//!
//! Task-gated atoms keep one model-level [`TaskGate`] under the reserved prefix `@task_gate.`
//! (no module path starts with `@`): `tasks` i64 `(T)`, `counts` i64 `(T)`, `means` f32 `(T, d)`
//! and `scatter` f32 `(d, d)`.
//!
//! The safetensors `__metadata__` holds `format`, `format_version`, `config` (the [`MoramConfig`] as
//! JSON), `num_tasks`, `pending_task` (compat B3 only) and any caller-supplied provenance. Files are
//! written to a temporary name and renamed, so a crash never leaves a half-written adapter.

use crate::bank::AtomBank;
use crate::config::MoramConfig;
use crate::error::{Error, Result};
use crate::variants::TaskGate;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// The `format` metadata value of adapter files.
pub const FORMAT: &str = "moram-adapter";
/// The current adapter format version.
pub const FORMAT_VERSION: u32 = 1;

const FIELDS: [&str; 13] = [
    "keys",
    "values",
    "atom_task",
    "frozen",
    "router",
    "router_frozen",
    "expert_task",
    "key_basis",
    "basis_cols",
    "score_mean",
    "score_std",
    "novelty_width",
    "novelty_threshold",
];

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(t: &Tensor) -> Result<Owned> {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let shape = t.size().iter().map(|&d| d as usize).collect();
    let v = Vec::<f32>::try_from(t.flatten(0, -1))?;
    Ok(Owned { dtype: Dtype::F32, shape, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() })
}

fn i64_bytes(v: &[u32]) -> Owned {
    Owned { dtype: Dtype::I64, shape: vec![v.len()], bytes: v.iter().flat_map(|&x| (x as i64).to_le_bytes()).collect() }
}

fn flag_bytes(v: impl Iterator<Item = bool>) -> Owned {
    let bytes: Vec<u8> = v.map(u8::from).collect();
    Owned { dtype: Dtype::U8, shape: vec![bytes.len()], bytes }
}

/// The prefix of the model-level task gate's tensors in adapter files.
pub const TASK_GATE_PREFIX: &str = "@task_gate.";
const GATE_FIELDS: [&str; 4] = ["tasks", "counts", "means", "scatter"];

/// Writes `banks` (module path, bank) to `path` with `extra` metadata (e.g. base-model provenance).
/// Every bank must share one config. The write is atomic (temporary file + rename).
pub fn save_adapter<'a>(
    path: impl AsRef<Path>,
    banks: impl IntoIterator<Item = (&'a str, &'a AtomBank)>,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    save_adapter_with_gate(path, banks, None, extra)
}

/// [`save_adapter`] with the model's task gate (task-gated atoms), when it has one.
pub fn save_adapter_with_gate<'a>(
    path: impl AsRef<Path>,
    banks: impl IntoIterator<Item = (&'a str, &'a AtomBank)>,
    gate: Option<&TaskGate>,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let banks: Vec<(&str, &AtomBank)> = banks.into_iter().collect();
    let Some((_, first)) = banks.first() else {
        return Err(Error::State("no atom bank to save".into()));
    };
    let config = first.config().clone();
    let mut tensors: BTreeMap<String, Owned> = BTreeMap::new();
    let mut tasks = BTreeSet::new();
    let mut pending = None;
    for (name, bank) in &banks {
        if bank.config() != &config {
            return Err(Error::State(format!("layer `{name}` has a different MoRAM config from the others")));
        }
        if name.is_empty()
            || name.starts_with('@')
            || FIELDS.iter().any(|f| name.ends_with(&format!(".{f}")) || name == f)
        {
            return Err(Error::State(format!("`{name}` cannot be used as a layer name in an adapter file")));
        }
        let mut put = |field: &str, t: Owned| -> Result<()> {
            match tensors.insert(format!("{name}.{field}"), t) {
                None => Ok(()),
                Some(_) => Err(Error::State(format!("layer `{name}` appears twice"))),
            }
        };
        put("keys", f32_bytes(&bank.keys_tensor())?)?;
        put("values", f32_bytes(&bank.values_tensor())?)?;
        put("atom_task", i64_bytes(bank.atom_task()))?;
        put("frozen", flag_bytes(bank.frozen_flags().into_iter()))?;
        if bank.config().routing.has_router() {
            let router = bank.router_tensor();
            let n = router.size()[0] as usize;
            put("router", f32_bytes(&router)?)?;
            put("router_frozen", flag_bytes((0..n).map(|i| i < bank.n_frozen_router())))?;
        }
        if !bank.expert_task().is_empty() {
            put("expert_task", i64_bytes(bank.expert_task()))?;
        }
        if bank.key_basis().size()[1] > 0 {
            put("key_basis", f32_bytes(bank.key_basis())?)?;
            let cols: Vec<u32> = bank.atom_basis().iter().map(|&c| c as u32).collect();
            put("basis_cols", i64_bytes(&cols))?;
        }
        if let Some((mean, std)) = bank.score_statistics() {
            put("score_mean", f32_bytes(mean)?)?;
            put("score_std", f32_bytes(std)?)?;
        }
        let thresholds = bank.novelty_thresholds();
        if !thresholds.is_empty() {
            let widths: Vec<u32> = thresholds.iter().map(|(w, _)| *w as u32).collect();
            let values: Vec<f32> = thresholds.iter().map(|(_, t)| *t as f32).collect();
            put("novelty_width", i64_bytes(&widths))?;
            // cpu: serialised as bytes.
            put("novelty_threshold", f32_bytes(&Tensor::from_slice(&values))?)?;
        }
        tasks.extend(bank.atom_task().iter().copied());
        pending = pending.or(bank.pending_task());
    }
    if let Some(gate) = gate {
        let (means, scatter, counts) = gate.parts();
        let counts: Vec<u32> = counts.iter().map(|&c| c.min(u32::MAX as u64) as u32).collect();
        tensors.insert(format!("{TASK_GATE_PREFIX}tasks"), i64_bytes(gate.tasks()));
        tensors.insert(format!("{TASK_GATE_PREFIX}counts"), i64_bytes(&counts));
        tensors.insert(format!("{TASK_GATE_PREFIX}means"), f32_bytes(&means)?);
        tensors.insert(format!("{TASK_GATE_PREFIX}scatter"), f32_bytes(&scatter)?);
    }
    let mut metadata: HashMap<String, String> = extra.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    metadata.insert("format".into(), FORMAT.into());
    metadata.insert("format_version".into(), FORMAT_VERSION.to_string());
    metadata.insert("config".into(), config.to_json());
    metadata.insert("num_tasks".into(), tasks.len().to_string());
    if let Some(p) = pending {
        metadata.insert("pending_task".into(), p.to_string());
    }
    let views = tensors
        .iter()
        .map(|(k, o)| {
            Ok((k.clone(), TensorView::new(o.dtype, o.shape.clone(), &o.bytes).map_err(|e| corrupt(path, e))?))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| corrupt(path, e))?;
    let bytes = canonical_header(bytes).map_err(|e| corrupt(path, e))?;
    let tmp = temp_path(path);
    std::fs::write(&tmp, &bytes).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io { path: path.into(), source }
    })?;
    std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.into(), source })
}

/// The same safetensors bytes with the JSON header's keys in sorted order. The library writes the
/// `__metadata__` map in hash order, so two files of bit-equal tensors could differ in their bytes;
/// sorted, equal adapters are equal files (runs can be compared by checksum). Readers locate
/// tensors by their offsets, not by key order; the header keeps its length.
fn canonical_header(mut bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    let n =
        bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes).ok_or("no header")? as usize;
    let header = bytes.get(8..8 + n).ok_or("truncated header")?;
    // serde_json's map keeps keys sorted (no `preserve_order`).
    let value: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let mut sorted = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
    if sorted.len() > n {
        return Err(format!("sorted header grew from {n} to {} bytes", sorted.len()));
    }
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(bytes)
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn corrupt(path: &Path, reason: impl ToString) -> Error {
    Error::Corrupt { path: path.into(), reason: reason.to_string() }
}

/// A loaded adapter file: its config, metadata and one [`AtomBank`] per layer.
#[derive(Debug)]
pub struct AdapterFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The adapter's config.
    pub config: MoramConfig,
    /// Every `__metadata__` entry (including `format`, `config`, `num_tasks`).
    pub metadata: BTreeMap<String, String>,
    banks: BTreeMap<String, AtomBank>,
    task_gate: Option<TaskGate>,
}

struct Raw<'a> {
    dtype: Dtype,
    shape: Vec<usize>,
    data: &'a [u8],
}

impl AdapterFile {
    /// Reads and validates an adapter file; banks are placed on `device`.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.into(), source })?;
        Self::from_bytes(path, &bytes, device)
    }

    /// Reads and validates an adapter file already in memory; `path` names it in errors.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: &[u8], device: Device) -> Result<Self> {
        let path = path.as_ref();
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| corrupt(path, e))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| corrupt(path, e))?;
        let metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        match metadata.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            other => return Err(corrupt(path, format!("metadata `format` is {other:?}, expected \"{FORMAT}\""))),
        }
        let version = metadata.get("format_version").map(String::as_str).unwrap_or("<missing>");
        if version != FORMAT_VERSION.to_string() {
            return Err(corrupt(
                path,
                format!("format_version {version} is not supported (expected {FORMAT_VERSION})"),
            ));
        }
        let config_json = metadata.get("config").ok_or_else(|| corrupt(path, "metadata has no `config`"))?;
        let config =
            MoramConfig::from_json_str(config_json).map_err(|e| corrupt(path, format!("metadata `config`: {e}")))?;
        let pending = match metadata.get("pending_task") {
            Some(p) => {
                Some(p.parse::<u32>().map_err(|_| corrupt(path, format!("pending_task `{p}` is not a task id")))?)
            }
            None => None,
        };

        let mut layers: BTreeMap<String, HashMap<&'static str, Raw>> = BTreeMap::new();
        let mut gate_raw: HashMap<&'static str, Raw> = HashMap::new();
        for (key, view) in st.tensors() {
            if let Some(field) = key.strip_prefix(TASK_GATE_PREFIX) {
                let Some(field) = GATE_FIELDS.iter().find(|f| **f == field) else {
                    return Err(corrupt(
                        path,
                        format!("unexpected tensor `{key}` (task gate fields are {})", GATE_FIELDS.join(", ")),
                    ));
                };
                gate_raw.insert(field, Raw { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data() });
                continue;
            }
            let (layer, field) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
            let Some(field) = FIELDS.iter().find(|f| **f == field) else {
                return Err(corrupt(path, format!("unexpected tensor `{key}` (fields are {})", FIELDS.join(", "))));
            };
            if layer.is_empty() {
                return Err(corrupt(path, format!("tensor `{key}` has no layer name")));
            }
            let raw = Raw { dtype: view.dtype(), shape: view.shape().to_vec(), data: view.data() };
            layers.entry(layer.to_string()).or_default().insert(field, raw);
        }
        if layers.is_empty() {
            return Err(corrupt(path, "the file holds no atom bank"));
        }
        let mut banks = BTreeMap::new();
        for (name, raw) in &layers {
            let mut bank = build_bank(path, name, raw, &config, device)?;
            if let Some(p) = pending {
                bank.set_pending_task(p);
            }
            banks.insert(name.clone(), bank);
        }
        let task_gate = match (gate_raw.is_empty(), config.task_gate) {
            (true, None) => None,
            (false, Some(g)) => Some(build_gate(path, &gate_raw, g.shrinkage, device)?),
            (true, Some(_)) => {
                return Err(Error::MissingKey { path: path.into(), key: format!("{TASK_GATE_PREFIX}tasks") });
            }
            (false, None) => {
                return Err(corrupt(path, "the file holds a task gate but its config has no `task_gate`"));
            }
        };
        Ok(AdapterFile { path: path.into(), config, metadata, banks, task_gate })
    }

    /// The model-level task gate (task-gated atoms), if the file holds one.
    pub fn task_gate(&self) -> Option<&TaskGate> {
        self.task_gate.as_ref()
    }

    /// Removes and returns the task gate.
    pub fn take_task_gate(&mut self) -> Option<TaskGate> {
        self.task_gate.take()
    }

    /// Number of distinct tasks that created atoms.
    pub fn num_tasks(&self) -> usize {
        self.metadata.get("num_tasks").and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    /// Layer names (module paths), sorted.
    pub fn layer_names(&self) -> Vec<&str> {
        self.banks.keys().map(String::as_str).collect()
    }

    /// The bank of `layer`, if present.
    pub fn bank(&self, layer: &str) -> Option<&AtomBank> {
        self.banks.get(layer)
    }

    /// Removes and returns the bank of `layer`, checking it fits a `d_in -> d_out` layer.
    pub fn take_bank(&mut self, layer: &str, d_in: usize, d_out: usize) -> Result<AtomBank> {
        let bank = self
            .banks
            .remove(layer)
            .ok_or_else(|| Error::MissingKey { path: self.path.clone(), key: format!("{layer}.keys") })?;
        if (bank.d_in(), bank.d_out()) != (d_in, d_out) {
            return Err(Error::BadTensor {
                path: self.path.clone(),
                key: format!("{layer}.keys / {layer}.values"),
                expected: format!("a {d_in} -> {d_out} layer"),
                found: format!("a {} -> {} bank", bank.d_in(), bank.d_out()),
            });
        }
        Ok(bank)
    }

    /// All banks by layer name.
    pub fn into_banks(self) -> BTreeMap<String, AtomBank> {
        self.banks
    }
}

fn build_bank(
    path: &Path,
    name: &str,
    raw: &HashMap<&'static str, Raw>,
    config: &MoramConfig,
    device: Device,
) -> Result<AtomBank> {
    let get = |field: &str| {
        raw.get(field).ok_or_else(|| Error::MissingKey { path: path.into(), key: format!("{name}.{field}") })
    };
    let check = |field: &str, r: &Raw, dtype: Dtype, expected_shape: &[Option<usize>]| -> Result<()> {
        let shape_ok = r.shape.len() == expected_shape.len()
            && r.shape.iter().zip(expected_shape).all(|(s, e)| e.is_none_or(|e| e == *s));
        if r.dtype != dtype || !shape_ok {
            let dims: Vec<String> = expected_shape.iter().map(|e| e.map_or("_".into(), |d| d.to_string())).collect();
            return Err(Error::BadTensor {
                path: path.into(),
                key: format!("{name}.{field}"),
                expected: format!("{dtype:?} [{}]", dims.join(", ")),
                found: format!("{:?} {:?}", r.dtype, r.shape),
            });
        }
        Ok(())
    };
    let keys = get("keys")?;
    check("keys", keys, Dtype::F32, &[None, None])?;
    let (r, d_in) = (keys.shape[0], keys.shape[1]);
    let values = get("values")?;
    check("values", values, Dtype::F32, &[None, Some(r)])?;
    let atom_task = get("atom_task")?;
    check("atom_task", atom_task, Dtype::I64, &[Some(r)])?;
    let frozen = get("frozen")?;
    check("frozen", frozen, Dtype::U8, &[Some(r)])?;
    let tasks = task_ids(path, name, "atom_task", atom_task.data)?;
    let n_frozen = frozen_prefix(path, name, "frozen", frozen.data)?;
    let router = match raw.get("router") {
        Some(rk) => {
            check("router", rk, Dtype::F32, &[None, Some(d_in)])?;
            let rf = get("router_frozen")?;
            check("router_frozen", rf, Dtype::U8, &[Some(rk.shape[0])])?;
            Some((tensor(rk)?, frozen_prefix(path, name, "router_frozen", rf.data)?))
        }
        None => None,
    };
    let expert_task = match raw.get("expert_task") {
        Some(e) => {
            check("expert_task", e, Dtype::I64, &[None])?;
            task_ids(path, name, "expert_task", e.data)?
        }
        None => Vec::new(),
    };
    let mut bank = AtomBank::from_parts(
        config,
        &tensor(keys)?,
        &tensor(values)?,
        tasks,
        n_frozen,
        router.as_ref().map(|(t, n)| (t, *n)),
        expert_task,
        device,
    )
    .map_err(|e| corrupt(path, format!("layer `{name}`: {e}")))?;
    if let Some(basis) = raw.get("key_basis") {
        check("key_basis", basis, Dtype::F32, &[Some(d_in), None])?;
        bank.set_key_basis(&tensor(basis)?).map_err(|e| corrupt(path, format!("`{name}.key_basis`: {e}")))?;
        let cols = get("basis_cols")?;
        check("basis_cols", cols, Dtype::I64, &[Some(r)])?;
        let cols = task_ids(path, name, "basis_cols", cols.data)?.into_iter().map(|c| c as usize).collect();
        bank.set_atom_basis(cols).map_err(|e| corrupt(path, format!("`{name}.basis_cols`: {e}")))?;
    }
    if let Some(mean) = raw.get("score_mean") {
        check("score_mean", mean, Dtype::F32, &[Some(d_in)])?;
        let std = get("score_std")?;
        check("score_std", std, Dtype::F32, &[Some(d_in)])?;
        bank.set_score_statistics(&tensor(mean)?, &tensor(std)?)
            .map_err(|e| corrupt(path, format!("`{name}.score_mean`/`score_std`: {e}")))?;
    }
    if let Some(widths) = raw.get("novelty_width") {
        check("novelty_width", widths, Dtype::I64, &[None])?;
        let n = widths.shape[0];
        let values = get("novelty_threshold")?;
        check("novelty_threshold", values, Dtype::F32, &[Some(n)])?;
        let widths = task_ids(path, name, "novelty_width", widths.data)?;
        let values = Vec::<f32>::try_from(tensor(values)?)?;
        for (w, t) in widths.into_iter().zip(values) {
            bank.set_novelty_threshold(w as usize, t as f64)
                .map_err(|e| corrupt(path, format!("`{name}.novelty_threshold`: {e}")))?;
        }
    }
    Ok(bank)
}

fn build_gate(path: &Path, raw: &HashMap<&'static str, Raw>, shrinkage: f64, device: Device) -> Result<TaskGate> {
    let get = |field: &str| {
        raw.get(field).ok_or_else(|| Error::MissingKey { path: path.into(), key: format!("{TASK_GATE_PREFIX}{field}") })
    };
    let bad = |field: &str, expected: String, r: &Raw| Error::BadTensor {
        path: path.into(),
        key: format!("{TASK_GATE_PREFIX}{field}"),
        expected,
        found: format!("{:?} {:?}", r.dtype, r.shape),
    };
    let tasks = get("tasks")?;
    if tasks.dtype != Dtype::I64 || tasks.shape.len() != 1 {
        return Err(bad("tasks", "I64 [T]".into(), tasks));
    }
    let t = tasks.shape[0];
    let counts = get("counts")?;
    if counts.dtype != Dtype::I64 || counts.shape != [t] {
        return Err(bad("counts", format!("I64 [{t}]"), counts));
    }
    let scatter = get("scatter")?;
    let d = scatter.shape.first().copied().unwrap_or(0);
    if scatter.dtype != Dtype::F32 || scatter.shape != [d, d] {
        return Err(bad("scatter", "F32 [d, d]".into(), scatter));
    }
    let means = get("means")?;
    if means.dtype != Dtype::F32 || means.shape != [t, d] {
        return Err(bad("means", format!("F32 [{t}, {d}]"), means));
    }
    let task_list = task_ids(path, "@task_gate", "tasks", tasks.data)?;
    let counts = task_ids(path, "@task_gate", "counts", counts.data)?.into_iter().map(u64::from).collect();
    TaskGate::from_parts(task_list, &tensor(means)?, &tensor(scatter)?, counts, shrinkage, device)
        .map_err(|e| corrupt(path, format!("task gate: {e}")))
}

fn tensor(raw: &Raw) -> Result<Tensor> {
    let shape: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::f_from_data_size(raw.data, &shape, Kind::Float)?)
}

fn task_ids(path: &Path, name: &str, field: &str, data: &[u8]) -> Result<Vec<u32>> {
    data.chunks_exact(8)
        .map(|c| {
            let v = i64::from_le_bytes(c.try_into().unwrap_or([0; 8]));
            u32::try_from(v).map_err(|_| corrupt(path, format!("`{name}.{field}` holds task id {v}")))
        })
        .collect()
}

fn frozen_prefix(path: &Path, name: &str, field: &str, data: &[u8]) -> Result<usize> {
    let n = data.iter().take_while(|&&b| b == 1).count();
    if data[n..].iter().any(|&b| b != 0) {
        return Err(corrupt(path, format!("`{name}.{field}` must be 1s (frozen) followed by 0s (trainable)")));
    }
    Ok(n)
}
