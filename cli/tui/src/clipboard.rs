//! Copying text out of the terminal. OSC 52 asks the terminal to put the text on the
//! clipboard (over SSH too), but many terminals ignore it or cap its size, so the text is also
//! written to a file in a directory only the person can use: `$XDG_RUNTIME_DIR/centaur`, else
//! `<temp>/centaur-<uid>`, created if missing and refused when it is a link, another user's, or
//! open to others (in a shared temp directory anyone can plant a name first). The last
//! [`KEEP_COPIES`] copies are kept there; the runtime tells the app where the text went.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Text longer than this (in bytes) goes to the file only: terminals cap OSC 52 around here
/// and a longer sequence can stall or garble one that does not.
pub const TERMINAL_LIMIT: usize = 100 * 1024;

/// How many copies the directory keeps; older ones are deleted.
pub const KEEP_COPIES: usize = 5;

/// The copies' names: `centaur-copy-<hash of the text>.txt`.
const PREFIX: &str = "centaur-copy-";
const SUFFIX: &str = ".txt";

/// Why the copy's file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ClipboardError {
    #[error("cannot create {path}: {source}")]
    CreateDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot check {path}: {source}")]
    CheckDirectory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not private ({problem}): remove it, or set XDG_RUNTIME_DIR")]
    UnsafeDirectory { path: PathBuf, problem: Unsafe },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a directory the copies would go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsafe {
    #[error("it is a symbolic link")]
    Symlink,
    #[error("it is not a directory")]
    NotADirectory,
    #[error("it belongs to user {0}")]
    ForeignOwner(u32),
    #[error("its mode is {0:o}, not 700")]
    OpenToOthers(u32),
}

/// Puts `text` on the person's clipboard through the terminal, when it is short enough, and
/// in a file in [`copy_directory`]; the file's path, or why there is none.
pub fn copy(text: &str) -> Result<PathBuf, ClipboardError> {
    if let Some(sequence) = osc52(text) {
        // ratatui draws on stdout: the sequence goes the same way, between frames.
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(sequence.as_bytes());
        let _ = stdout.flush();
    }
    save(&copy_directory(), text)
}

/// Whether `text` is short enough for the terminal's clipboard.
pub fn fits_terminal(text: &str) -> bool {
    text.len() <= TERMINAL_LIMIT
}

/// The OSC 52 sequence that sets the clipboard to `text`; `None` when it is too long.
pub fn osc52(text: &str) -> Option<String> {
    fits_terminal(text).then(|| format!("\x1b]52;c;{}\x07", STANDARD.encode(text)))
}

/// The directory copies go to: `$XDG_RUNTIME_DIR/centaur`, else `<temp>/centaur-<uid>`.
pub fn copy_directory() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
    {
        Some(runtime) => runtime.join("centaur"),
        None => std::env::temp_dir().join(format!("centaur-{}", user_id())),
    }
}

/// Writes `text` to a file in `directory` (made private first, see [`private_directory`]),
/// deletes the copies beyond the last [`KEEP_COPIES`], and says where it went.
pub fn save(directory: &Path, text: &str) -> Result<PathBuf, ClipboardError> {
    private_directory(directory)?;
    let path = directory.join(format!("{PREFIX}{:016x}{SUFFIX}", fnv1a(text.as_bytes())));
    write_file(&path, text)?;
    prune(directory, &path);
    Ok(path)
}

/// Makes sure `path` is a directory only this user can use: created (mode 700) when missing;
/// otherwise it must be a real directory (not a link), ours, with mode 700.
pub fn private_directory(path: &Path) -> Result<(), ClipboardError> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    match builder.create(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(ClipboardError::CreateDirectory {
                path: path.to_owned(),
                source,
            });
        }
    }
    let metadata =
        std::fs::symlink_metadata(path).map_err(|source| ClipboardError::CheckDirectory {
            path: path.to_owned(),
            source,
        })?;
    let refuse = |problem| {
        Err(ClipboardError::UnsafeDirectory {
            path: path.to_owned(),
            problem,
        })
    };
    if metadata.file_type().is_symlink() {
        return refuse(Unsafe::Symlink);
    }
    if !metadata.is_dir() {
        return refuse(Unsafe::NotADirectory);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if metadata.uid() != user_id() {
            return refuse(Unsafe::ForeignOwner(metadata.uid()));
        }
        let mode = metadata.mode() & 0o777;
        if mode != 0o700 {
            return refuse(Unsafe::OpenToOthers(mode));
        }
    }
    Ok(())
}

