//! Normalised scores (variants, not in the paper; `docs/method.md`, "Normalised scores"): Eq. 5
//! reads `x - mean` or `(x - mean) / std` per feature, with the first task's statistics fitted
//! before any atom exists ([`crate::methods::hooks::fit_score_statistics`]).

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing, ScoreInput};

fn normalised(method: &MethodConfig, mut layer: MoramConfig, input: ScoreInput) -> Result<MoramConfig> {
    layer.routing = Routing::MORAM;
    let mut layer = optional_variants(method, layer)?;
    layer.score_input = method.score_input.unwrap_or(input);
    Ok(layer)
}

/// Centred scores: Eq. 5 reads `x - mean`.
#[derive(Debug, Clone, Copy)]
pub struct Centred;

impl MethodDef for Centred {
    fn name(&self) -> &'static str {
        "moram-centred"
    }
    fn summary(&self) -> &'static str {
        "MoRAM scoring the input minus the first task's mean"
    }
    fn is_variant(&self) -> bool {
        true
    }
    fn layer(&self, method: &MethodConfig, layer: MoramConfig) -> Result<MoramConfig> {
        normalised(method, layer, ScoreInput::Centred)
    }
}

/// Standardised scores: Eq. 5 reads `(x - mean) / std` per feature.
#[derive(Debug, Clone, Copy)]
pub struct Standardised;

impl MethodDef for Standardised {
    fn name(&self) -> &'static str {
        "moram-standardised"
    }
    fn summary(&self) -> &'static str {
        "MoRAM scoring the input standardised with the first task's statistics"
    }
    fn is_variant(&self) -> bool {
        true
    }
    fn layer(&self, method: &MethodConfig, layer: MoramConfig) -> Result<MoramConfig> {
        normalised(method, layer, ScoreInput::Standardised)
    }
}
