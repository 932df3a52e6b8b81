//! The processes a turn starts, and ending them.
//!
//! (Skeleton: the lead wrote the registry's API so harness adapters can register their
//! processes; the kill and the reaper are being built.)

use std::collections::HashMap;
use std::sync::Mutex;

/// How long a registered process is meant to live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// It serves the sandbox across turns (`codex app-server`, `claude`): ending a turn
    /// leaves it running, and ends only what it started.
    Sandbox,
    /// It belongs to one turn (the shell harness's `bash`): ending the turn kills it.
    Turn,
}

static OWNED: Mutex<Option<HashMap<u32, Lifetime>>> = Mutex::new(None);

/// A process the runner started and waits for itself (a `tokio::process::Child`): the reaper
/// leaves it to its owner. Dropping the guard forgets it.
#[derive(Debug)]
pub struct Owned {
    pid: Option<u32>,
}

/// Registers a process the runner just spawned (`child.id()`), with its lifetime.
pub fn own(pid: Option<u32>, lifetime: Lifetime) -> Owned {
    if let Some(pid) = pid {
        OWNED
            .lock()
            .expect("process registry")
            .get_or_insert_with(HashMap::new)
            .insert(pid, lifetime);
    }
    Owned { pid }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let (Some(pid), Ok(mut owned)) = (self.pid, OWNED.lock())
            && let Some(owned) = owned.as_mut()
        {
            owned.remove(&pid);
        }
    }
}
