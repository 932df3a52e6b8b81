//! Which host user a local sandbox runs as.
//!
//! Inside, the sandbox's user is always `sandbox` (uid 1000). Outside, bubblewrap's user
//! namespace maps it to the uid bubblewrap runs as:
//! - a server running as root starts bubblewrap as an unprivileged uid of the thread's own,
//!   taken from a range (`CENTAUR_SANDBOX_UID_BASE`, `CENTAUR_SANDBOX_UID_COUNT`), so files a
//!   sandbox makes belong to nobody real on the host, and one thread's processes and files are
//!   another uid than every other thread's;
//! - a server running as an ordinary user can only map its own uid.
//!
//! The uid of a thread is the owner of its workspace folder: the folder is the record. A new
//! workspace takes the next uid of the range (a counter kept in the data folder under a file
//! lock); a workspace left by an older server as root's is handed to a uid of its own.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The first uid of the default range for a data folder: 1,000,000,000 plus one of 1,000
/// blocks of 1,000,000, chosen by the folder's path, so two servers on one machine (a `centaur
/// dev` stack and a production one, or parallel tests) do not share uids, and with them process
/// limits.
pub fn default_base(data_dir: &Path) -> u32 {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(data_dir.as_os_str().as_bytes());
    let block = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 1_000;
    1_000_000_000 + block * 1_000_000
}

/// A host uid and gid (the same number) bubblewrap runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum HostUserError {
    #[error("the sandbox uid counter {path}: {source}")]
    Counter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("handing {path} to uid {uid}: {source}")]
    Chown {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the owner of the workspace {path}: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the sandbox uid range is empty (CENTAUR_SANDBOX_UID_COUNT is 0)")]
    EmptyRange,
}

/// Hands out host uids to threads' workspaces.
#[derive(Clone, Debug)]
pub enum HostUsers {
    /// Not root: every sandbox runs as the server's own user.
    ServerUser,
    /// Root: each workspace (so each thread) has its own uid from `base..base + count`.
    PerThread {
        base: u32,
        count: u32,
        counter: PathBuf,
    },
}

impl HostUsers {
    /// Per-thread uids when this process runs as root.
    pub fn for_this_process(data_dir: &Path, base: u32, count: u32) -> HostUsers {
        if super::local::is_root() {
            HostUsers::PerThread {
                base,
                count,
                counter: data_dir.join("sandbox-uids"),
            }
        } else {
            HostUsers::ServerUser
        }
    }

    /// Whether bubblewrap is started as another user than the server's.
    pub fn switches(&self) -> bool {
        matches!(self, HostUsers::PerThread { .. })
    }

    fn in_range(&self, uid: u32) -> bool {
        match self {
            HostUsers::ServerUser => false,
            HostUsers::PerThread { base, count, .. } => {
                uid >= *base && u64::from(uid) < u64::from(*base) + u64::from(*count)
            }
        }
    }

    /// The user for `workspace`, which exists: its owner when that is a sandbox uid already;
    /// otherwise (a new folder, or one from before per-thread uids) a new uid, which is given
    /// the folder and everything in it. `None` when sandboxes run as the server's user.
    pub fn for_workspace(&self, workspace: &Path) -> Result<Option<HostUser>, HostUserError> {
        if !self.switches() {
            return Ok(None);
        }
        let owner = std::fs::symlink_metadata(workspace)
            .map(|m| m.uid())
            .map_err(|source| HostUserError::Workspace {
                path: workspace.to_owned(),
                source,
            })?;
        if self.in_range(owner) {
            return Ok(Some(HostUser {
                uid: owner,
                gid: owner,
            }));
        }
        let user = self.allocate()?;
        chown_tree(workspace, user)?;
        Ok(Some(user))
    }

    /// The next uid of the range, wrapping around at its end.
    fn allocate(&self) -> Result<HostUser, HostUserError> {
        let HostUsers::PerThread {
            base,
            count,
            counter,
        } = self
        else {
            return Err(HostUserError::EmptyRange);
        };
        if *count == 0 {
            return Err(HostUserError::EmptyRange);
        }
        let failed = |source| HostUserError::Counter {
            path: counter.clone(),
            source,
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(counter)
            .map_err(failed)?;
        // Replicas sharing a data folder (and a restarted server) count on from one number.
        file.lock().map_err(failed)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(failed)?;
        let used: u64 = text.trim().parse().unwrap_or(0);
        let uid = base + (used % u64::from(*count)) as u32;
        file.seek(SeekFrom::Start(0)).map_err(failed)?;
        file.set_len(0).map_err(failed)?;
        write!(file, "{}", used + 1).map_err(failed)?;
        file.sync_data().map_err(failed)?;
        Ok(HostUser { uid, gid: uid })
    }
}

/// Gives `root` and everything below it to `user`, without following links.
fn chown_tree(root: &Path, user: HostUser) -> Result<(), HostUserError> {
    let failed = |path: &Path, source| HostUserError::Chown {
        path: path.to_owned(),
        uid: user.uid,
        source,
    };
    let mut pending = vec![root.to_owned()];
    while let Some(path) = pending.pop() {
        std::os::unix::fs::lchown(&path, Some(user.uid), Some(user.gid))
            .map_err(|e| failed(&path, e))?;
        let is_dir = std::fs::symlink_metadata(&path)
            .map_err(|e| failed(&path, e))?
            .is_dir();
        if is_dir {
            for entry in std::fs::read_dir(&path).map_err(|e| failed(&path, e))? {
                pending.push(entry.map_err(|e| failed(&path, e))?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_thread(dir: &Path) -> HostUsers {
        HostUsers::PerThread {
            base: 3_000_000_000,
            count: 2,
            counter: dir.join("sandbox-uids"),
        }
    }

    #[test]
    fn uids_are_handed_out_in_turn_and_wrap_within_the_range() {
        let dir = std::env::temp_dir().join(format!("host-users-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = per_thread(&dir);
        let uids: Vec<u32> = (0..3).map(|_| users.allocate().unwrap().uid).collect();
        assert_eq!(uids, [3_000_000_000, 3_000_000_001, 3_000_000_000]);
        assert!(users.in_range(3_000_000_001) && !users.in_range(3_000_000_002));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_ranges_depend_on_the_data_folder() {
        let a = default_base(Path::new("/var/lib/centaur"));
        let b = default_base(Path::new("/home/me/.local/share/centaur"));
        assert_ne!(a, b);
        for base in [a, b] {
            assert!((1_000_000_000..2_000_000_000).contains(&base));
            assert_eq!(base % 1_000_000, 0);
        }
        assert_eq!(a, default_base(Path::new("/var/lib/centaur")));
    }

    #[test]
    fn an_ordinary_user_maps_only_itself() {
        let users = HostUsers::ServerUser;
        assert!(!users.switches());
        assert_eq!(
            users.for_workspace(Path::new("/nonexistent")).unwrap(),
            None
        );
    }
}
