//! O-LoRA (Wang et al., 2023; the paper's TRACE baseline): a rank-r LoRA per task, earlier ones
//! frozen, outputs summed; the loss adds `orthogonal_penalty * sum |A_t A_s^T|` over the frozen
//! keys and `l2_penalty * (||A_t|| + ||B_t||)` (norms, as the official code), with TRACE's settings
//! 0.5 and 0 by default.

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// O-LoRA's lambda_1 and lambda_2 as the TRACE benchmark code sets them.
pub const DEFAULT_PENALTY: (f64, f64) = (0.5, 0.0);

/// O-LoRA.
#[derive(Debug, Clone, Copy)]
pub struct OLora;

impl MethodDef for OLora {
    fn name(&self) -> &'static str {
        "o-lora"
    }
    fn summary(&self) -> &'static str {
        "O-LoRA: a LoRA per task, earlier ones frozen, orthogonality and L2 penalties"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Sum {};
        let mut layer = optional_variants(method, layer)?;
        layer.penalty = moram_core::Penalty {
            orthogonality: method.orthogonal_penalty.unwrap_or(DEFAULT_PENALTY.0),
            l2: method.l2_penalty.unwrap_or(DEFAULT_PENALTY.1),
        };
        Ok(layer)
    }
}
