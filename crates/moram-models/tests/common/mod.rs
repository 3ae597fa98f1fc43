//! Helpers shared by moram-models' integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `<assets>/<name>/<file>` as `cargo xtask setup` lays it out ([`moram_assets::test_asset`]):
/// `None` with a printed reason when absent in a plain `cargo test`; a failure under
/// `cargo xtask test`, which set it up.
pub fn asset(name: &str, file: &str) -> Option<PathBuf> {
    moram_assets::test_asset(std::path::Path::new(name).join(file))
}
