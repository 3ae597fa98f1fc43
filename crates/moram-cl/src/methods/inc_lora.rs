//! IncLoRA: a new rank-r LoRA per task, earlier ones frozen, their outputs summed (O-LoRA without
//! its penalties; the paper's Table 10 baseline).

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// IncLoRA.
#[derive(Debug, Clone, Copy)]
pub struct IncLora;

impl MethodDef for IncLora {
    fn name(&self) -> &'static str {
        "inc-lora"
    }
    fn summary(&self) -> &'static str {
        "IncLoRA: a LoRA per task, earlier ones frozen, outputs summed"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Sum {};
        optional_variants(method, layer)
    }
}
