//! [`WeightSource`]: memory-mapped safetensors checkpoints (one file or shards with an index),
//! read tensor by tensor with shape checks and a strict report of missing and unexpected keys.
//!
//! Accepted locations: a `.safetensors` file; a `model.safetensors.index.json` (Hugging Face
//! sharded layout, `weight_map` key -> shard file); or a folder holding either. Files are mapped,
//! not read: host memory holds only the tensor being converted, plus what the OS caches.

use crate::bytes::FileBytes;
use crate::error::{Error, Result};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

struct Shard {
    path: PathBuf,
    mmap: FileBytes,
    /// Offset of the data section (8-byte length + JSON header).
    data_start: usize,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<i64>,
    start: usize,
    end: usize,
}

/// A checkpoint opened for loading; see the module docs.
pub struct WeightSource {
    origin: PathBuf,
    shards: Vec<Shard>,
    entries: BTreeMap<String, Entry>,
    consumed: RefCell<BTreeSet<String>>,
}

impl std::fmt::Debug for WeightSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightSource").field("origin", &self.origin).field("tensors", &self.entries.len()).finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}

fn corrupt(path: &Path, reason: impl ToString) -> Error {
    Error::Corrupt { path: path.into(), reason: reason.to_string() }
}

/// The tch kind of a safetensors dtype moram loads.
fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        _ => None,
    }
}

