//! The processes a turn starts, and ending them.
//!
//! The runner is a child subreaper ([`become_subreaper`]): whatever the agent starts, however
//! it detaches (`setsid`, a double fork, `nohup … &`), stays a descendant of the runner, because
//! an orphan is handed to its nearest subreaper ancestor rather than to the sandbox's init. So
//! "every process a turn started" is a walk of `/proc` down the parent links from the runner.
//!
//! - [`own`] registers a process the runner spawned and waits for itself (a
//!   `tokio::process::Child`), with its [`Lifetime`]: a `Sandbox` process (`codex app-server`,
//!   `claude`) survives the end of a turn, its descendants do not; a `Turn` process (the shell
//!   harness's `bash`) ends with the turn. The reaper never waits for a registered process.
//! - [`Before::now`] notes the processes alive when a turn starts; [`end_turn`] ends every
//!   descendant of the runner but them, their descendants, and registered `Sandbox`
//!   processes (whose descendants started during the turn do go: that is how a harness's
//!   commands end): SIGTERM, a short grace, then SIGKILL, walking again until none is left (a
//!   process may fork during the walk). A turn that ends normally ends nothing:
//!   what it left running (a server the agent started on purpose) stays, and a later turn's
//!   early end spares it and whatever it starts meanwhile (a database's backend for a new
//!   connection, a server's new worker). The subtree is followed through the parent links at
//!   the time of the walk: a process such a server starts and detaches (its parent exits, so
//!   it is handed to the runner) is no longer under it, and ends with the turn.
//! - [`reap`] waits for the zombies among the runner's children that nobody else waits for
//!   (orphans handed to it); [`reap_on_sigchld`] does it whenever a child ends.
//! - [`end_all`] ends every descendant, registered or not, when the runner stops.

use std::collections::{HashMap, HashSet};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long processes get to end after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_millis(200);
/// How long ending a turn keeps walking and killing: well under a second, even when a process
/// keeps forking.
const GIVE_UP_AFTER: Duration = Duration::from_millis(800);
/// The pause between two walks.
const POLL: Duration = Duration::from_millis(5);

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

/// Registers a process the runner just spawned (`child.id()`), with its lifetime. Call it right
/// after the spawn, with no `.await` in between: the runner's runtime has one thread, so the
/// reaper cannot run between the two and wait for the process in its owner's place.
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

fn registered() -> HashMap<u32, Lifetime> {
    OWNED
        .lock()
        .expect("process registry")
        .clone()
        .unwrap_or_default()
}

/// Makes this process the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`), so a
/// process that detaches from its parent stays in the runner's tree.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Clone, Copy, Debug)]
struct Proc {
    pid: u32,
    parent: u32,
    /// When it started (clock ticks after boot): with the pid, it names one process even after
    /// the pid is reused.
    started: u64,
    /// Ended, not yet waited for (`Z`), or dead (`X`).
    dead: bool,
}

fn stat(pid: u32) -> Option<Proc> {
    parse_stat(
        pid,
        &std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?,
    )
}

fn parse_stat(pid: u32, stat: &str) -> Option<Proc> {
    // The command name (field 2) is in parentheses and may hold anything, `) Z 1 (` too: a
    // process must not be able to name itself out of the walk.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    // Field 22; the state was field 3, the parent field 4.
    let started = fields.nth(17)?.parse().ok()?;
    Some(Proc {
        pid,
        parent,
        started,
        dead: matches!(state, "Z" | "X" | "x"),
    })
}

/// Every process this process's `/proc` shows.
fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .collect()
}

/// This process's children, from `/proc/self/task/*/children` (cheap on a host with many
/// processes); `None` where the kernel does not offer that file.
fn children() -> Option<Vec<Proc>> {
    let mut children = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let listed = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            listed
                .split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok())
                .filter_map(stat),
        );
    }
    Some(children)
}

/// The descendants of this process, parents before their children.
fn descendants(all: &[Proc]) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for p in all {
        children.entry(p.parent).or_default().push(*p);
    }
    let mut found = Vec::new();
    // The reads are not one snapshot, so they could show a cycle: never walk a process twice.
    let mut seen = HashSet::from([std::process::id()]);
    let mut next = vec![std::process::id()];
    while let Some(pid) = next.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            if seen.insert(child.pid) {
                found.push(*child);
                next.push(child.pid);
            }
        }
    }
    found
}

