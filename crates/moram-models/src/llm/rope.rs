//! Rotary position embeddings (Su et al., 2021) and the frequency scalings of `transformers`
//! (`modeling_rope_utils.py`, 4.45.2 to 4.57.1 agree on these): default, `linear`, `dynamic`
//! (NTK-aware, recomputed past the trained length), `llama3` and `yarn` (4.57.1's). Frequencies are computed in f32
//! with the same operations in the same order, so they equal `transformers`' bit for bit.

use tch::{Device, Kind, Tensor};

/// Llama-3 style RoPE frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    /// Overall scaling factor.
    pub factor: f64,
    /// Wavelengths longer than `original / low_freq_factor` are divided by `factor`.
    pub low_freq_factor: f64,
    /// Wavelengths shorter than `original / high_freq_factor` are kept.
    pub high_freq_factor: f64,
    /// The pre-training context length.
    pub original_max_position_embeddings: f64,
}

/// YaRN frequency scaling (`rope_scaling.rope_type = "yarn"`, Peng et al. 2023) as `transformers`
/// 4.57.1 computes it (`_compute_yarn_parameters`): frequencies interpolated by `factor` below a
/// band of dimensions, kept above it, a linear ramp between; cos and sin scaled by the attention
/// factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YarnScaling {
    /// Interpolation factor.
    pub factor: f64,
    /// The pre-training context length (`None`: the config's `max_position_embeddings`).
    pub original_max_position_embeddings: Option<f64>,
    /// Rotations that bound the ramp (32 and 1 by default).
    pub beta_fast: f64,
    /// See `beta_fast`.
    pub beta_slow: f64,
    /// The factor on cos and sin: given, or `0.1 ln(factor) + 1` (with `mscale` and
    /// `mscale_all_dim`, the ratio of the two such values).
    pub attention_factor: f64,
    /// Whether the ramp's ends are rounded to whole dimensions (true by default).
    pub truncate: bool,
}

/// A `rope_scaling` of a Hugging Face config (`None` in [`super::LlmConfig`] is the default RoPE,
/// as is `rope_type = "default"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    Linear {
        /// Scaling factor.
        factor: f64,
    },
    /// `dynamic` (NTK-aware): for a forward pass whose largest position `p` reaches
    /// `max_position_embeddings` or more, the base becomes
    /// `theta * (factor * (p + 1) / max_position_embeddings - (factor - 1)) ^ (dim / (dim - 2))`.
    Dynamic {
        /// Scaling factor.
        factor: f64,
    },
    /// `llama3`: long wavelengths slowed by `factor`, short ones kept, a smooth blend in between.
    Llama3(Llama3Scaling),
    /// `yarn`: see [`YarnScaling`].
    Yarn(YarnScaling),
}

impl RopeScaling {
    /// Whether the frequencies of a pass depend on its largest position (`dynamic`): a sequence
    /// then gets other angles in a longer or padded pass, so passes that lay rows out differently
    /// (per example, packed, padded) do not agree.
    pub fn depends_on_pass_length(&self) -> bool {
        matches!(self, RopeScaling::Dynamic { .. })
    }
}

/// The rotary embedding of one model: its base frequencies and scaling.
#[derive(Debug)]
pub struct Rope {
    /// Frequencies `(head_dim / 2)` f32 for positions within the trained length.
    inv_freq: Tensor,
    theta: f64,
    dim: i64,
    scaling: Option<RopeScaling>,
    max_position_embeddings: i64,
    /// The factor on cos and sin (YaRN's attention factor; 1 otherwise).
    attention_scaling: f64,
}

/// `1 / base ^ (arange(0, dim, 2) / dim)` in f32 with a scalar or per-call base.
fn inverse_frequencies(base: &Tensor, dim: i64, device: Device) -> Tensor {
    position_frequencies(base, dim, device).reciprocal()
}

