//! Training batches without padding (`docs/performance.md`, "Training rows packed").
//!
//! A left-padded training batch spends its pad positions' share of every projection, norm and
//! MLP on tokens whose outputs nothing reads. [`PackedBatch`] lays the real tokens of each row end
//! to end in one row instead; the decoder runs it as packed sequences (each attending causally to
//! itself, RoPE positions restarting at 0) and the last block computes only each row's labelled
//! tail. The loss equals the padded batch's up to float rounding, because RoPE scores depend only
//! on relative positions.

use crate::error::{Error, Result};
use tch::{Device, Kind, Tensor};

/// A left-padded training batch `(B, L)` as one packed row of its `N` real tokens.
#[derive(Debug)]
pub(super) struct PackedBatch {
    /// Real tokens of each row (the packed sequences' lengths), `B` values summing to `N`.
    pub lengths: Vec<i64>,
    /// Trailing tokens of each row whose outputs the loss reads: from the first position whose
    /// next label is set to the row's end (0 for a row without labels).
    pub tails: Vec<i64>,
    /// Flat indices `(N,)` into `B * L` of the real tokens, row by row.
    index: Tensor,
    /// RoPE positions `(1, N)`, restarting at 0 in each row.
    pub positions: Tensor,
    /// Next-token targets `(sum of tails,)` of the tail tokens in packed order (-100 where none).
    pub targets: Tensor,
}

/// Indices in a packed row of the last `tails[i]` tokens of each sequence of `lengths[i]` tokens
/// laid end to end (each `tails[i] <= lengths[i]`).
pub(super) fn tail_rows(lengths: &[i64], tails: &[i64]) -> Vec<i64> {
    let mut start = 0;
    let mut rows = Vec::with_capacity(tails.iter().sum::<i64>().max(0) as usize);
    for (&t, &n) in tails.iter().zip(lengths) {
        rows.extend(start + n - t..start + n);
        start += n;
    }
    rows
}

impl PackedBatch {
    /// The packed layout of a batch with `labels` `(B, L)` and `attention_mask` `(B, L)`, or
    /// `None` when packing gains nothing or would not give the padded batch's loss exactly:
    /// no padding at all; a mask that is not left padding (real tokens one run ending at `L`);
    /// a row of fewer than 2 real tokens; a label that the padded batch predicts from a pad
    /// position (at or before a row's first real token); a row longer than the attention
    /// `window`, whose padded mask counts pad slots.
    pub fn of(labels: &Tensor, attention_mask: Option<&Tensor>, window: Option<i64>) -> Result<Option<Self>> {
        let Some(mask) = attention_mask else { return Ok(None) };
        let size = labels.size();
        if size.len() != 2 || mask.size() != size {
            return Ok(None);
        }
        let (b, l) = (size[0], size[1]);
        let flat = |t: &Tensor| -> Result<Vec<i64>> {
            Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).reshape([-1]))
                .map_err(|e| Error::Input(format!("reading a training batch: {e}")))
        };
        let (labels, mask) = (flat(labels)?, flat(mask)?);
        let (mut lengths, mut tails) = (Vec::with_capacity(b as usize), Vec::with_capacity(b as usize));
        let (mut index, mut positions, mut targets) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..b as usize {
            let row = &mask[r * l as usize..(r + 1) * l as usize];
            let labels = &labels[r * l as usize..(r + 1) * l as usize];
            let n = row.iter().filter(|&&m| m != 0).count() as i64;
            let start = (l - n) as usize;
            let left_padded = row[..start].iter().all(|&m| m == 0);
            if !left_padded || n < 2 || window.is_some_and(|w| n > w) {
                return Ok(None);
            }
            // The padded batch predicts the labels at 1..=start from pad positions.
            if start > 0 && labels[1..=start].iter().any(|&t| t != -100) {
                return Ok(None);
            }
            let first = (start..l as usize - 1).find(|&j| labels[j + 1] != -100);
            let tail = first.map_or(0, |j| l - j as i64);
            index.extend((start as i64..l).map(|j| r as i64 * l + j));
            positions.extend(0..n);
            targets.extend((l - tail..l).map(|j| labels.get(j as usize + 1).copied().unwrap_or(-100)));
            lengths.push(n);
            tails.push(tail);
        }
        if lengths.iter().all(|&n| n == l) {
            return Ok(None);
        }
        let device = attention_mask.map_or(Device::Cpu, Tensor::device);
        let t = |v: &[i64]| Tensor::from_slice(v).to_device(device);
        Ok(Some(PackedBatch {
            lengths,
            tails,
            index: t(&index),
            positions: t(&positions).unsqueeze(0),
            targets: t(&targets),
        }))
    }

    /// The real tokens of `t` `(B, L, ..)` as one packed row `(1, N, ..)`.
    pub fn gather(&self, t: &Tensor) -> Tensor {
        let mut size = t.size();
        let rest = size.split_off(2);
        let flat: Vec<i64> = std::iter::once(-1).chain(rest.iter().copied()).collect();
        t.reshape(flat.as_slice()).index_select(0, &self.index).unsqueeze(0)
    }
}

