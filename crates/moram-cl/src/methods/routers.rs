//! The learned routers of paper Table 4: rank-1 atoms behind an external router, and MoE-LoRA
//! (one rank-r expert per task behind a router over experts).

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

/// Table 4 "external router, rank-1": per-atom router keys instead of self-activation.
#[derive(Debug, Clone, Copy)]
pub struct RouterRank1;

impl MethodDef for RouterRank1 {
    fn name(&self) -> &'static str {
        "router-rank1"
    }
    fn summary(&self) -> &'static str {
        "rank-1 atoms weighted by a learned router (paper Table 4)"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::ExternalRouter { use_top_k: true, use_temperature: true };
        optional_variants(method, layer)
    }
}

/// MoE-LoRA: one rank-r expert per task behind a learned router.
#[derive(Debug, Clone, Copy)]
pub struct MoeLora;

impl MethodDef for MoeLora {
    fn name(&self) -> &'static str {
        "moe-lora"
    }
    fn summary(&self) -> &'static str {
        "MoE-LoRA: a rank-r expert per task behind a learned router (paper Table 4)"
    }
    fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
        layer.routing = Routing::MoeLora { use_top_k: true, use_temperature: false };
        optional_variants(method, layer)
    }
}