/// The processes alive when a turn started: ending the turn early spares them and what they
/// start (they were left by earlier turns, or belong to the sandbox).
#[derive(Clone, Debug, Default)]
pub struct Before {
    alive: HashSet<(u32, u64)>,
}

impl Before {
    /// The runner's descendants now.
    pub fn now() -> Before {
        Before {
            alive: descendants(&processes())
                .into_iter()
                .filter(|p| !p.dead)
                .map(|p| (p.pid, p.started))
                .collect(),
        }
    }

    /// Nothing spared: every descendant goes (the runner is stopping).
    pub fn nothing() -> Before {
        Before::default()
    }
}

/// Who goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sparing {
    /// Registered `Sandbox` processes and what ran before the turn.
    SandboxAndBefore,
    /// No one.
    No,
}

/// The descendants that must end and are still alive.
fn doomed(before: &Before, sparing: Sparing) -> Vec<Proc> {
    let all = descendants(&processes());
    if sparing == Sparing::No {
        return all.into_iter().filter(|p| !p.dead).collect();
    }
    let owned = registered();
    // Parents come before their children: pid → (its start, whether its subtree is spared).
    let mut walked: HashMap<u32, (u64, bool)> = HashMap::new();
    let mut doomed = Vec::new();
    for p in all {
        let sandbox = owned.get(&p.pid) == Some(&Lifetime::Sandbox);
        // A child cannot have started before its parent: if it seems to, the parent's pid was
        // reused between the two reads, and the link says nothing.
        let under_spared = walked
            .get(&p.parent)
            .is_some_and(|&(started, spared)| spared && p.started >= started);
        let subtree_spared =
            under_spared || (!sandbox && before.alive.contains(&(p.pid, p.started)));
        walked.insert(p.pid, (p.started, subtree_spared));
        if !p.dead && !sandbox && !subtree_spared {
            doomed.push(p);
        }
    }
    doomed
}

/// Sends `signal` to `p`, and only to it: through a pidfd taken while the process still has
/// `p`'s start time, so a pid reused in the meantime is never signalled.
fn signal(p: &Proc, signal: libc::c_int) {
    // SAFETY: pidfd_open takes a pid and flags, and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid as libc::pid_t, 0) };
    if fd < 0 {
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS)
            && stat(p.pid).is_some_and(|now| now.started == p.started)
        {
            // A kernel before 5.3: the plain call, checked just before.
            // SAFETY: plain signal delivery.
            unsafe { libc::kill(p.pid as libc::pid_t, signal) };
        }
        return;
    }
    // SAFETY: pidfd_open just returned this descriptor, which nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
    if stat(p.pid).is_none_or(|now| now.started != p.started) {
        return;
    }
    // SAFETY: pidfd_send_signal takes the descriptor, a signal, no siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// What ending a turn did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ended {
    /// Processes signalled.
    pub signalled: usize,
    /// Processes still alive when it gave up (0 unless one is stuck in the kernel).
    pub left: usize,
}

/// Ends every process started since `before`, but the descendants of the processes in
/// `before` and registered `Sandbox` processes (their new descendants end too), within a
/// second: SIGTERM, up to [`TERM_GRACE`] for them to go, then SIGKILL, walking again until
/// none is left. Reaps the orphans among them. Calling it again with the same `before` ends
/// what started since the last call, and spares the same.
pub async fn end_turn(before: &Before) -> Ended {
    end(before, Sparing::SandboxAndBefore).await
}

/// Ends every descendant of the runner, registered or not (the runner is stopping).
pub async fn end_all() -> Ended {
    end(&Before::nothing(), Sparing::No).await
}

async fn end(before: &Before, sparing: Sparing) -> Ended {
    terminate(|| doomed(before, sparing), "processes of the turn").await
}

