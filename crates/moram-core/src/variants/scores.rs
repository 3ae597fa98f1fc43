//! Normalised scores (a variant, not in the paper; `docs/method.md`, "Normalised scores"): what
//! Eq. 5 scores, the raw input or the input centred / standardised with the first task's
//! per-feature statistics, kept in the bank and saved with it.

use crate::bank::AtomBank;
use crate::config::ScoreInput;
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

impl AtomBank {
    /// What Eq. 5 scores for inputs `x` `(.., d_in)`: `None` for the raw input (the paper), else
    /// the centred or standardised copy ([`ScoreInput`]). Without statistics the raw input is used;
    /// [`AtomBank::needs_score_statistics`] tells the layer to refuse that.
    pub(crate) fn score_input(&self, x: &Tensor) -> Option<Tensor> {
        let (mean, std) = self.score_stats.as_ref()?;
        match self.config.score_input {
            ScoreInput::Raw => None,
            ScoreInput::Centred => Some(x - mean),
            ScoreInput::Standardised => Some((x - mean) / std),
        }
    }

    /// Whether the config scores normalised inputs but no statistics were set yet
    /// ([`AtomBank::set_score_statistics`]).
    pub fn needs_score_statistics(&self) -> bool {
        self.config.score_input != ScoreInput::Raw && self.score_stats.is_none()
    }

    /// The per-feature `(mean, std)` `(d_in,)` the scores are normalised with, when set.
    pub fn score_statistics(&self) -> Option<(&Tensor, &Tensor)> {
        self.score_stats.as_ref().map(|(m, s)| (m, s))
    }

    /// Sets the per-feature `mean` and `std` `(d_in,)` of the inputs ([`ScoreInput`]); both must be
    /// finite, `std` non-negative. Standard deviations below `1e-6` times the largest are raised to
    /// it, so a constant feature cannot blow a score up.
    pub fn set_score_statistics(&mut self, mean: &Tensor, std: &Tensor) -> Result<()> {
        for (what, t) in [("score mean", mean), ("score std", std)] {
            if t.size() != [self.d_in] {
                return Err(Error::Shape { what: what.into(), expected: format!("[{}]", self.d_in), found: t.size() });
            }
        }
        let to_f32 = |t: &Tensor| t.detach().to_device(self.device).to_kind(Kind::Float).contiguous();
        let (mean, std) = (to_f32(mean), to_f32(std));
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
        if !finite(&mean) || !finite(&std) || std.lt(0.0).any().int64_value(&[]) == 1 {
            return Err(Error::State("score statistics must be finite with std >= 0".into()));
        }
        // Relative to the largest deviation, which raising the small ones leaves unchanged: setting
        // what a file stored gives the same values again.
        let floor = (std.max().double_value(&[]) * 1e-6).max(f64::MIN_POSITIVE);
        self.score_stats = Some((mean, std.clamp_min(floor)));
        Ok(())
    }
}
