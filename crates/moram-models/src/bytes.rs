//! The bytes of a checkpoint file: a read-only memory map of a file on disk, or a buffer the
//! caller already holds (a download, an archive member, a fuzzer's input). Parsers take either
//! through [`FileBytes`] so that the code path checked on in-memory inputs is the one that reads
//! files.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::fs::File;
use std::ops::Deref;
use std::path::Path;

/// Read-only file contents; dereferences to `&[u8]`.
pub(crate) enum FileBytes {
    /// A memory-mapped file.
    Mapped(Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl FileBytes {
    /// Maps `path` read-only.
    pub(crate) fn map(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io { path: path.into(), source })?;
        // SAFETY: a read-only map; a file modified while mapped is outside what we support (the
        // contract of every mmap-based loader).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io { path: path.into(), source })?;
        Ok(FileBytes::Mapped(mmap))
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Owned(v) => v,
        }
    }
}
