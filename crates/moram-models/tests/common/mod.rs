//! Helpers shared by moram-models' integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$MORAM_ASSETS/<name>/<file>` as `cargo xtask setup` lays it out (default cache when unset),
/// or `None` with a printed reason when the asset is absent (registry unreachable at set-up).
pub fn asset(name: &str, file: &str) -> Option<PathBuf> {
    let assets = std::env::var_os("MORAM_ASSETS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("MORAM_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache").join("moram")
        });
        cache.join("assets")
    });
    let path = assets.join(name).join(file);
    if path.exists() {
        Some(path)
    } else {
        println!("skipping: {} is absent (the registry was unreachable during `cargo xtask setup`)", path.display());
        None
    }
}
