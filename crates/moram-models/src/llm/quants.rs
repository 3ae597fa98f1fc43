//! Block dequantisation of Q8_0 and of the ggml types with 5-bit and "K" (256-weight
//! super-block) layouts: Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K, written from the block layouts of ggml's
//! `ggml-common.h` and the reference `dequantize_row_*` rules of `ggml-quants.c` (checked against
//! the `gguf` Python package by `tests/gguf.rs`). Each function turns one block's bytes into its
//! weights; [`dequantise_tensor`] runs them over a tensor's blocks in parallel (rayon).
//!
//! All scales are stored little-endian: `f16` for `d`/`dmin`, except Q8_K's `f32` `d`.

use half::f16;
use rayon::prelude::*;

/// Weights per K-quant super-block.
pub(crate) const QK_K: usize = 256;

/// The ggml types this module dequantises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// 32 weights: f16 scale, 32 signed 8-bit weights; `q d`. (Large Q8_0 tensors, such as a
    /// quantised token embedding, dominate a file's dequantisation time; per block in parallel
    /// here it runs several times faster than as whole-tensor libtorch ops.)
    Q8_0,
    /// 32 weights: f16 scale, 32 high bits, 32 x 4 low bits; `(q - 16) d`.
    Q5_0,
    /// 32 weights: f16 scale and min, 32 high bits, 32 x 4 low bits; `q d + m`.
    Q5_1,
    /// 256 weights in 16 groups: 4-bit scales and mins, 2-bit weights.
    Q2K,
    /// 256 weights in 16 groups: 6-bit signed scales, 3-bit weights (2 low bits + a high-bit mask).
    Q3K,
    /// 256 weights in 8 groups: 6-bit scales and mins, 4-bit weights.
    Q4K,
    /// 256 weights in 8 groups: 6-bit scales and mins, 5-bit weights.
    Q5K,
    /// 256 weights in 16 groups: 8-bit signed scales, 6-bit weights.
    Q6K,
    /// 256 weights: f32 scale, 8-bit signed weights.
    Q8K,
}

impl BlockType {
    /// `(weights per block, bytes per block)` as in `ggml-common.h`.
    pub(crate) fn block(self) -> (usize, usize) {
        match self {
            BlockType::Q8_0 => (32, 34),                   // d, qs[32] (i8)
            BlockType::Q5_0 => (32, 22),                   // d, qh[4], qs[16]
            BlockType::Q5_1 => (32, 24),                   // d, m, qh[4], qs[16]
            BlockType::Q2K => (QK_K, 84),                  // scales[16], qs[64], d, dmin
            BlockType::Q3K => (QK_K, 110),                 // hmask[32], qs[64], scales[12], d
            BlockType::Q4K => (QK_K, 144),                 // d, dmin, scales[12], qs[128]
            BlockType::Q5K => (QK_K, 176),                 // d, dmin, scales[12], qh[32], qs[128]
            BlockType::Q6K => (QK_K, 210),                 // ql[128], qh[64], scales[16] (i8), d
            BlockType::Q8K => (QK_K, 4 + QK_K + QK_K / 8), // d (f32), qs[256] (i8), bsums[16] (i16)
        }
    }

    fn dequantise_block(self, b: &[u8], y: &mut [f32]) {
        match self {
            BlockType::Q8_0 => q8_0(b, y),
            BlockType::Q5_0 => q5_0(b, y),
            BlockType::Q5_1 => q5_1(b, y),
            BlockType::Q2K => q2_k(b, y),
            BlockType::Q3K => q3_k(b, y),
            BlockType::Q4K => q4_k(b, y),
            BlockType::Q5K => q5_k(b, y),
            BlockType::Q6K => q6_k(b, y),
            BlockType::Q8K => q8_k(b, y),
        }
    }
}

/// Dequantises whole blocks into `out`: `bytes.len()` must be a multiple of the block size (the
/// caller checks) and `out` hold `bytes.len() / block_bytes * per_block` values.
pub(crate) fn dequantise_into(ty: BlockType, bytes: &[u8], out: &mut [f32]) {
    let (per_block, block_bytes) = ty.block();
    out.par_chunks_mut(per_block).zip(bytes.par_chunks_exact(block_bytes)).for_each(|(y, b)| ty.dequantise_block(b, y));
}

/// [`dequantise_into`] a new f32 tensor `(n,)`: no intermediate vector, so a
/// large tensor (a quantised token embedding) is written once instead of twice.
pub(crate) fn dequantise_tensor(ty: BlockType, bytes: &[u8]) -> tch::Tensor {
    let (per_block, block_bytes) = ty.block();
    let n = bytes.len() / block_bytes * per_block;
    let t = tch::Tensor::empty([n as i64], (tch::Kind::Float, tch::Device::Cpu));
    if n == 0 {
        // An empty tensor may have no storage at all (a null data pointer).
        return t;
    }
    // SAFETY: `t` was just allocated by libtorch as a contiguous CPU f32 tensor of `n` elements
    // and nothing else refers to it until this function returns it.
    let out = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) };
    dequantise_into(ty, bytes, out);
    t
}

fn f16_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Q8_0: `x = q d` with `q` the signed bytes after the f16 scale.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    for (x, &q) in y.iter_mut().zip(&b[2..34]) {
        *x = f32::from(q as i8) * d;
    }
}

/// Q5_0: `x = (q - 16) d` with `q` = low nibble (weights 0..16) or high nibble (16..32) of
/// `qs`, plus bit `j` of the 32-bit `qh` as the fifth bit of weight `j`.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let hi0 = ((qh >> j) & 1) << 4;
        let hi1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = (((qs[j] & 0x0f) as u32 | hi0) as f32 - 16.0) * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | hi1) as f32 - 16.0) * d;
    }
}

