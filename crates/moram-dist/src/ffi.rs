//! The C ABI of `csrc/shim.cpp`. Every function returns 0 on success, or 1 with a malloc'ed
//! message in `err` (free it with [`moram_dist_free_message`]).

use std::ffi::{c_char, c_int, c_void};

#[repr(C)]
pub struct MoramStore {
    _private: [u8; 0],
}

#[repr(C)]
pub struct MoramGroup {
    _private: [u8; 0],
}

extern "C" {
    pub fn moram_dist_free_message(message: *mut c_char);
    pub fn moram_dist_free_bytes(bytes: *mut u8);
    #[allow(clippy::too_many_arguments)]
    pub fn moram_store_new(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut MoramStore,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_store_clone(store: *mut MoramStore, out: *mut *mut MoramStore, err: *mut *mut c_char) -> c_int;
    pub fn moram_store_free(store: *mut MoramStore);
    pub fn moram_store_set(
        store: *mut MoramStore,
        key: *const c_char,
        data: *const u8,
        len: usize,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_store_check(
        store: *mut MoramStore,
        key: *const c_char,
        exists: *mut c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_store_get(
        store: *mut MoramStore,
        key: *const c_char,
        data: *mut *mut u8,
        len: *mut usize,
        err: *mut *mut c_char,
    ) -> c_int;
    #[allow(clippy::too_many_arguments)]
    pub fn moram_group_new_gloo(
        store: *mut MoramStore,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        threads: c_int,
        interface: *const c_char,
        hostname: *const c_char,
        out: *mut *mut MoramGroup,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_group_new_nccl(
        store: *mut MoramStore,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut MoramGroup,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_group_free(group: *mut MoramGroup);
    pub fn moram_group_allreduce(
        group: *mut MoramGroup,
        tensor: *mut c_void,
        op: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_group_broadcast(
        group: *mut MoramGroup,
        tensor: *mut c_void,
        root: c_int,
        err: *mut *mut c_char,
    ) -> c_int;
    pub fn moram_group_barrier(group: *mut MoramGroup, err: *mut *mut c_char) -> c_int;
}

/// Runs one shim call; a failure becomes the C++ exception's message.
pub fn call(f: impl FnOnce(*mut *mut c_char) -> c_int) -> Result<(), String> {
    let mut err: *mut c_char = std::ptr::null_mut();
    if f(&mut err) == 0 {
        return Ok(());
    }
    if err.is_null() {
        return Err("unknown error (no message)".into());
    }
    // SAFETY: the shim stores a NUL-terminated malloc'ed copy of the exception's message.
    let message = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy().into_owned();
    // SAFETY: allocated by the shim with malloc, freed once here.
    unsafe { moram_dist_free_message(err) };
    Err(message)
}
