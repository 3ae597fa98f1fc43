//! Experiment: could a product kernel of moram's own beat MKL when decoding a few rows?
//!
//! One decoding step's products through SmolLM2-135M (the 7 projections of all 30 blocks with
//! distinct random weights, so that they stream from memory as in decoding, and the tied
//! 49,152 x 576 head), f32, one thread: `moram_core::runtime::linear` (libtorch/MKL, what moram
//! calls) against a register-blocked AVX-512 kernel written here (4 inputs x 4 weight rows per
//! block, dot products along `d_in`, the next block's weight rows prefetched). The two alternate
//! call by call; medians and their ratio are printed. Results and the conclusion drawn from them:
//! `benchmarks/results/small-rows.md`. Not used by moram: it is the evidence for not writing one.
//!
//! ```text
//! cargo build --release -p moram-bench --example small_rows_kernel
//! LD_LIBRARY_PATH=$PWD/.libtorch/lib ./target/release/examples/small_rows_kernel
//! ```

use anyhow::{bail, Result};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The projections of one SmolLM2-135M block, (d_out, d_in): q, k, v, o, gate, up, down.
const SHAPES: [(usize, usize); 7] =
    [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)];
const ROUNDS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod kernel {
    use std::arch::x86_64::*;

    /// The four sums of `a0..a3`'s lanes, in order.
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn sum4(a0: __m512, a1: __m512, a2: __m512, a3: __m512) -> __m128 {
        let t01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
        let t23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
        let (p01, p23) = (_mm512_castps_pd(t01), _mm512_castps_pd(t23));
        let u = _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(p01, p23)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(p01, p23)),
        );
        let v = _mm512_add_ps(u, _mm512_shuffle_f32x4::<0b01001110>(u, u));
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b10110001>(v, v));
        _mm512_castps512_ps128(v)
    }

    /// `y[i, j] = x[i, :] . w[j, :]` for `MB` rows of x (stride `k`) and 4 rows of w (stride
    /// `k`), into y (row stride `ldy`); `k % 16 == 0`. Prefetches 4 * k floats from `next`.
    ///
    /// # Safety
    /// The pointers cover the rows read and written; `next`, when not null, 4 * k floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn block<const MB: usize>(
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        k: usize,
        ldy: usize,
        next: *const f32,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 4]; MB];
        let mut kk = 0;
        while kk < k {
            // SAFETY: kk + 16 <= k, within each row; `next` as documented.
            unsafe {
                if !next.is_null() {
                    for j in 0..4 {
                        _mm_prefetch::<_MM_HINT_T0>(next.add(kk * 4 + j * 16) as *const i8);
                    }
                }
                let wv: [__m512; 4] = std::array::from_fn(|j| _mm512_loadu_ps(w.add(j * k + kk)));
                for (i, row) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(x.add(i * k + kk));
                    for (a, wj) in row.iter_mut().zip(wv) {
                        *a = _mm512_fmadd_ps(xv, wj, *a);
                    }
                }
            }
            kk += 16;
        }
        for (i, row) in acc.iter().enumerate() {
            // SAFETY: row i of y has 4 columns from here.
            unsafe { _mm_storeu_ps(y.add(i * ldy), sum4(row[0], row[1], row[2], row[3])) };
        }
    }

    /// `y = x w^T`: x [m, k], w [n, k], y [m, n], all row-major; `k % 16 == 0`, `n % 4 == 0`.
    ///
    /// # Safety
    /// The CPU has AVX-512F; the slices have the stated sizes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn product(x: &[f32], w: &[f32], y: &mut [f32], m: usize, n: usize, k: usize) {
        let (xp, wp, yp) = (x.as_ptr(), w.as_ptr(), y.as_mut_ptr());
        for nb in (0..n).step_by(4) {
            // SAFETY: every offset below stays inside x (m * k), w (n * k) and y (m * n).
            unsafe {
                let next = if nb + 8 <= n { wp.add((nb + 4) * k) } else { std::ptr::null() };
                let mut mb = 0;
                while mb + 4 <= m {
                    let pf = if mb == 0 { next } else { std::ptr::null() };
                    block::<4>(xp.add(mb * k), wp.add(nb * k), yp.add(mb * n + nb), k, n, pf);
                    mb += 4;
                }
                while mb < m {
                    block::<1>(xp.add(mb * k), wp.add(nb * k), yp.add(mb * n + nb), k, n, std::ptr::null());
                    mb += 1;
                }
            }
        }
    }
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(t.flatten(0, -1))?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[cfg(target_arch = "x86_64")]
fn main() -> Result<()> {
    if !std::arch::is_x86_feature_detected!("avx512f") {
        bail!("this experiment needs AVX-512F");
    }
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let opts = (Kind::Float, Device::Cpu);
    let mut weights: Vec<Tensor> =
        (0..30).flat_map(|_| SHAPES.iter().map(|&(o, i)| Tensor::randn([o as i64, i as i64], opts))).collect();
    weights.push(Tensor::randn([49152, 576], opts));
    let plain: Vec<Vec<f32>> = weights.iter().map(to_vec).collect::<Result<_>>()?;
    println!("rows | libtorch (ms) | own kernel (ms) | libtorch / own | max |difference|");
    for rows in [4usize, 8, 16, 32] {
        let xs = [Tensor::randn([rows as i64, 576], opts), Tensor::randn([rows as i64, 1536], opts)];
        let xv = [to_vec(&xs[0])?, to_vec(&xs[1])?];
        let pick = |d_in: usize| usize::from(d_in == 1536);
        let mut outs: Vec<Vec<f32>> = weights.iter().map(|w| vec![0f32; rows * w.size()[0] as usize]).collect();
        let mut worst = 0f32;
        let (mut lib, mut own) = (Vec::new(), Vec::new());
        for round in 0..=ROUNDS {
            let t = Instant::now();
            let reference: Vec<Tensor> =
                weights.iter().map(|w| moram_core::runtime::linear(&xs[pick(w.size()[1] as usize)], w, None)).collect();
            let lib_ms = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            for ((w, wv), y) in weights.iter().zip(&plain).zip(&mut outs) {
                let (n, k) = (w.size()[0] as usize, w.size()[1] as usize);
                // SAFETY: AVX-512F checked above; x is rows x k, w n x k, y rows x n.
                unsafe { kernel::product(&xv[pick(k)], wv, y, rows, n, k) };
            }
            let own_ms = t.elapsed().as_secs_f64() * 1e3;
            if round == 0 {
                // Warm-up round: check the values instead of timing.
                for (r, y) in reference.iter().zip(&outs) {
                    let diff = to_vec(r)?.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    worst = worst.max(diff);
                }
                continue;
            }
            lib.push(lib_ms);
            own.push(own_ms);
        }
        let ratios = lib.iter().zip(&own).map(|(a, b)| a / b).collect();
        println!("{rows} | {:.1} | {:.1} | {:.2}x | {worst:.1e}", median(lib), median(own), median(ratios));
    }
    Ok(())
}

#[cfg(not(target_arch = "x86_64"))]
fn main() -> Result<()> {
    bail!("this experiment is written for x86-64 with AVX-512F")
}
