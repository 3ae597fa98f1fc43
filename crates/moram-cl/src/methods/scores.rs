//! Normalised scores (variants, not in the paper; `docs/method.md`, "Normalised scores"): Eq. 5
//! reads `x - mean` or `(x - mean) / std` per feature, with the first task's statistics fitted
//! before any atom exists ([`crate::methods::hooks::fit_score_statistics`]).

use super::optional_variants;
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing, ScoreInput};

fn normalised(method: &MethodConfig, mut layer: MoramConfig, input: ScoreInput) -> Result<MoramConfig> {
    layer.routing = Routing::MORAM;
    let mut layer = optional_variants(method, layer)?;
    layer.score_input = method.score_input.unwrap_or(input);
    Ok(layer)
}

layer_method!(
    /// Centred scores: Eq. 5 reads `x - mean`.
    Centred,
    "moram-centred",
    "MoRAM scoring the input minus the first task's mean",
    variant: true,
    |method, layer| normalised(method, layer, ScoreInput::Centred)
);
layer_method!(
    /// Standardised scores: Eq. 5 reads `(x - mean) / std` per feature.
    Standardised,
    "moram-standardised",
    "MoRAM scoring the input standardised with the first task's statistics",
    variant: true,
    |method, layer| normalised(method, layer, ScoreInput::Standardised)
);
