//! MoRAM as the paper defines it (Eqs. 4-8: self-activated rank-1 atoms, top-k, temperature, the
//! inference threshold) and its paper Table 4 ablations, each with one routing stage switched off.

use super::optional_variants;
use moram_core::Routing;

fn self_activated(top_k: bool, temperature: bool, threshold: bool) -> Routing {
    Routing::SelfActivated { use_top_k: top_k, use_temperature: temperature, use_threshold: threshold }
}

layer_method!(
    /// MoRAM (paper Eqs. 4-8).
    Moram,
    "moram",
    "MoRAM: self-activated rank-1 atoms, top-k, temperature, inference threshold (the paper)",
    variant: false,
    |method, mut layer| {
        layer.routing = Routing::MORAM;
        optional_variants(method, layer)
    }
);
layer_method!(
    /// Table 4 "self-activated" only: no top-k, no temperature, no threshold.
    SelfActivated,
    "moram-self-activated",
    "paper Table 4: self-activated routing alone (no top-k, temperature or threshold)",
    variant: false,
    |method, mut layer| {
        layer.routing = self_activated(false, false, false);
        optional_variants(method, layer)
    }
);
layer_method!(
    /// MoRAM without top-k.
    NoTopK,
    "moram-no-top-k",
    "MoRAM without top-k (Table 4 ablation)",
    variant: false,
    |method, mut layer| {
        layer.routing = self_activated(false, true, true);
        optional_variants(method, layer)
    }
);
layer_method!(
    /// MoRAM without the temperature (tau = 1).
    NoTemperature,
    "moram-no-temperature",
    "MoRAM without the temperature (Table 4 ablation)",
    variant: false,
    |method, mut layer| {
        layer.routing = self_activated(true, false, true);
        optional_variants(method, layer)
    }
);
layer_method!(
    /// MoRAM without the inference threshold.
    NoThreshold,
    "moram-no-threshold",
    "MoRAM without the inference threshold (Table 4 ablation)",
    variant: false,
    |method, mut layer| {
        layer.routing = self_activated(true, true, false);
        optional_variants(method, layer)
    }
);