/// Ends what `doomed` finds, walking again until it finds nothing: SIGTERM, up to
/// [`TERM_GRACE`] for them to go, then SIGKILL, giving up after [`GIVE_UP_AFTER`] (`what` names
/// them in the warning). Reaps the orphans among them.
async fn terminate(doomed: impl Fn() -> Vec<Proc>, what: &str) -> Ended {
    let started = Instant::now();
    let mut ended = Ended::default();
    let mut signalled: HashSet<(u32, u64)> = HashSet::new();
    for p in &doomed() {
        signal(p, libc::SIGTERM);
        signalled.insert((p.pid, p.started));
    }
    loop {
        reap();
        let left = doomed();
        if left.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= started + GIVE_UP_AFTER {
            ended.left = left.len();
            tracing::warn!(left = left.len(), "{what} are still alive after SIGKILL");
            break;
        }
        if now >= started + TERM_GRACE {
            for p in &left {
                signal(p, libc::SIGKILL);
                signalled.insert((p.pid, p.started));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    reap();
    ended.signalled = signalled.len();
    ended
}

/// One process and everything it started, followed while it winds down (a harness's CLI that
/// is started again): its descendants are noted while it lives ([`Subtree::note`]), so they
/// still end with it once it exits and they are handed to the runner (or, outside a sandbox,
/// to init), out of its subtree.
#[derive(Debug)]
pub struct Subtree {
    root: Proc,
    /// The root and the descendants noted so far: (pid, start).
    members: HashSet<(u32, u64)>,
}

impl Subtree {
    /// The subtree of the process `pid` as it is now; `None` if it is gone.
    pub fn of(pid: u32) -> Option<Subtree> {
        let root = stat(pid)?;
        let mut subtree = Subtree {
            root,
            members: HashSet::from([(root.pid, root.started)]),
        };
        subtree.note();
        Some(subtree)
    }

    /// Notes the root's descendants now (while it lives, they are found through it).
    pub fn note(&mut self) {
        let found = under(
            &processes(),
            &HashSet::from([(self.root.pid, self.root.started)]),
        );
        self.members
            .extend(found.iter().map(|p| (p.pid, p.started)));
    }

    /// The noted processes and their descendants that are still alive.
    fn alive(&self) -> Vec<Proc> {
        under(&processes(), &self.members)
            .into_iter()
            .filter(|p| !p.dead)
            .collect()
    }

    /// Ends the root and everything noted under it, with what they started since: SIGTERM, up
    /// to [`TERM_GRACE`] for them to go, then SIGKILL, walking again until none is left (or
    /// [`GIVE_UP_AFTER`]). Reaps the orphans among them.
    pub async fn end(&self) -> Ended {
        terminate(|| self.alive(), "processes of a stopped CLI").await
    }
}

/// The processes of `all` that are `roots` (by pid and start), and their descendants, parents
/// before their children.
fn under(all: &[Proc], roots: &HashSet<(u32, u64)>) -> Vec<Proc> {
    let mut children: HashMap<u32, Vec<Proc>> = HashMap::new();
    for p in all {
        children.entry(p.parent).or_default().push(*p);
    }
    let mut found: Vec<Proc> = all
        .iter()
        .filter(|p| roots.contains(&(p.pid, p.started)))
        .copied()
        .collect();
    let mut seen: HashSet<u32> = found.iter().map(|p| p.pid).collect();
    let mut next = found.clone();
    while let Some(parent) = next.pop() {
        for child in children.get(&parent.pid).into_iter().flatten() {
            // A child cannot have started before its parent: the pid was reused.
            if child.started >= parent.started && seen.insert(child.pid) {
                found.push(*child);
                next.push(*child);
            }
        }
    }
    found
}

/// Waits for the zombies among this process's children that no owner waits for (orphans
/// handed to the runner); returns how many.
pub fn reap() -> usize {
    let me = std::process::id();
    let owned = registered();
    let mut reaped = 0;
    for p in children().unwrap_or_else(processes) {
        if p.parent != me || !p.dead || owned.contains_key(&p.pid) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waits for one child that has ended, without blocking.
        if unsafe { libc::waitpid(p.pid as libc::pid_t, &mut status, libc::WNOHANG) }
            == p.pid as libc::pid_t
        {
            reaped += 1;
        }
    }
    reaped
}

/// Reaps orphans whenever a child ends, for as long as the runner runs.
pub async fn reap_on_sigchld() {
    let mut child = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!(%error, "no SIGCHLD handler: orphans are reaped only after a turn ends early");
            return;
        }
    };
    while child.recv().await.is_some() {
        reap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_cannot_fake_the_fields_after_it() {
        let stat =
            "4242 (evil) Z 1 (x) S 77 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 123456 0 0";
        let p = parse_stat(4242, stat).unwrap();
        assert_eq!((p.parent, p.started, p.dead), (77, 123456, false));
        assert!(parse_stat(1, "1 (truncated").is_none());
    }

    #[test]
    fn this_process_reads_as_alive_with_its_parent() {
        let me = stat(std::process::id()).unwrap();
        assert!(!me.dead);
        // SAFETY: getppid has no arguments and cannot fail.
        assert_eq!(me.parent, unsafe { libc::getppid() } as u32);
    }
}
