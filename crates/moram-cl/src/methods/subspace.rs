//! The protected-input-subspace variants (not in the paper; `docs/method.md`, "Protected input
//! subspaces"): each layer keeps a basis of the inputs earlier tasks occupy (GPM's rule), grown
//! after every task ([`crate::methods::hooks::extend_key_subspaces`]); what it restricts differs.

use super::optional_variants;
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{KeySubspace, MoramConfig, Routing, SubspaceMode};

/// The subspace variants' default energy: GPM's first-layer threshold (Saha et al. 2021 use 0.97).
pub const DEFAULT_ENERGY: f64 = 0.97;

fn protected(method: &MethodConfig, mut layer: MoramConfig, mode: SubspaceMode) -> Result<MoramConfig> {
    layer.routing = Routing::MORAM;
    let mut layer = optional_variants(method, layer)?;
    layer.key_subspace = Some(KeySubspace {
        quantile: method.novelty_quantile.unwrap_or(moram_core::config::DEFAULT_NOVELTY_QUANTILE),
        ..KeySubspace::new(method.subspace_energy.unwrap_or(DEFAULT_ENERGY), mode)
    });
    Ok(layer)
}

layer_method!(
    /// Orthogonal keys: each task's new keys live outside the earlier tasks' input subspace.
    Orthogonal,
    "moram-orthogonal",
    "MoRAM whose new keys stay out of earlier tasks' input subspace (GPM / InfLoRA style)",
    variant: true,
    |method, layer| protected(method, layer, SubspaceMode::Keys)
);
layer_method!(
    /// Novel routing: an atom's relevance score ignores the earlier tasks' subspace; its value
    /// reads everything.
    NovelRouting,
    "moram-novel-routing",
    "MoRAM whose scores ignore earlier tasks' input subspace",
    variant: true,
    |method, layer| protected(method, layer, SubspaceMode::Routing)
);
layer_method!(
    /// Novelty-gated routing: a later task's atoms act only on tokens the earlier tasks' subspace
    /// does not explain, and there at full scale.
    NoveltyGated,
    "moram-novelty-gated",
    "MoRAM whose later atoms act only on tokens earlier tasks' subspace does not explain",
    variant: true,
    |method, layer| protected(method, layer, SubspaceMode::NoveltyGated)
);
