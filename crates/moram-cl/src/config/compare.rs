//! A run config as flat `dotted.key -> value` pairs: its hash (stored in every run state) and the
//! fields two configs differ in (the check before resuming a run).

use super::RunConfig;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

impl RunConfig {
    /// The config as flat `dotted.key -> value` pairs (for diffs and reports).
    pub fn flatten(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(v) = serde_json::to_value(self) {
            flatten_into("", &v, &mut out);
        }
        out
    }

    /// SHA-256 of the canonical JSON form.
    pub fn hash(&self) -> String {
        let mut hasher = Sha256::new();
        for (k, v) in self.flatten() {
            hasher.update(format!("{k}={v}\n").as_bytes());
        }
        hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The dotted keys whose values differ between `self` (a run's config) and `other` (the one
    /// given now), as `key (run X, given Y)`; keys that only change reporting
    /// ([`super::REPORTING_KEYS`]) do not count.
    pub fn differing_fields(&self, other: &RunConfig) -> Vec<String> {
        let (a, b) = (self.flatten(), other.flatten());
        let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(k) != b.get(k) && !super::REPORTING_KEYS.contains(&k.as_str()))
            .map(|k| {
                let show = |m: &BTreeMap<String, String>| m.get(&k).cloned().unwrap_or_else(|| "(absent)".into());
                format!("{k} (run {}, given {})", show(&a), show(&b))
            })
            .collect()
    }
}

fn flatten_into(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten_into(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}
