//! RMSNorm as the decoder families compute it (`docs/method.md` does not cover model code; the
//! reference is `transformers`' `LlamaRMSNorm` / `GemmaRMSNorm`).

use tch::{Kind, Tensor};

/// How the learned scale is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormScale {
    /// `w * x`, after casting the normalised value back to the input dtype (LLaMA, Qwen, Mistral).
    Weight,
    /// `(1 + w) * x` in f32, then cast (Gemma).
    OnePlusWeight,
}

/// RMS normalisation over the last dimension, computed in f32.
#[derive(Debug)]
pub struct RmsNorm {
    /// The scale `w`, `(width,)`.
    pub weight: Tensor,
    eps: f64,
    scale: NormScale,
}

impl RmsNorm {
    /// A norm with scale `weight` `(width,)`.
    pub fn new(weight: Tensor, eps: f64, scale: NormScale) -> Self {
        RmsNorm { weight, eps, scale }
    }

    /// `x` `(.., width)` normalised, in `x`'s dtype.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let xf = x.to_kind(Kind::Float);
        let var = xf.square().mean_dim([-1].as_slice(), true, Kind::Float);
        let normed = xf * (var + self.eps).rsqrt();
        match self.scale {
            NormScale::Weight => normed.to_kind(x.kind()) * &self.weight,
            NormScale::OnePlusWeight => (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(x.kind()),
        }
    }
}