impl WeightSource {
    /// Opens a checkpoint file, shard index or folder (see the module docs).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(io(path))?;
        if meta.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            return if index.exists() {
                Self::open_index(&index, path)
            } else if single.exists() {
                Self::open_files(path, &[single])
            } else {
                Err(corrupt(path, "folder has neither model.safetensors nor model.safetensors.index.json"))
            };
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Self::open_index(path, path);
        }
        Self::open_files(path, &[path.to_path_buf()])
    }

    fn open_index(index: &Path, origin: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(io(index))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(index, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| corrupt(index, "no `weight_map` object (Hugging Face shard index expected)"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<String> = Vec::new();
        for (key, file) in map {
            let file =
                file.as_str().ok_or_else(|| corrupt(index, format!("weight_map[`{key}`] is not a file name")))?;
            if file.contains("..") || file.starts_with('/') {
                return Err(corrupt(index, format!("weight_map[`{key}`] = `{file}` leaves the checkpoint folder")));
            }
            if !files.iter().any(|f| f == file) {
                files.push(file.to_string());
            }
        }
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        let source = Self::open_files(origin, &paths)?;
        for (key, file) in map {
            let shard = source.entries.get(key).map(|e| source.shards[e.shard].path.clone());
            if shard.as_deref() != Some(dir.join(file.as_str().unwrap_or_default()).as_path()) {
                return Err(corrupt(
                    index,
                    format!("weight_map says `{key}` is in {file}, but that shard does not hold it"),
                ));
            }
        }
        Ok(source)
    }

    /// Reads one safetensors file already in memory; `origin` names it in errors.
    pub fn from_bytes(origin: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        let origin = origin.as_ref();
        Self::from_shards(origin, vec![(origin.to_path_buf(), FileBytes::Owned(bytes))])
    }

    fn open_files(origin: &Path, paths: &[PathBuf]) -> Result<Self> {
        let shards = paths.iter().map(|p| Ok((p.clone(), FileBytes::map(p)?))).collect::<Result<Vec<_>>>()?;
        Self::from_shards(origin, shards)
    }

    fn from_shards(origin: &Path, files: Vec<(PathBuf, FileBytes)>) -> Result<Self> {
        let mut shards = Vec::new();
        let mut entries = BTreeMap::new();
        for (i, (path, mmap)) in files.into_iter().enumerate() {
            let path = &path;
            let (header_len, metadata) = SafeTensors::read_metadata(&mmap[..])
                .map_err(|e| corrupt(path, format!("not a safetensors file: {e}")))?;
            let data_start = 8 + header_len;
            for (key, info) in metadata.tensors() {
                let (start, end) = info.data_offsets;
                if start > end || data_start.checked_add(end).is_none_or(|e| e > mmap.len()) {
                    return Err(corrupt(
                        path,
                        format!(
                            "truncated: tensor `{key}` (data offsets {start}..{end}) ends past the end of the file \
                             ({} bytes)",
                            mmap.len()
                        ),
                    ));
                }
                // A zero dimension makes the byte count 0 whatever the others say, so each must
                // be a valid torch size on its own.
                let shape = info
                    .shape
                    .iter()
                    .map(|&d| i64::try_from(d))
                    .collect::<std::result::Result<Vec<i64>, _>>()
                    .map_err(|_| corrupt(path, format!("tensor `{key}`: dimensions {:?} overflow", info.shape)))?;
                let entry = Entry { shard: i, dtype: info.dtype, shape, start, end };
                if entries.insert(key.clone(), entry).is_some() {
                    return Err(corrupt(path, format!("tensor `{key}` appears in more than one shard")));
                }
            }
            shards.push(Shard { path: path.clone(), mmap, data_start });
        }
        Ok(WeightSource { origin: origin.into(), shards, entries, consumed: RefCell::new(BTreeSet::new()) })
    }

    /// What was opened (file, index or folder), for messages.
    pub fn origin(&self) -> &Path {
        &self.origin
    }

    /// Every tensor key, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// Whether the checkpoint holds `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The shape of `key` in the file.
    pub fn shape(&self, key: &str) -> Option<&[i64]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// The dtype of `key` in the file, when moram can load it.
    pub fn kind(&self, key: &str) -> Option<Kind> {
        self.entries.get(key).and_then(|e| kind_of(e.dtype))
    }

    /// Loads `key`, checks it has `shape`, converts it to `kind` on `device`; the result never
    /// requires grad. Marks the key as used.
    pub fn get(&self, key: &str, shape: &[i64], kind: Kind, device: Device) -> Result<Tensor> {
        let entry =
            self.entries.get(key).ok_or_else(|| Error::MissingKey { path: self.origin.clone(), key: key.into() })?;
        if entry.shape != shape {
            return Err(Error::Shape {
                path: self.origin.clone(),
                key: key.into(),
                expected: shape.to_vec(),
                found: entry.shape.clone(),
            });
        }
        self.load(key, entry, kind, device)
    }

    /// Loads `key` with whatever shape it has (for tensors split or reshaped after loading).
    pub fn get_any_shape(&self, key: &str, kind: Kind, device: Device) -> Result<Tensor> {
        let entry =
            self.entries.get(key).ok_or_else(|| Error::MissingKey { path: self.origin.clone(), key: key.into() })?;
        self.load(key, entry, kind, device)
    }

    fn load(&self, key: &str, entry: &Entry, kind: Kind, device: Device) -> Result<Tensor> {
        let src = kind_of(entry.dtype).ok_or_else(|| Error::Dtype {
            path: self.shards[entry.shard].path.clone(),
            key: key.into(),
            dtype: format!("{:?}", entry.dtype),
        })?;
        let shard = &self.shards[entry.shard];
        let bytes = &shard.mmap[shard.data_start + entry.start..shard.data_start + entry.end];
        // from_data_size copies out of the map, so the tensor does not outlive the mapping.
        let t = Tensor::f_from_data_size(bytes, &entry.shape, src)?;
        self.consumed.borrow_mut().insert(key.to_string());
        Ok(t.to_device(device).to_kind(kind).detach())
    }

    /// Checks, before loading anything, that the checkpoint holds exactly `expected` (key, shape)
    /// pairs; keys for which `ignorable` is true may be present without being expected (e.g.
    /// buffers such as `position_ids`). Every problem is reported at once.
    pub fn check(&self, expected: &[(String, Vec<i64>)], ignorable: impl Fn(&str) -> bool) -> Result<()> {
        let wanted: BTreeSet<&str> = expected.iter().map(|(k, _)| k.as_str()).collect();
        let missing: Vec<String> = expected.iter().filter(|(k, _)| !self.contains(k)).map(|(k, _)| k.clone()).collect();
        let shapes: Vec<(String, Vec<i64>, Vec<i64>)> = expected
            .iter()
            .filter_map(|(k, s)| {
                self.shape(k).filter(|found| found != s).map(|found| (k.clone(), s.clone(), found.to_vec()))
            })
            .collect();
        let unexpected: Vec<String> =
            self.entries.keys().filter(|k| !wanted.contains(k.as_str()) && !ignorable(k)).cloned().collect();
        if missing.is_empty() && unexpected.is_empty() && shapes.is_empty() {
            Ok(())
        } else {
            Err(Error::Mismatch { path: self.origin.clone(), missing, unexpected, shapes })
        }
    }

    /// Keys not loaded so far, sorted.
    pub fn unused_keys(&self) -> Vec<String> {
        let consumed = self.consumed.borrow();
        self.entries.keys().filter(|k| !consumed.contains(*k)).cloned().collect()
    }
}
