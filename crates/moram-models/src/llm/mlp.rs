//! The gated MLP of the decoder families: `down(act(gate(x)) * up(x))` (SwiGLU, GeGLU).

use super::config::Activation;
use crate::error::Result;
use crate::linear::AdaptableLinear;
use tch::Tensor;

/// A gated MLP; each projection may carry MoRAM atoms.
#[derive(Debug)]
pub struct GatedMlp {
    /// `gate_proj`, `(intermediate, hidden)`.
    pub gate: AdaptableLinear,
    /// `up_proj`, `(intermediate, hidden)`.
    pub up: AdaptableLinear,
    /// `down_proj`, `(hidden, intermediate)`.
    pub down: AdaptableLinear,
    activation: Activation,
}

impl GatedMlp {
    /// The MLP from its three projections.
    pub fn new(gate: AdaptableLinear, up: AdaptableLinear, down: AdaptableLinear, activation: Activation) -> Self {
        GatedMlp { gate, up, down, activation }
    }

    /// `x` `(.., hidden)` -> `(.., hidden)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gate = self.gate.forward(x)?;
        let gate = match self.activation {
            Activation::Silu => gate.silu(),
            Activation::GeluTanh => gate.gelu("tanh"),
            Activation::Gelu => gate.gelu("none"),
        };
        self.down.forward(&(gate * self.up.forward(x)?))
    }
}
