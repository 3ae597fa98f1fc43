//! The protected-input-subspace variants (not in the paper; `docs/method.md`, "Protected input
//! subspaces"): each layer keeps a basis of the inputs earlier tasks occupy (GPM's rule), grown
//! after every task ([`crate::methods::hooks::extend_key_subspaces`]); what it restricts differs.

use super::{optional_variants, MethodDef};
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

macro_rules! subspace_method {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $summary:literal, $mode:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $ty;

        impl MethodDef for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn summary(&self) -> &'static str {
                $summary
            }
            fn is_variant(&self) -> bool {
                true
            }
            fn layer(&self, method: &MethodConfig, layer: MoramConfig) -> Result<MoramConfig> {
                protected(method, layer, $mode)
            }
        }
    };
}

subspace_method!(
    /// Orthogonal keys: each task's new keys live outside the earlier tasks' input subspace.
    Orthogonal,
    "moram-orthogonal",
    "MoRAM whose new keys stay out of earlier tasks' input subspace (GPM / InfLoRA style)",
    SubspaceMode::Keys
);
subspace_method!(
    /// Novel routing: an atom's relevance score ignores the earlier tasks' subspace; its value
    /// reads everything.
    NovelRouting,
    "moram-novel-routing",
    "MoRAM whose scores ignore earlier tasks' input subspace",
    SubspaceMode::Routing
);
subspace_method!(
    /// Novelty-gated routing: a later task's atoms act only on tokens the earlier tasks' subspace
    /// does not explain, and there at full scale.
    NoveltyGated,
    "moram-novelty-gated",
    "MoRAM whose later atoms act only on tokens earlier tasks' subspace does not explain",
    SubspaceMode::NoveltyGated
);
