//! [`TargetSpec`]: which linear layers of a model get MoRAM atoms.
//!
//! A model lists its adaptable layers as [`LinearSite`]s (module path, encoder, block index,
//! canonical module name) and its [`ModuleNames`] (canonical names, aliases, shorthand tokens).
//! A spec selects encoders (`vision`, `text`, `decoder`, or `all`), modules (canonical names,
//! aliases such as `out_proj` or `c_fc`, or shorthands such as the official code's `qkvoinout`),
//! and optionally a subset of block indices. Matching is strict: an encoder, module or layer that
//! matches nothing is an error naming it and listing the valid values.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// One linear layer a model can adapt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearSite {
    /// Module path in the checkpoint's key space, e.g. `vision_model.encoder.layers.3.self_attn.q_proj`.
    pub path: String,
    /// The encoder (tower, stack) it belongs to: `vision`, `text`, `decoder`.
    pub encoder: String,
    /// Block index within its encoder.
    pub layer: usize,
    /// Canonical module name, e.g. `q`, `o`, `fc1`, `gate`.
    pub module: String,
}

/// How a model names its modules.
#[derive(Debug, Clone, Copy)]
pub struct ModuleNames {
    /// Canonical module names.
    pub canonical: &'static [&'static str],
    /// Other accepted names, `(alias, canonical)`.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Tokens of shorthand strings, `(token, canonical)`: `qkvoinout` reads as q, k, v, o, in, out.
    pub shorthand: &'static [(&'static str, &'static str)],
}

fn all() -> Vec<String> {
    vec!["all".into()]
}

/// Which layers to adapt; see the module docs. TOML: `encoders = ["all"]`,
/// `modules = ["qkvoinout"]`, `layers = [0, 1, 2]` (optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Encoders to adapt, or `all`.
    #[serde(default = "all")]
    pub encoders: Vec<String>,
    /// Modules: canonical names, aliases, shorthands, or `all`.
    pub modules: Vec<String>,
    /// Block indices to adapt (every block when absent).
    #[serde(default)]
    pub layers: Option<Vec<usize>>,
}

impl TargetSpec {
    /// A spec adapting `modules` in every block of every encoder.
    pub fn all_encoders(modules: &[&str]) -> Self {
        TargetSpec { encoders: all(), modules: modules.iter().map(|m| m.to_string()).collect(), layers: None }
    }

    /// Resolves one module pattern to canonical names.
    fn resolve(pattern: &str, names: &ModuleNames) -> Result<Vec<&'static str>> {
        if pattern == "all" {
            return Ok(names.canonical.to_vec());
        }
        if let Some(c) = names.canonical.iter().find(|c| **c == pattern) {
            return Ok(vec![c]);
        }
        if let Some((_, c)) = names.aliases.iter().find(|(a, _)| *a == pattern) {
            return Ok(vec![c]);
        }
        // Shorthand: split into known tokens, longest first, consuming the whole string.
        let mut out = Vec::new();
        let mut rest = pattern;
        while !rest.is_empty() {
            let token = names
                .shorthand
                .iter()
                .filter(|(t, _)| rest.starts_with(t))
                .max_by_key(|(t, _)| t.len())
                .ok_or_else(|| Error::Target(unknown_module(pattern, names)))?;
            out.push(token.1);
            rest = &rest[token.0.len()..];
        }
        if out.is_empty() {
            return Err(Error::Target(unknown_module(pattern, names)));
        }
        Ok(out)
    }

    /// The sites this spec selects, in the order given; errors when any part matches nothing.
    pub fn select<'a>(&self, sites: &'a [LinearSite], names: &ModuleNames) -> Result<Vec<&'a LinearSite>> {
        let available: BTreeSet<&str> = sites.iter().map(|s| s.encoder.as_str()).collect();
        let encoders: BTreeSet<&str> = if self.encoders.iter().any(|e| e == "all") {
            available.clone()
        } else {
            for e in &self.encoders {
                if !available.contains(e.as_str()) {
                    return Err(Error::Target(format!(
                        "encoder `{e}` does not exist; valid: all, {}",
                        available.iter().copied().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            self.encoders.iter().map(String::as_str).collect()
        };
        if self.modules.is_empty() {
            return Err(Error::Target("no modules given".into()));
        }
        let in_encoders: Vec<&LinearSite> = sites.iter().filter(|s| encoders.contains(s.encoder.as_str())).collect();
        let mut modules = BTreeSet::new();
        for pattern in &self.modules {
            for m in Self::resolve(pattern, names)? {
                if !in_encoders.iter().any(|s| s.module == m) {
                    return Err(Error::Target(format!(
                        "module `{pattern}` ({m}) matches no layer in encoder(s) {}",
                        encoders.iter().copied().collect::<Vec<_>>().join(", ")
                    )));
                }
                modules.insert(m);
            }
        }
        if let Some(layers) = &self.layers {
            for l in layers {
                if !in_encoders.iter().any(|s| s.layer == *l) {
                    let max = in_encoders.iter().map(|s| s.layer).max().unwrap_or(0);
                    return Err(Error::Target(format!("layer {l} does not exist (blocks are 0..={max})")));
                }
            }
        }
        Ok(in_encoders
            .into_iter()
            .filter(|s| modules.contains(s.module.as_str()))
            .filter(|s| self.layers.as_ref().is_none_or(|ls| ls.contains(&s.layer)))
            .collect())
    }
}

fn unknown_module(pattern: &str, names: &ModuleNames) -> String {
    let aliases: Vec<String> = names.aliases.iter().map(|(a, c)| format!("{a} (= {c})")).collect();
    let tokens: Vec<&str> = names.shorthand.iter().map(|(t, _)| *t).collect();
    format!(
        "module `{pattern}` is not known; valid: all, {}; aliases: {}; shorthands combine {}",
        names.canonical.join(", "),
        aliases.join(", "),
        tokens.join("/")
    )
}
