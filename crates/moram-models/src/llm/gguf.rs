//! GGUF (v2/v3) checkpoints from the llama.cpp world: metadata, tensor directory and
//! dequantisation to f32 tensors.
//!
//! Layout (llama.cpp `docs/gguf.md`): magic `GGUF`, version, tensor count, metadata count; typed
//! key/value metadata; per tensor its name, dimensions (innermost first), ggml type and offset;
//! then the data section, aligned to `general.alignment` (default 32). The file is memory-mapped.
//!
//! Dequantised types: F32, F16, BF16, Q4_0, Q4_1 (block formats of `ggml-quants.c`, done with
//! libtorch ops on whole tensors) and Q8_0, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K
//! (`quants.rs`, per block in parallel). Every other type (IQ-quants, ternary, MXFP4, the
//! repacked `Q4_0_4_4`-style layouts) is refused by name. No well-kept Rust crate both parses GGUF
//! and dequantises without pulling in a second tensor library, so this reader is ours.

use super::quants::{self, BlockType};
use crate::bytes::FileBytes;
use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// f32 or f64.
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 replaced).
    Str(String),
    /// Array of values of one type.
    Array(Array),
}

/// A metadata array, stored at the width of its element type: a file's array of `n` u8 values
/// costs `n` bytes here, not `n` enum values (so memory stays within a small multiple of the
/// file's size; strings and nested arrays cost at most about 3x their bytes in the file).
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    /// u8, u16, u32 elements, widened.
    U32(Vec<u32>),
    /// u8 elements (kept narrow: token types and flags are byte arrays).
    U8(Vec<u8>),
    /// i8, i16, i32 elements, widened.
    I32(Vec<i32>),
    /// u64 elements.
    U64(Vec<u64>),
    /// i64 elements.
    I64(Vec<i64>),
    /// f32 elements (token scores).
    F32(Vec<f32>),
    /// f64 elements.
    F64(Vec<f64>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Strings (vocabularies, merges).
    Str(Vec<String>),
    /// Nested arrays.
    Array(Vec<Array>),
}

impl Array {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U32(v) => v.len(),
            Array::U8(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::Str(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }
    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The elements as strings, when they are strings.
    pub fn as_strings(&self) -> Option<&[String]> {
        match self {
            Array::Str(v) => Some(v),
            _ => None,
        }
    }
    /// The elements as unsigned integers, when every element is a non-negative integer.
    pub fn to_u64s(&self) -> Option<Vec<u64>> {
        match self {
            Array::U32(v) => Some(v.iter().map(|&x| x as u64).collect()),
            Array::U8(v) => Some(v.iter().map(|&x| x as u64).collect()),
            Array::U64(v) => Some(v.clone()),
            Array::I32(v) => v.iter().map(|&x| u64::try_from(x).ok()).collect(),
            Array::I64(v) => v.iter().map(|&x| u64::try_from(x).ok()).collect(),
            _ => None,
        }
    }
    /// The elements as floats, when they are numbers.
    pub fn to_f64s(&self) -> Option<Vec<f64>> {
        match self {
            Array::F32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::F64(v) => Some(v.clone()),
            Array::U32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::U8(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::I32(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::U64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            Array::I64(v) => Some(v.iter().map(|&x| x as f64).collect()),
            _ => None,
        }
    }
}

impl Value {
    /// As an unsigned integer (non-negative integers of any width).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::U64(v) => Some(*v),
            Value::I64(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    /// As a float (floats and integers).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::F64(v) => Some(*v),
            Value::U64(v) => Some(*v as f64),
            Value::I64(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// As an array.
    pub fn as_array(&self) -> Option<&Array> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// Metadata arrays nested deeper than this are refused. ggml's own reader refuses arrays of
/// arrays, so no file llama.cpp loads has them; the Python `gguf` package can write them, and
/// they are read one level deep.
const MAX_ARRAY_DEPTH: usize = 2;

/// The types [`GgufFile::tensor`] dequantises, for messages.
const SUPPORTED: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

/// ggml tensor types, by their numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// 32 weights: f16 scale, 32 x i8.
    Q8_0,
    /// 32 weights: f16 scale, 32 x 4-bit (offset 8).
    Q4_0,
    /// 32 weights: f16 scale, f16 min, 32 x 4-bit.
    Q4_1,
    /// 5-bit block types and the 256-weight "K" super-block types (`quants.rs`).
    Block(BlockType),
    /// A type moram does not dequantise (its ggml name).
    Unsupported(&'static str, u32),
}

impl GgmlType {
    /// The type with ggml id `id` (unknown ids become [`GgmlType::Unsupported`]).
    pub fn from_id(id: u32) -> GgmlType {
        const NAMES: [&str; 40] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "Q4_2",
            "Q4_3",
            "Q5_0",
            "Q5_1",
            "Q8_0",
            "Q8_1",
            "Q2_K",
            "Q3_K",
            "Q4_K",
            "Q5_K",
            "Q6_K",
            "Q8_K",
            "IQ2_XXS",
            "IQ2_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ2_S",
            "IQ4_XS",
            "I8",
            "I16",
            "I32",
            "I64",
            "F64",
            "IQ1_M",
            "BF16",
            "Q4_0_4_4",
            "Q4_0_4_8",
            "Q4_0_8_8",
            "TQ1_0",
            "TQ2_0",
            "IQ4_NL_4_4",
            "IQ4_NL_4_8",
            "IQ4_NL_8_8",
            "MXFP4",
        ];
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            30 => GgmlType::Bf16,
            8 => GgmlType::Q8_0,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Block(BlockType::Q5_0),
            7 => GgmlType::Block(BlockType::Q5_1),
            10 => GgmlType::Block(BlockType::Q2K),
            11 => GgmlType::Block(BlockType::Q3K),
            12 => GgmlType::Block(BlockType::Q4K),
            13 => GgmlType::Block(BlockType::Q5K),
            14 => GgmlType::Block(BlockType::Q6K),
            15 => GgmlType::Block(BlockType::Q8K),
            other => GgmlType::Unsupported(NAMES.get(other as usize).copied().unwrap_or("unknown"), other),
        }
    }

    /// `(weights per block, bytes per block)`.
    pub fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Block(b) => Some(b.block()),
            GgmlType::Unsupported(..) => None,
        }
    }

    /// The ggml name.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Block(b) => match b {
                BlockType::Q8_0 => "Q8_0",
                BlockType::Q5_0 => "Q5_0",
                BlockType::Q5_1 => "Q5_1",
                BlockType::Q2K => "Q2_K",
                BlockType::Q3K => "Q3_K",
                BlockType::Q4K => "Q4_K",
                BlockType::Q5K => "Q5_K",
                BlockType::Q6K => "Q6_K",
                BlockType::Q8K => "Q8_K",
            },
            GgmlType::Unsupported(name, _) => name,
        }
    }
}

