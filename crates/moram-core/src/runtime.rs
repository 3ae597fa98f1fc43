//! Process-level tuning for libtorch on CPU, and the one linear product every layer uses.
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

/// Row counts for which [`linear`] multiplies the other way round on CPUs (see there).
pub const SMALL_ROWS: std::ops::RangeInclusive<i64> = 2..=4;

/// `x @ weight^T + bias` for `x` `(.., d_in)`, `weight` `(d_out, d_in)`, `bias` `(d_out)`:
/// libtorch's `linear`, except for f32 on a CPU with [`SMALL_ROWS`] rows (decoding a few
/// prompts at once), where it computes `(weight @ x^T)^T`. For so few rows MKL's sgemm runs the
/// usual `x @ weight^T` form 1.6-2.5x slower than the swapped one on SmolLM2's projections and
/// LM head together (`benchmarks/small_rows.py`, results in `benchmarks/results/small-rows.md`);
/// one row (sgemv), five or more rows and bf16 are as fast or faster the usual way. The result
/// is the same product, up to the order in which the kernel sums.
pub fn linear(x: &tch::Tensor, weight: &tch::Tensor, bias: Option<&tch::Tensor>) -> tch::Tensor {
    use tch::{Device, Kind};
    let size = x.size();
    let d_in = size.last().copied().unwrap_or(0);
    let rows = if d_in > 0 { x.numel() as i64 / d_in } else { 0 };
    let swapped = SMALL_ROWS.contains(&rows)
        && x.device() == Device::Cpu
        && x.kind() == Kind::Float
        && weight.kind() == Kind::Float
        && weight.dim() == 2;
    if !swapped {
        return x.linear(weight, bias);
    }
    let y = weight.matmul(&x.reshape([rows, d_in]).tr()).tr();
    let y = match bias {
        Some(b) => y + b,
        None => y,
    };
    let mut out = size;
    if let Some(last) = out.last_mut() {
        *last = weight.size()[0];
    }
    y.contiguous().reshape(out.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// Every row count, with and without bias, leading dimensions kept: the swapped product is
    /// the usual one up to f32 summation order, and gradients flow through it the same way.
    #[test]
    fn linear_equals_libtorch_linear_for_every_row_count() {
        tch::manual_seed(3);
        let w = Tensor::randn([7, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([7], (Kind::Float, Device::Cpu));
        for rows in 1..=7i64 {
            let x = Tensor::randn([1, rows, 5], (Kind::Float, Device::Cpu));
            for bias in [None, Some(&b)] {
                let want = x.linear(&w, bias);
                let got = linear(&x, &w, bias);
                assert_eq!(got.size(), [1, rows, 7]);
                let diff = (&got - &want).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "rows {rows}: {diff}");
                let gw = Tensor::run_backward(&[got.sum(Kind::Float)], &[&w], false, false);
                let ww = Tensor::run_backward(&[want.sum(Kind::Float)], &[&w], false, false);
                assert!((&gw[0] - &ww[0]).abs().max().double_value(&[]) < 1e-5, "rows {rows}: gradient");
            }
        }
        // bf16 and an empty input take libtorch's linear as is.
        let xb = Tensor::randn([3, 5], (Kind::BFloat16, Device::Cpu));
        let wb = w.detach().to_kind(Kind::BFloat16);
        assert_eq!(linear(&xb, &wb, None).size(), [3, 7]);
        assert_eq!(linear(&Tensor::zeros([0, 5], (Kind::Float, Device::Cpu)), &w, None).size(), [0, 7]);
    }
}