/// Q5_1: as Q5_0 without the offset, `x = q d + m`.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let hi0 = ((qh >> j) & 1) << 4;
        let hi1 = ((qh >> (j + 16)) & 1) << 4;
        y[j] = ((qs[j] & 0x0f) as u32 | hi0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | hi1) as f32 * d + m;
    }
}

/// Q2_K: 16 groups of 16 weights, each with a 4-bit scale (low nibble) and 4-bit min (high
/// nibble) times the super-block's `d` / `dmin`; 2-bit weights, four per byte, the byte
/// `qs[32 h + l]` holding weight `l` of groups `8h + 2s` (`l < 16`) at bit shift `2s`.
fn q2_k(b: &[u8], y: &mut [f32]) {
    let scales = &b[0..16];
    let qs = &b[16..80];
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    let mut g = 0;
    let mut out = 0;
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let sc = scales[g];
                g += 1;
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                for l in 0..16 {
                    y[out] = dl * ((q[16 * part + l] >> shift) & 3) as f32 - ml;
                    out += 1;
                }
            }
        }
    }
}

/// The 16 signed 6-bit scales of a Q3_K block, unpacked from its 12 bytes: low 4 bits of scale
/// `i` from nibble `i` of bytes 0..8, high 2 bits from bytes 8..12.
fn q3_k_scales(s: &[u8]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let low = if i < 8 { s[i] & 0x0f } else { s[i - 8] >> 4 };
        let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
        *o = (low | (high << 4)) as i32 - 32;
    }
    out
}

/// Q3_K: 16 groups of 16 weights with signed 6-bit scales times `d`; each weight is 2 low bits
/// (laid out as in Q2_K) minus 4 unless its bit in `hmask` is set.
fn q3_k(b: &[u8], y: &mut [f32]) {
    let hmask = &b[0..32];
    let qs = &b[32..96];
    let scales = q3_k_scales(&b[96..108]);
    let d = f16_at(b, 108);
    let mut g = 0;
    let mut out = 0;
    let mut m = 1u8;
    for half in 0..2 {
        let q = &qs[32 * half..32 * half + 32];
        for shift in [0u32, 2, 4, 6] {
            for part in 0..2 {
                let dl = d * scales[g] as f32;
                g += 1;
                for l in 0..16 {
                    let i = 16 * part + l;
                    let low = ((q[i] >> shift) & 3) as i32;
                    let sub = if hmask[i] & m != 0 { 0 } else { 4 };
                    y[out] = dl * (low - sub) as f32;
                    out += 1;
                }
            }
            m <<= 1;
        }
    }
}

/// Scale and min of group `j` (0..8) of a Q4_K / Q5_K block: 6 bits each, packed in 12 bytes
/// (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    if j < 4 {
        ((q[j] & 63) as f32, (q[j + 4] & 63) as f32)
    } else {
        let sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
        let m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        (sc as f32, m as f32)
    }
}

/// Q4_K: 8 groups of 32 weights, `x = d sc q - dmin m`; each 32 bytes of `qs` hold two groups
/// (low nibbles, then high nibbles).
fn q4_k(b: &[u8], y: &mut [f32]) {
    k_groups_of_32(f16_at(b, 0), f16_at(b, 2), &b[4..16], None, &b[16..144], y);
}

/// Q5_K: Q4_K plus a fifth bit per weight from `qh` (bit `2 pair` for the low-nibble group, bit
/// `2 pair + 1` for the high-nibble group).
fn q5_k(b: &[u8], y: &mut [f32]) {
    k_groups_of_32(f16_at(b, 0), f16_at(b, 2), &b[4..16], Some(&b[16..48]), &b[48..176], y);
}

/// The shared body of Q4_K and Q5_K: four pairs of 32-weight groups, 6-bit scales and mins
/// (`scale_min_k4`), 4-bit weights in `qs` and, for Q5_K, their fifth bits in `qh`.
fn k_groups_of_32(d: f32, dmin: f32, scales: &[u8], qh: Option<&[u8]>, qs: &[u8], y: &mut [f32]) {
    for pair in 0..4 {
        let q = &qs[32 * pair..32 * pair + 32];
        let (s1, m1) = scale_min_k4(2 * pair, scales);
        let (s2, m2) = scale_min_k4(2 * pair + 1, scales);
        let (u1, u2) = (1u8 << (2 * pair), 1u8 << (2 * pair + 1));
        let high = |l: usize, bit: u8| qh.map_or(0, |h| if h[l] & bit != 0 { 16 } else { 0 });
        let y = &mut y[64 * pair..64 * pair + 64];
        for l in 0..32 {
            y[l] = d * s1 * ((q[l] & 0x0f) + high(l, u1)) as f32 - dmin * m1;
            y[l + 32] = d * s2 * ((q[l] >> 4) + high(l, u2)) as f32 - dmin * m2;
        }
    }
}

/// Q6_K: 16 groups of 16 weights with signed 8-bit scales times `d`; each weight is 4 bits of
/// `ql` plus 2 bits of `qh`, minus 32.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            let s = |k: usize| d * sc[is + k] as i8 as f32;
            y[l] = s(0) * q1 as f32;
            y[l + 32] = s(2) * q2 as f32;
            y[l + 64] = s(4) * q3 as f32;
            y[l + 96] = s(6) * q4 as f32;
        }
    }
}

/// Q8_K: `x = d q` with an `f32` `d` and signed 8-bit `q` (the block sums are for dot products).
fn q8_k(b: &[u8], y: &mut [f32]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (v, &q) in y.iter_mut().zip(&b[4..4 + QK_K]) {
        *v = d * q as i8 as f32;
    }
}