/// One tensor of the directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset in the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The shape in torch order (outermost first).
    pub fn shape(&self) -> Vec<i64> {
        self.dims.iter().rev().map(|&d| d as i64).collect()
    }
}

/// A GGUF file, memory-mapped ([`GgufFile::open`]) or in memory ([`GgufFile::from_bytes`]).
pub struct GgufFile {
    path: PathBuf,
    mmap: FileBytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Every metadata entry.
    pub metadata: BTreeMap<String, Value>,
    /// The tensor directory by name.
    pub tensors: BTreeMap<String, TensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile").field("path", &self.path).field("tensors", &self.tensors.len()).finish()
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| Error::Corrupt {
            path: self.path.into(),
            reason: format!(
                "truncated GGUF: {what} at byte {} needs {n} bytes, the file has {}",
                self.pos,
                self.bytes.len()
            ),
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or([0; 4])))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or([0; 8])))
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)? as usize;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt { path: self.path.into(), reason }
    }

    /// A metadata value of type `ty`; `what` names it in errors (`metadata \`key\``), `depth`
    /// counts the arrays it is nested in.
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        let mut n = |k: usize| -> Result<[u8; 8]> {
            let mut a = [0u8; 8];
            a[..k].copy_from_slice(self.take(k, what)?);
            Ok(a)
        };
        Ok(match ty {
            0 => Value::U64(n(1)?[0] as u64),
            1 => Value::I64(n(1)?[0] as i8 as i64),
            2 => {
                let a = n(2)?;
                Value::U64(u16::from_le_bytes([a[0], a[1]]) as u64)
            }
            3 => {
                let a = n(2)?;
                Value::I64(i16::from_le_bytes([a[0], a[1]]) as i64)
            }
            4 => {
                let a = n(4)?;
                Value::U64(u32::from_le_bytes([a[0], a[1], a[2], a[3]]) as u64)
            }
            5 => {
                let a = n(4)?;
                Value::I64(i32::from_le_bytes([a[0], a[1], a[2], a[3]]) as i64)
            }
            6 => {
                let a = n(4)?;
                Value::F64(f32::from_le_bytes([a[0], a[1], a[2], a[3]]) as f64)
            }
            7 => Value::Bool(n(1)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => Value::Array(self.array(what, depth)?),
            10 => Value::U64(u64::from_le_bytes(n(8)?)),
            11 => Value::I64(i64::from_le_bytes(n(8)?)),
            12 => Value::F64(f64::from_le_bytes(n(8)?)),
            other => return Err(self.corrupt(format!("{what} has unknown value type {other}"))),
        })
    }

    /// An array value (after its type id): element type, length, elements. `depth` counts the
    /// arrays it is nested in.
    fn array(&mut self, what: &str, depth: usize) -> Result<Array> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(
                self.corrupt(format!("{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep (at byte {})", self.pos))
            );
        }
        let elem = self.u32(what)?;
        let len = self.u64(what)?;
        // Every element takes at least `min` bytes of the file, so a length the rest of the file
        // cannot hold is refused before anything is allocated.
        let min = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            other => return Err(self.corrupt(format!("{what}: array of unknown value type {other}"))),
        };
        let left = (self.bytes.len() - self.pos) as u64;
        if len.checked_mul(min).is_none_or(|need| need > left) {
            return Err(self.corrupt(format!(
                "{what}: an array of {len} elements of type {elem} cannot fit in the {left} bytes left (at byte {})",
                self.pos
            )));
        }
        let len = len as usize;
        // Fixed-width elements are read in one slice.
        let raw = |r: &mut Reader<'a>, width: usize| r.take(len * width, what).map(|b| b.chunks_exact(width));
        Ok(match elem {
            0 => Array::U8(self.take(len, what)?.to_vec()),
            1 => Array::I32(self.take(len, what)?.iter().map(|&b| b as i8 as i32).collect()),
            2 => Array::U32(raw(self, 2)?.map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect()),
            3 => Array::I32(raw(self, 2)?.map(|c| i16::from_le_bytes([c[0], c[1]]) as i32).collect()),
            4 => Array::U32(raw(self, 4)?.map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            5 => Array::I32(raw(self, 4)?.map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            6 => Array::F32(raw(self, 4)?.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            7 => Array::Bool(self.take(len, what)?.iter().map(|&b| b != 0).collect()),
            8 => {
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    v.push(self.string(what)?);
                }
                Array::Str(v)
            }
            9 => {
                let mut v = Vec::with_capacity(len);
                for _ in 0..len {
                    // Each element is a whole array value: its own element type, length, elements.
                    v.push(self.array(what, depth + 1)?);
                }
                Array::Array(v)
            }
            10 => Array::U64(raw(self, 8)?.map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
            11 => Array::I64(raw(self, 8)?.map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
            _ => Array::F64(raw(self, 8)?.map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()),
        })
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file: header, metadata, tensor directory, data bounds.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::parse(path, FileBytes::map(path)?)
    }

    /// Parses a GGUF file already in memory; `origin` names it in errors.
    pub fn from_bytes(origin: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(origin.as_ref(), FileBytes::Owned(bytes))
    }

    fn parse(path: &Path, mmap: FileBytes) -> Result<Self> {
        let mut r = Reader { bytes: &mmap, pos: 0, path };
        if r.take(4, "magic")? != b"GGUF" {
            return Err(Error::Corrupt { path: path.into(), reason: "not a GGUF file (magic is not `GGUF`)".into() });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Corrupt {
                path: path.into(),
                reason: format!("GGUF version {version} is not supported (2, 3)"),
            });
        }
        let n_tensors = r.u64("tensor count")?;
        let n_meta = r.u64("metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_meta {
            let key = r.string(&format!("the key of metadata entry {i}"))?;
            let what = format!("metadata `{key}` (entry {i})");
            let ty = r.u32(&format!("the value type of {what}"))?;
            let value = r.value(ty, &what, 0)?;
            // As ggml's reader: a repeated key would let a later entry shadow the one checked.
            if metadata.insert(key, value).is_some() {
                return Err(r.corrupt(format!("{what}: the key appears twice")));
            }
        }
        let mut tensors = BTreeMap::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor {i}"))?;
            let what = format!("tensor `{name}` (entry {i})");
            let n_dims = r.u32(&what)?;
            if n_dims > 4 {
                return Err(Error::Corrupt {
                    path: path.into(),
                    reason: format!("tensor `{name}` has {n_dims} dimensions (at most 4)"),
                });
            }
            let dims = (0..n_dims).map(|_| r.u64(&what)).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_id(r.u32(&what)?);
            let offset = r.u64(&what)?;
            // Each dimension must be a valid torch size on its own: with a zero among them the
            // product is 0 whatever the others are (found by fuzzing: a 2^63-sized dimension next
            // to a 0 became a negative torch size).
            if dims.iter().any(|&d| d > i64::MAX as u64)
                || dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).is_none_or(|n| n > isize::MAX as u64)
            {
                return Err(r.corrupt(format!(
                    "{what}: dimensions {dims:?} overflow (each must be below 2^63, their product below 2^63)"
                )));
            }
            if tensors.contains_key(&name) {
                return Err(r.corrupt(format!("{what}: a tensor of that name appears earlier")));
            }
            tensors.insert(name, TensorInfo { dims, ggml_type, offset });
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => {
                    return Err(r.corrupt(format!(
                        "metadata `general.alignment` must be a power of two up to 2^20, found {v:?}"
                    )))
                }
            },
        };
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let gguf = GgufFile { path: path.into(), mmap, version, metadata, tensors, data_start };
        for (name, info) in &gguf.tensors {
            let Some((per_block, block_bytes)) = info.ggml_type.block() else { continue };
            // The element count fits in isize (checked above); the byte count may still overflow.
            let n: u64 = info.dims.iter().product();
            let end = n
                .div_ceil(per_block as u64)
                .checked_mul(block_bytes as u64)
                .and_then(|b| b.checked_add(info.offset))
                .and_then(|b| b.checked_add(gguf.data_start as u64));
            if end.is_none_or(|e| e > gguf.mmap.len() as u64) {
                let end = end.map_or("past 2^64".to_string(), |e| e.to_string());
                return Err(Error::Corrupt {
                    path: path.into(),
                    reason: format!(
                        "truncated GGUF: tensor `{name}` ends at byte {end}, the file has {}",
                        gguf.mmap.len()
                    ),
                });
            }
        }
        Ok(gguf)
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// A required unsigned metadata value; the error names the key.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.get(key).and_then(Value::as_u64).ok_or_else(|| Error::Corrupt {
            path: self.path.clone(),
            reason: format!("metadata `{key}` is missing or not an integer"),
        })
    }

    /// Dequantises tensor `name` to f32, shaped in torch order.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info =
            self.tensors.get(name).ok_or_else(|| Error::MissingKey { path: self.path.clone(), key: name.into() })?;
        let Some((per_block, block_bytes)) = info.ggml_type.block() else {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}` uses {}, which moram does not dequantise (supported: {SUPPORTED})",
                    info.ggml_type.name()
                ),
            });
        };
        let n: usize = info.dims.iter().product::<u64>() as usize;
        if !n.is_multiple_of(per_block) {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                reason: format!("tensor `{name}`: {n} values are not whole blocks"),
            });
        }
        let start = self.data_start + info.offset as usize;
        let bytes = &self.mmap[start..start + n / per_block * block_bytes];
        let flat = match info.ggml_type {
            GgmlType::Block(b) => quants::dequantise_tensor(b, bytes),
            GgmlType::Q8_0 => quants::dequantise_tensor(BlockType::Q8_0, bytes),
            ty => {
                let raw = Tensor::f_from_data_size(bytes, &[(n / per_block) as i64, block_bytes as i64], Kind::Uint8)?;
                dequantise(&raw, ty)
            }
        };
        Ok(flat.reshape(info.shape().as_slice()))
    }
}

/// Blocks `(n_blocks, block_bytes)` u8 -> values `(n_blocks * per_block,)` f32.
fn dequantise(raw: &Tensor, ty: GgmlType) -> Tensor {
    let half = |col: i64| raw.narrow(1, col, 2).contiguous().view_dtype(Kind::Half).to_kind(Kind::Float);
    match ty {
        GgmlType::F32 => raw.contiguous().view_dtype(Kind::Float).reshape([-1]),
        GgmlType::F16 => raw.contiguous().view_dtype(Kind::Half).to_kind(Kind::Float).reshape([-1]),
        GgmlType::Bf16 => raw.contiguous().view_dtype(Kind::BFloat16).to_kind(Kind::Float).reshape([-1]),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let first = if ty == GgmlType::Q4_0 { 2 } else { 4 };
            let qs = raw.narrow(1, first, 16).to_kind(Kind::Int);
            // Low nibbles are weights 0..16 of the block, high nibbles 16..32.
            let q = Tensor::cat(&[qs.bitwise_and(15), qs.bitwise_right_shift_tensor_scalar(4)], 1).to_kind(Kind::Float);
            let w = if ty == GgmlType::Q4_0 { (q - 8.0) * half(0) } else { q * half(0) + half(2) };
            w.reshape([-1])
        }
        GgmlType::Q8_0 | GgmlType::Block(_) | GgmlType::Unsupported(..) => unreachable!("dispatched by the caller"),
    }
}
