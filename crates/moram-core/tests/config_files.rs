//! The profile files under `configs/moram/` parse to exactly their profiles.

use moram_core::{MoramConfig, Profile};
use std::path::PathBuf;

#[test]
fn every_profile_file_matches_its_profile() -> anyhow::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/moram");
    for profile in Profile::ALL {
        let path = dir.join(format!("{}.toml", profile.name()));
        let config = MoramConfig::from_file(&path)?;
        assert_eq!(config, profile.config(), "{} differs from Profile::{profile:?}", path.display());
    }
    assert_eq!(std::fs::read_dir(&dir)?.count(), Profile::ALL.len(), "one file per profile, no strays");
    Ok(())
}