/// `base ^ (arange(0, dim, 2) / dim)` in f32 (`pos_freqs` of `transformers`).
fn position_frequencies(base: &Tensor, dim: i64, device: Device) -> Tensor {
    let exponents = Tensor::arange_start_step(0, dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / dim as f64;
    base.pow(&exponents)
}

impl Rope {
    /// The embedding for `head_dim` with base `theta`, a scaling, and the trained length (used by
    /// `dynamic`).
    ///
    /// `freq_factors` `(dim / 2)` divide the frequencies (llama.cpp's `rope_freqs` of LLaMA 3.x
    /// GGUF files).
    pub fn new(
        dim: i64,
        theta: f64,
        scaling: Option<RopeScaling>,
        freq_factors: Option<&[f32]>,
        max_position_embeddings: i64,
        device: Device,
    ) -> Self {
        let base = Tensor::from(theta as f32).to_device(device);
        let mut inv_freq = inverse_frequencies(&base, dim, device);
        let mut attention_scaling = 1.0;
        match scaling {
            Some(RopeScaling::Linear { factor }) => inv_freq /= factor,
            Some(RopeScaling::Llama3(s)) => inv_freq = llama3_inv_freq(&inv_freq, s),
            Some(RopeScaling::Yarn(s)) => {
                let original = s.original_max_position_embeddings.unwrap_or(max_position_embeddings as f64);
                inv_freq = yarn_inv_freq(&position_frequencies(&base, dim, device), theta, dim, original, s);
                attention_scaling = s.attention_factor;
            }
            Some(RopeScaling::Dynamic { .. }) | None => {}
        }
        if let Some(factors) = freq_factors {
            inv_freq /= Tensor::from_slice(factors).to_device(device);
        }
        Rope { inv_freq, theta, dim, scaling, max_position_embeddings, attention_scaling }
    }

    /// The frequencies `(head_dim / 2)` f32 a forward pass at `positions` uses. Only `dynamic`
    /// depends on the positions: past the trained length it recomputes them for the largest
    /// position of this pass (`transformers` does the same for a fresh model; it also keeps a grown
    /// table across later calls until one is shorter than the trained length, which we do not).
    pub fn inv_freq(&self, positions: &Tensor) -> Tensor {
        let Some(RopeScaling::Dynamic { factor }) = self.scaling else {
            return self.inv_freq.shallow_clone();
        };
        let seq_len = positions.max().int64_value(&[]) + 1;
        if seq_len <= self.max_position_embeddings {
            return self.inv_freq.shallow_clone();
        }
        let device = self.inv_freq.device();
        let max = self.max_position_embeddings as f64;
        // As transformers: an int64 length times a Python float gives an f32 tensor.
        let grown = Tensor::from(seq_len).to_device(device) * factor / max - (factor - 1.0);
        let exponent = self.dim as f64 / (self.dim - 2) as f64;
        let base = grown.pow_tensor_scalar(exponent) * self.theta;
        inverse_frequencies(&base.to_kind(Kind::Float), self.dim, device)
    }

    /// `cos` and `sin` `(B|1, 1, L, head_dim)` in `kind` for `positions` `(B|1, L)`.
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let inv_freq = self.inv_freq(positions);
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &inv_freq; // (B|1, L, hd/2)
        let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
        if self.attention_scaling != 1.0 {
            let a = self.attention_scaling;
            return ((emb.cos() * a).to_kind(kind), (emb.sin() * a).to_kind(kind));
        }
        (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
    }
}

/// `rotate_half`: `(x1, x2) -> (-x2, x1)` on the last dimension `(B, H, L, head_dim)`.
pub fn rotate_half(x: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3)
}

/// Hugging Face `_compute_llama3_parameters`: long wavelengths slowed by `factor`, short ones
/// kept, a smooth blend in between.
fn llama3_inv_freq(inv_freq: &Tensor, s: Llama3Scaling) -> Tensor {
    let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    // Scalar / tensor, as Python evaluates `2 * math.pi / inv_freq` (one rounding).
    let over = |num: f64, t: &Tensor| (t.ones_like() * num).divide(t);
    let wavelen = over(2.0 * std::f64::consts::PI, inv_freq);
    let scaled = inv_freq.where_self(&wavelen.le(low_wavelen), &(inv_freq / s.factor));
    let smooth = (over(s.original_max_position_embeddings, &wavelen) - s.low_freq_factor)
        / (s.high_freq_factor - s.low_freq_factor);
    let smoothed = (smooth.ones_like() - &smooth) * &scaled / s.factor + &smooth * &scaled;
    let medium = wavelen.ge(high_wavelen).logical_and(&wavelen.le(low_wavelen));
    smoothed.where_self(&medium, &scaled)
}

/// `transformers` 4.57.1 `_compute_yarn_parameters` from `pos_freqs` (`theta ^ (2i / dim)`); the
/// ramp's ends come from `beta_fast` / `beta_slow` rotations over the original context, in f64 as
/// Python's `math` computes them.
fn yarn_inv_freq(pos_freqs: &Tensor, theta: f64, dim: i64, original: f64, s: YarnScaling) -> Tensor {
    let correction =
        |rotations: f64| (dim as f64 * (original / (rotations * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * theta.ln());
    let (mut low, mut high) = (correction(s.beta_fast), correction(s.beta_slow));
    if s.truncate {
        low = low.floor();
        high = high.ceil();
    }
    let (low, high) = (low.max(0.0), high.min((dim - 1) as f64));
    let high = if low == high { high + 0.001 } else { high };
    let ramp = ((Tensor::arange(dim / 2, (Kind::Float, pos_freqs.device())) - low) / (high - low)).clamp(0.0, 1.0);
    let extrapolation = ramp.ones_like() - ramp;
    let extrapolated = pos_freqs.reciprocal();
    let interpolated = (pos_freqs * s.factor).reciprocal();
    &interpolated * (extrapolation.ones_like() - &extrapolation) + &extrapolated * &extrapolation
}
