//! Process-level tuning for libtorch on CPU.
//!
//! libtorch's CPU tensors come from glibc `malloc`. With glibc's default, dynamically adjusted
//! mmap threshold, every large activation (a `(tokens, d)` f32 tensor is megabytes) can be a fresh
//! `mmap` whose pages the kernel must fault in and zero, followed by a `munmap` when it is freed,
//! which made a MoRAM layer's backward pass markedly slower in our checks. Keeping such blocks on
//! the heap removes the churn.

/// Keeps allocations up to 32 MiB on the heap and lets freed heap memory up to 512 MiB be reused
/// instead of returned to the kernel at once. Call once at start-up, before heavy work; the
/// binaries of this workspace do. Returns whether the allocator accepted the settings (always
/// `false` off glibc, where nothing is changed).
pub fn tune_cpu_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; both values are within glibc's limits.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
