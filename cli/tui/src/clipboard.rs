//! Copying text out of the terminal. OSC 52 asks the terminal to put the text on the
//! clipboard (over SSH too), but many terminals ignore it or cap its size, so the text is also
//! written to a file whose path the reader tells (`$XDG_RUNTIME_DIR`, else the temp directory;
//! readable by the person only). The file's name comes from the text, so the reader can tell
//! the path before the runtime writes it.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Text longer than this (in bytes) goes to the file only: terminals cap OSC 52 around here
/// and a longer sequence can stall or garble one that does not.
pub const TERMINAL_LIMIT: usize = 100 * 1024;

/// Why the copy's file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ClipboardError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Puts `text` on the person's clipboard through the terminal, when it is short enough, and in
/// [`file_for`]`(text)`. The reader has already said where it went; a failure leaves the file
/// missing, which the path it told shows.
pub fn copy(text: &str) {
    if let Some(sequence) = osc52(text) {
        // ratatui draws on stdout: the sequence goes the same way, between frames.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(sequence.as_bytes());
        let _ = stdout.flush();
    }
    let _ = write_file(&file_for(text), text);
}

/// Whether `text` is short enough for the terminal's clipboard.
pub fn fits_terminal(text: &str) -> bool {
    text.len() <= TERMINAL_LIMIT
}

/// The OSC 52 sequence that sets the clipboard to `text`; `None` when it is too long.
pub fn osc52(text: &str) -> Option<String> {
    fits_terminal(text).then(|| format!("\x1b]52;c;{}\x07", STANDARD.encode(text)))
}

/// The file a copy of `text` is written to.
pub fn file_for(text: &str) -> PathBuf {
    let directory = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .unwrap_or_else(std::env::temp_dir);
    directory.join(format!("centaur-copy-{:016x}.txt", fnv1a(text.as_bytes())))
}

/// Writes `text` to `path`, readable by the person only: to a new file beside it first, then
/// renamed over it, so a file or link planted at `path` in a shared directory is never written
/// through.
pub fn write_file(path: &Path, text: &str) -> Result<(), ClipboardError> {
    let failed = |source| ClipboardError::Write {
        path: path.to_owned(),
        source,
    };
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&staging)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&staging, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(failed(error));
    }
    Ok(())
}

/// FNV-1a: a stable name for a text (not a digest anyone relies on).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn osc52_carries_the_text_in_base64_up_to_the_limit() {
        assert_eq!(osc52("hi ✓").unwrap(), "\x1b]52;c;aGkg4pyT\x07");
        assert!(osc52(&"x".repeat(TERMINAL_LIMIT)).is_some());
        assert_eq!(osc52(&"x".repeat(TERMINAL_LIMIT + 1)), None);
    }

    /// The copy's file holds the text, is the person's only, and replaces an older one.
    #[test]
    fn the_file_is_private_and_holds_the_text() {
        let dir = std::env::temp_dir().join(format!("centaur-clipboard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("copy.txt");
        std::fs::write(&path, "older").unwrap();
        write_file(&path, "$ ls\nREADME.md").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "$ ls\nREADME.md");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_file_name_follows_the_text() {
        assert_eq!(file_for("a"), file_for("a"));
        assert_ne!(file_for("a"), file_for("b"));
        let name = file_for("a")
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("centaur-copy-") && name.ends_with(".txt"),
            "{name}"
        );
    }
}
