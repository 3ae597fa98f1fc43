//! The routing math of MoRAM as small pure functions over tensors (paper Eqs. 4-8).
//!
//! Shapes: `z` is the raw projection `A x` of each token onto every atom key, `(.., R)`; the
//! functions work on the last dimension and keep every leading (batch, sequence) dimension.
//! All of them are differentiable where the paper's formulas are (top-k selection itself is not:
//! masked entries get zero gradient, as in the reference).

use tch::{Kind, Tensor};

/// Eq. 5: signed relevance `s = z / max(||z||_2, eps)` over the atoms of each token.
///
/// `z`: `(.., R)` -> `(.., R)`. Same semantics as `torch.nn.functional.normalize(z, dim=-1, eps)`:
/// the norm is clamped, so an all-zero row stays zero instead of producing NaN.
pub fn relevance_scores(z: &Tensor, eps: f64) -> Tensor {
    let norm = z.norm_scalaropt_dim(2, [-1].as_slice(), true).clamp_min(eps);
    z / norm
}

/// The number of atoms the top-k mask keeps for `n` candidates: `min(max(k, 2), n)`.
///
/// Both official code bases force `k >= 2` (`max(topk, 2)`); the TRACE code also clamps to the
/// number of atoms, the X-TAIL code does not and crashes when `k > R` (protocol bug B4). We always
/// clamp: with fewer atoms than `k`, every atom is kept.
pub fn effective_top_k(k: usize, n: usize) -> usize {
    k.max(2).min(n)
}

/// Eq. 6: keeps the `k` largest entries of the last dimension (by signed value) and sets all others
/// to `-inf`. `k` is used as given (see [`effective_top_k`]); `k >= n` returns the scores unchanged.
///
/// `scores`: `(.., n)` -> `(.., n)`. Ties go to whichever entry `topk` picks, as in the reference.
pub fn top_k_mask(scores: &Tensor, k: usize) -> Tensor {
    let n = scores.size().last().copied().unwrap_or(0);
    if k as i64 >= n {
        return scores.shallow_clone();
    }
    let (kept, index) = scores.topk(k as i64, -1, true, false);
    scores.full_like(f64::NEG_INFINITY).scatter(-1, &index, &kept)
}

/// Eq. 7: `w = softmax(masked / tau)` over the last dimension, computed in f32. Masked (`-inf`)
/// entries get weight exactly 0.
pub fn mixture_weights(masked: &Tensor, temperature: f64) -> Tensor {
    if temperature == 1.0 {
        masked.softmax(-1, Kind::Float)
    } else {
        (masked / temperature).softmax(-1, Kind::Float)
    }
}

/// Eq. 8 (inference only): `w_i := 1{s_i >= delta} * w_i`, with `>=` on the normalised signed score
/// and no renormalisation, so a token's weights may sum to less than 1 (or to 0).
///
/// Since `sum_i s_i^2 <= 1`, at most `floor(1 / delta^2)` atoms can pass.
pub fn threshold_gate(weights: &Tensor, scores: &Tensor, threshold: f64) -> Tensor {
    weights.masked_fill(&scores.lt(threshold), 0.0)
}

/// Eq. 4 as implemented, first half: the weights scale the **raw** projection `z`, not the
/// normalised score. `z`, `weights`: `(.., R)` -> `(.., R)`.
pub fn mixed_projection(z: &Tensor, weights: &Tensor) -> Tensor {
    z * weights
}

/// Eq. 4 as implemented, second half: `delta = mixed B^T`, i.e. `sum_i w_i (a_i . x) b_i` per token.
/// `mixed`: `(.., R)`, `values` (B): `(d_out, R)` -> `(.., d_out)`.
pub fn apply_values(mixed: &Tensor, values: &Tensor) -> Tensor {
    mixed.matmul(&values.tr())
}

/// The sparse value path: keeps only the atoms at least one token selected (a non-zero column of
/// `mixed`, the weighted projections `(.., R)`), and returns the compacted `(mixed', values')` with
/// `values'` of shape `(d_out, R')`. `mixed' values'^T` equals `mixed values^T` up to summation
/// order. Meant for inference: it syncs once to find the used atoms.
pub fn compact_used_atoms(mixed: &Tensor, values: &Tensor) -> (Tensor, Tensor) {
    let r = mixed.size().last().copied().unwrap_or(0);
    let used = mixed.ne(0.0).reshape([-1, r]).any_dim(0, false).nonzero().squeeze_dim(-1);
    if used.size()[0] == r {
        return (mixed.shallow_clone(), values.shallow_clone());
    }
    (mixed.index_select(-1, &used), values.index_select(1, &used))
}