#[cfg(test)]
mod tests {
    use super::PackedBatch;
    use tch::Tensor;

    fn batch(mask: &[i64], labels: &[i64], b: i64) -> (Tensor, Tensor) {
        (Tensor::from_slice(labels).view([b, -1]), Tensor::from_slice(mask).view([b, -1]))
    }

    #[test]
    fn left_padded_rows_pack_with_their_tails_and_targets() -> crate::Result<()> {
        // Row 0: 5 real tokens, labels on its last 2; row 1: 3 real tokens, labels on its last 1.
        let (labels, mask) =
            batch(&[1, 1, 1, 1, 1, 0, 0, 1, 1, 1], &[-100, -100, -100, 7, 8, -100, -100, -100, -100, 9], 2);
        let p = PackedBatch::of(&labels, Some(&mask), None)?.expect("packs");
        assert_eq!(p.lengths, [5, 3]);
        // Row 0 is read from position 2 (predicting 7), row 1 from its position 1 (predicting 9).
        assert_eq!(p.tails, [3, 2]);
        assert_eq!(Vec::<i64>::try_from(&p.positions.view([-1])).expect("i64"), [0, 1, 2, 3, 4, 0, 1, 2]);
        assert_eq!(Vec::<i64>::try_from(&p.targets).expect("i64"), [7, 8, -100, 9, -100]);
        assert_eq!(super::tail_rows(&p.lengths, &p.tails), [2, 3, 4, 6, 7]);
        let ids = Tensor::arange(10, (tch::Kind::Int64, tch::Device::Cpu)).view([2, 5]);
        let packed = Vec::<i64>::try_from(&p.gather(&ids).view([-1])).expect("i64");
        assert_eq!(packed, [0, 1, 2, 3, 4, 7, 8, 9]);
        assert_eq!(p.gather(&ids.unsqueeze(-1).repeat([1, 1, 4])).size(), [1, 8, 4]);
        Ok(())
    }

    #[test]
    fn batches_that_would_change_the_loss_stay_padded() -> crate::Result<()> {
        let labels = |v: &[i64]| Tensor::from_slice(v).view([2, 3]);
        let mask = |v: &[i64]| Tensor::from_slice(v).view([2, 3]);
        let ok = labels(&[-100, -100, 5, -100, -100, 6]);
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 0, 1, 1])), None)?.is_some());
        // No padding, no mask: nothing to gain.
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 1, 1, 1])), None)?.is_none());
        assert!(PackedBatch::of(&ok, None, None)?.is_none());
        // Right padding, a gap, a one-token row.
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 1, 1, 0])), None)?.is_none());
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 0, 1, 1, 1, 1])), None)?.is_none());
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 0, 0, 1])), None)?.is_none());
        // A label on the first real token is predicted from a pad position.
        let early = labels(&[-100, -100, 5, -100, 4, 6]);
        assert!(PackedBatch::of(&early, Some(&mask(&[1, 1, 1, 0, 1, 1])), None)?.is_none());
        // A row longer than the attention window.
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 0, 1, 1])), Some(2))?.is_none());
        assert!(PackedBatch::of(&ok, Some(&mask(&[1, 1, 1, 0, 1, 1])), Some(3))?.is_some());
        Ok(())
    }
}
