//! MoRAM as the paper defines it (Eqs. 4-8: self-activated rank-1 atoms, top-k, temperature, the
//! inference threshold) and its paper Table 4 ablations, each with one routing stage switched off.

use super::{optional_variants, MethodDef};
use crate::config::MethodConfig;
use crate::error::Result;
use moram_core::{MoramConfig, Routing};

fn self_activated(top_k: bool, temperature: bool, threshold: bool) -> Routing {
    Routing::SelfActivated { use_top_k: top_k, use_temperature: temperature, use_threshold: threshold }
}

macro_rules! moram_routing {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $summary:literal, $routing:expr) => {
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
            fn layer(&self, method: &MethodConfig, mut layer: MoramConfig) -> Result<MoramConfig> {
                layer.routing = $routing;
                optional_variants(method, layer)
            }
        }
    };
}

moram_routing!(
    /// MoRAM (paper Eqs. 4-8).
    Moram,
    "moram",
    "MoRAM: self-activated rank-1 atoms, top-k, temperature, inference threshold (the paper)",
    Routing::MORAM
);
moram_routing!(
    /// Table 4 "self-activated" only: no top-k, no temperature, no threshold.
    SelfActivated,
    "moram-self-activated",
    "paper Table 4: self-activated routing alone (no top-k, temperature or threshold)",
    self_activated(false, false, false)
);
moram_routing!(
    /// MoRAM without top-k.
    NoTopK,
    "moram-no-top-k",
    "MoRAM without top-k (Table 4 ablation)",
    self_activated(false, true, true)
);
moram_routing!(
    /// MoRAM without the temperature (tau = 1).
    NoTemperature,
    "moram-no-temperature",
    "MoRAM without the temperature (Table 4 ablation)",
    self_activated(true, false, true)
);
moram_routing!(
    /// MoRAM without the inference threshold.
    NoThreshold,
    "moram-no-threshold",
    "MoRAM without the inference threshold (Table 4 ablation)",
    self_activated(true, true, false)
);
