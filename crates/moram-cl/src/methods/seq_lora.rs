//! SeqLoRA: one LoRA trained on every task in turn, never frozen (the forgetting baseline).

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// SeqLoRA.
#[derive(Debug, Clone, Copy)]
pub struct SeqLora;

impl MethodDef for SeqLora {
    fn name(&self) -> &'static str {
        "seq-lora"
    }
    fn summary(&self) -> &'static str {
        "SeqLoRA: one rank-r LoRA trained on every task in turn"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::Lora {};
        optional_variants(method, layer)
    }
}
