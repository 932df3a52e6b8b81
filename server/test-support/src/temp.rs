//! A fresh folder per test, named after it, so parallel tests never share one.

use std::path::PathBuf;

use uuid::Uuid;

/// A new, empty folder under the system's temporary folder, named after `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("centaur-{name}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
