//! Files only their owner may read (tokens, keys, credentials).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::api::Failure;

/// Writes `contents` to `path`, readable only by its owner.
pub fn write(path: &Path, contents: &str) -> Result<(), Failure> {
    let failed =
        |e: std::io::Error| Failure::Local(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(failed)?;
    // A file made earlier with other permissions is tightened before anything goes in.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    file.write_all(contents.as_bytes()).map_err(failed)
}

/// Writes `contents` to `path` atomically (through a temporary file and a rename).
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), Failure> {
    let temporary = path.with_extension("tmp");
    write(&temporary, contents)?;
    std::fs::rename(&temporary, path)
        .map_err(|e| Failure::Local(format!("cannot write {}: {e}", path.display())))
}