/// The user this process runs as.
#[cfg(unix)]
fn user_id() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(not(unix))]
fn user_id() -> u32 {
    0
}

/// Writes `text` to `path`, readable by the person only: to a new file beside it first, then
/// renamed over it, so a reader never sees half a copy.
fn write_file(path: &Path, text: &str) -> Result<(), ClipboardError> {
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
    if let Err(source) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(ClipboardError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// Deletes the copies in `directory` beyond the newest [`KEEP_COPIES`] (`latest` among them).
fn prune(directory: &Path, latest: &Path) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    let mut copies: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(PREFIX) && name.ends_with(SUFFIX)
        })
        .filter(|entry| entry.path() != latest)
        .filter_map(|entry| {
            let modified = entry.metadata().ok()?.modified().ok()?;
            Some((modified, entry.path()))
        })
        .collect();
    copies.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, old) in copies.into_iter().skip(KEEP_COPIES - 1) {
        let _ = std::fs::remove_file(old);
    }
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
    use std::os::unix::fs::PermissionsExt;

    /// A fresh directory for one test, removed with its contents at the end.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir()
                .join(format!("centaur-clipboard-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    fn problem(result: Result<(), ClipboardError>) -> Unsafe {
        match result {
            Err(ClipboardError::UnsafeDirectory { problem, .. }) => problem,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn osc52_carries_the_text_in_base64_up_to_the_limit() {
        assert_eq!(osc52("hi ✓").unwrap(), "\x1b]52;c;aGkg4pyT\x07");
        assert!(osc52(&"x".repeat(TERMINAL_LIMIT)).is_some());
        assert_eq!(osc52(&"x".repeat(TERMINAL_LIMIT + 1)), None);
    }

    /// A missing directory is created for the person only, and the copy in it is theirs too.
    #[test]
    fn the_copy_goes_to_a_private_directory_made_for_it() {
        let scratch = Scratch::new("made");
        let directory = scratch.0.join("centaur");
        let path = save(&directory, "$ ls\nREADME.md").unwrap();
        assert_eq!(path.parent(), Some(directory.as_path()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "$ ls\nREADME.md");
        assert_eq!(mode(&directory), 0o700);
        assert_eq!(mode(&path), 0o600);
        // The same text again replaces its copy.
        assert_eq!(save(&directory, "$ ls\nREADME.md").unwrap(), path);
    }

    /// A link (to a private directory, even), a directory others can use, a file, or another
    /// user's directory is refused, and nothing is written there.
    #[test]
    fn a_directory_that_is_not_private_is_refused() {
        let scratch = Scratch::new("refused");
        let real = scratch.0.join("real");
        private_directory(&real).unwrap();

        let link = scratch.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(problem(private_directory(&link)), Unsafe::Symlink);
        assert!(save(&link, "secret").is_err());
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);

        let open = scratch.0.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(
            problem(private_directory(&open)),
            Unsafe::OpenToOthers(0o777)
        );
        assert!(save(&open, "secret").is_err());
        assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0);

        let file = scratch.0.join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(problem(private_directory(&file)), Unsafe::NotADirectory);

        // Another user's directory (root can make one to test with).
        if user_id() == 0 {
            let foreign = scratch.0.join("foreign");
            private_directory(&foreign).unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            assert_eq!(
                problem(private_directory(&foreign)),
                Unsafe::ForeignOwner(65534)
            );
        }
        let message = save(&link, "secret").unwrap_err().to_string();
        assert!(
            message.contains("is not private (it is a symbolic link)"),
            "{message}"
        );
    }

    /// Only the last few copies are kept.
    #[test]
    fn older_copies_are_deleted() {
        let scratch = Scratch::new("kept");
        let directory = scratch.0.join("centaur");
        let mut paths = Vec::new();
        for n in 0..KEEP_COPIES + 3 {
            paths.push(save(&directory, &format!("copy {n}")).unwrap());
            // Modification times must differ for "newest" to mean something.
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let left: Vec<PathBuf> = std::fs::read_dir(&directory)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left.len(), KEEP_COPIES, "{left:?}");
        for path in &paths[paths.len() - KEEP_COPIES..] {
            assert!(left.contains(path), "{path:?} kept");
        }
    }

    #[test]
    fn the_directory_is_per_user() {
        let directory = copy_directory();
        let name = directory
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name == "centaur" || name == format!("centaur-{}", user_id()),
            "{name}"
        );
    }
}
