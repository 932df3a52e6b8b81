//! Files only their owner may read (tokens, keys, credentials).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A private file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", .path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `contents` to `path`, readable only by its owner.
pub fn write(path: &Path, contents: &str) -> Result<(), WriteError> {
    let failed = |source: std::io::Error| WriteError {
        path: path.to_owned(),
        source,
    };
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
pub fn write_atomic(path: &Path, contents: &str) -> Result<(), WriteError> {
    let temporary = path.with_extension("tmp");
    write(&temporary, contents)?;
    std::fs::rename(&temporary, path).map_err(|source| WriteError {
        path: path.to_owned(),
        source,
    })
}
