//! `--set key=value` overrides of a run config: applied to the config's document (dotted keys,
//! TOML values; bare words are strings), then deserialised and validated once.

use super::RunConfig;
use crate::error::{Error, Result};
use serde::Deserialize;

impl RunConfig {
    /// Applies a `key=value` override (dotted key, TOML value; bare words are read as strings).
    pub fn set(&mut self, assignment: &str) -> Result<()> {
        self.set_all(std::slice::from_ref(&assignment))
    }

    /// Applies several `key=value` overrides in order, then validates once (so overrides that only
    /// make sense together, e.g. `data.tasks` and `training.epochs`, can be given together).
    pub fn set_all<S: AsRef<str>>(&mut self, assignments: &[S]) -> Result<()> {
        let mut doc = toml::Value::try_from(&*self).map_err(|e| Error::config("(config)", e.to_string()))?;
        let mut keys = Vec::new();
        for assignment in assignments {
            let assignment = assignment.as_ref();
            let (key, value) = assignment
                .split_once('=')
                .ok_or_else(|| Error::config(assignment, "an override must look like `section.key=value`"))?;
            let key = key.trim();
            let value = value.trim();
            let parsed: toml::Value = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(value.to_string()));
            let mut node = &mut doc;
            let parts: Vec<&str> = key.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let table = node.as_table_mut().ok_or_else(|| Error::config(key, "is not inside a table"))?;
                if i + 1 == parts.len() {
                    table.insert(part.to_string(), parsed.clone());
                    break;
                }
                node = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(Default::default()));
            }
            keys.push(key.to_string());
        }
        // `iterations` and `epochs` exclude each other: choosing one on the command line replaces
        // the other the config file gave (unless both are set here, which validation refuses).
        for (chosen, other) in [("iterations", "epochs"), ("epochs", "iterations")] {
            let set = |k: &str| keys.iter().any(|x| x == &format!("training.{k}"));
            if set(chosen) && !set(other) {
                if let Some(t) = doc.get_mut("training").and_then(toml::Value::as_table_mut) {
                    t.remove(other);
                }
            }
        }
        let c = RunConfig::deserialize(doc)
            .map_err(|e| Error::Override { keys: keys.join(", "), message: e.message().trim_end().to_string() })?;
        c.validate()?;
        *self = c;
        Ok(())
    }
}
