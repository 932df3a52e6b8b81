//! Settings files the server re-reads when they change (Codex's `config.toml`, the default
//! egress policy), so a new model endpoint reaches the next sandbox without a restart.
//!
//! Each use costs one `stat`; the file is read again only when its modification time, size or
//! inode changed (an editor's or `centaur dev keys`' atomic rename gives a new inode). A new
//! content that cannot be read or parsed is logged once and the last good one stays in force.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// What tells one version of a file from the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }
}

/// How a file becomes its value.
pub type Load<T, E> = fn(&Path) -> Result<T, E>;

/// A value read from a file, read again when the file changes.
pub struct Reloading<T, E> {
    source: Option<(PathBuf, Load<T, E>)>,
    cached: Mutex<Cached<T>>,
}

struct Cached<T> {
    /// The version last looked at (read, or found unreadable); `None` when the file was gone.
    stamp: Option<Stamp>,
    value: T,
}

impl<T: Clone, E: std::fmt::Display> Reloading<T, E> {
    /// Reads `path` with `load` now: a file that cannot be read at start-up is an error.
    pub fn open(path: &Path, load: Load<T, E>) -> Result<Self, E> {
        let stamp = Stamp::of(path);
        let value = load(path)?;
        Ok(Reloading {
            source: Some((path.to_owned(), load)),
            cached: Mutex::new(Cached { stamp, value }),
        })
    }

    /// A value that comes from no file and never changes.
    pub fn fixed(value: T) -> Self {
        Reloading {
            source: None,
            cached: Mutex::new(Cached { stamp: None, value }),
        }
    }

    /// The file's current value: read again if it changed since it was last looked at.
    pub fn current(&self) -> T {
        let mut cached = self
            .cached
            .lock()
            .expect("the reloading lock is never poisoned");
        let Some((path, load)) = &self.source else {
            return cached.value.clone();
        };
        let stamp = Stamp::of(path);
        if stamp != cached.stamp {
            cached.stamp = stamp;
            match load(path) {
                Ok(value) => {
                    tracing::info!(path = %path.display(), "settings file changed; the next sandbox uses it");
                    cached.value = value;
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "settings file changed but cannot be used; keeping its last good content");
                }
            }
        }
        cached.value.clone()
    }
}

/// Codex's `config.toml` for sandboxes (`CENTAUR_CODEX_CONFIG`), as text.
pub type CodexConfig = Reloading<std::sync::Arc<str>, CodexConfigError>;

/// Why Codex's `config.toml` cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read CENTAUR_CODEX_CONFIG {}: {source}", path.display())]
pub struct CodexConfigError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads Codex's `config.toml`.
pub fn read_codex_config(path: &Path) -> Result<std::sync::Arc<str>, CodexConfigError> {
    std::fs::read_to_string(path)
        .map(std::sync::Arc::from)
        .map_err(|source| CodexConfigError {
            path: path.to_owned(),
            source,
        })
}

/// Harness settings from `CENTAUR_HARNESS_ENV_FILE`, as `(KEY, VALUE)` pairs in file order.
pub type HarnessEnvFile = Reloading<std::sync::Arc<[(String, String)]>, HarnessEnvError>;

/// Why the harness settings file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HarnessEnvError {
    #[error("cannot read CENTAUR_HARNESS_ENV_FILE {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CENTAUR_HARNESS_ENV_FILE {} line {line}: {source}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        #[source]
        source: crate::config::KeyValueError,
    },
}

/// Reads the harness settings file: `KEY=VALUE` lines; blank lines and `#` comments ignored.
pub fn read_harness_env(
    path: &Path,
) -> Result<std::sync::Arc<[(String, String)]>, HarnessEnvError> {
    let text = std::fs::read_to_string(path).map_err(|source| HarnessEnvError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(line, text)| {
            crate::config::parse_key_value(text).map_err(|source| HarnessEnvError::Line {
                path: path.to_owned(),
                line,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewritten file is read again; one that becomes unreadable leaves the last good
    /// content in force; an unchanged one is not read again.
    #[test]
    fn a_changed_file_is_read_again_and_a_broken_one_keeps_the_last_good_content() {
        let dir = std::env::temp_dir().join(format!("centaur-reloading-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("number");
        std::fs::write(&path, "1").unwrap();
        let parse = |path: &Path| -> Result<u32, String> {
            std::fs::read_to_string(path)
                .map_err(|e| e.to_string())?
                .trim()
                .parse()
                .map_err(|e: std::num::ParseIntError| e.to_string())
        };
        let number = Reloading::open(&path, parse).unwrap();
        assert_eq!(number.current(), 1);

        // Replaced by rename, as `centaur dev keys` does: a new inode.
        std::fs::write(dir.join("next"), "22").unwrap();
        std::fs::rename(dir.join("next"), &path).unwrap();
        assert_eq!(number.current(), 22);

        std::fs::write(&path, "not a number").unwrap();
        assert_eq!(number.current(), 22);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(number.current(), 22);
        std::fs::write(&path, "333").unwrap();
        assert_eq!(number.current(), 333);

        assert!(Reloading::open(&dir.join("missing"), parse).is_err());
        assert_eq!(Reloading::<u32, String>::fixed(7).current(), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Settings lines become pairs in order; comments and blank lines are skipped; a line that
    /// is not KEY=VALUE names its number.
    #[test]
    fn the_harness_settings_file_is_key_value_lines() {
        let dir = std::env::temp_dir().join(format!("centaur-harness-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("harness.env");
        std::fs::write(
            &path,
            "# Claude Code\n\nANTHROPIC_BASE_URL=http://127.0.0.1:9/x=y\n  CENTAUR_CLAUDE_BIN=claude  \n",
        )
        .unwrap();
        let pairs = read_harness_env(&path).unwrap();
        assert_eq!(
            &pairs[..],
            [
                (
                    "ANTHROPIC_BASE_URL".to_owned(),
                    "http://127.0.0.1:9/x=y".to_owned()
                ),
                ("CENTAUR_CLAUDE_BIN".to_owned(), "claude".to_owned())
            ]
        );
        std::fs::write(&path, "A=1\nnot a setting\n").unwrap();
        let error = read_harness_env(&path).unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
