//! Ending a turn's processes (`centaur_runner::tree`) on real processes: a harness-like process
//! that lives across turns, commands it starts that ignore SIGTERM, one that escaped with
//! `setsid` and a double fork; and the reaper, which waits for orphans but never for a process
//! the runner waits for itself.
//!
//! The test process plays the runner (a subreaper). Every test here walks its descendants, so
//! they run one at a time.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use centaur_runner::tree::{self, Before, Lifetime};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A marker no other process on the machine has on its command line.
fn marker(n: u32) -> String {
    format!("{}{:02}", 60_000 + std::process::id() % 9_000 * 10, n)
}

/// The live processes whose command line holds `text` (a zombie's command line is empty).
fn running(text: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(text) && !cmdline.contains("/proc")
        })
        .collect()
}

async fn until_running(markers: &[String]) {
    let by = Instant::now() + Duration::from_secs(10);
    while markers
        .iter()
        .any(|m| running(&format!("sleep {m}")).is_empty())
    {
        assert!(Instant::now() < by, "the processes did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commands a turn might run: one ignoring SIGTERM in the background, one escaped with
/// `setsid` and a double fork (its parent exits at once), and one in the foreground that
/// ignores SIGTERM too.
fn stubborn_commands(m: &[String]) -> String {
    format!(
        "sh -c 'trap \"\" TERM; sleep {}' & setsid sh -c '(trap \"\" TERM; exec sleep {}) & exit 0' & sh -c 'trap \"\" TERM; sleep {}' &\n",
        m[0], m[1], m[2]
    )
}

#[tokio::test]
async fn ending_a_turn_ends_what_it_started_and_spares_the_harness() {
    let _one = ONE_AT_A_TIME.lock().await;
    tree::become_subreaper().unwrap();
    let m: Vec<String> = (0..4).map(marker).collect();

    // Left running by an earlier turn, before this one started: spared.
    let mut earlier = std::process::Command::new("setsid")
        .args(["sh", "-c", &format!("(exec sleep {}) & exit 0", m[3])])
        .spawn()
        .unwrap();
    let _earlier_owned = tree::own(Some(earlier.id()), Lifetime::Turn);
    earlier.wait().unwrap();
    until_running(&m[3..]).await;

    // A harness that serves every turn: a shell reading commands from stdin.
    let mut harness = tokio::process::Command::new("sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _owned = tree::own(harness.id(), Lifetime::Sandbox);
    let mut stdin = harness.stdin.take().unwrap();
    let mut stdout = BufReader::new(harness.stdout.take().unwrap()).lines();

    let before = Before::now();
    stdin
        .write_all(stubborn_commands(&m).as_bytes())
        .await
        .unwrap();
    until_running(&m[..3]).await;

    let started = Instant::now();
    let ended = tree::end_turn(&before).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    for marker in &m[..3] {
        assert!(
            running(&format!("sleep {marker}")).is_empty(),
            "sleep {marker} survived the end of the turn ({ended:?})"
        );
    }
    assert!(ended.signalled >= 3, "{ended:?}");
    assert_eq!(ended.left, 0);

    // The harness is alive and answers; what ran before the turn still runs.
    assert!(harness.try_wait().unwrap().is_none());
    stdin.write_all(b"echo alive\n").await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(5), stdout.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line.as_deref(), Some("alive"));
    assert_eq!(running(&format!("sleep {}", m[3])).len(), 1);

    // No zombie of the turn is left among this process's children.
    assert_eq!(zombie_children(), Vec::<u32>::new());

    // When the runner stops, everything goes.
    let ended = tree::end_all().await;
    assert!(ended.signalled >= 2, "{ended:?}");
    assert!(running(&format!("sleep {}", m[3])).is_empty());
    let status = tokio::time::timeout(Duration::from_secs(2), harness.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn what_an_earlier_process_starts_during_the_turn_is_spared() {
    let _one = ONE_AT_A_TIME.lock().await;
    tree::become_subreaper().unwrap();
    let m: Vec<String> = (30..34).map(marker).collect();
    let fork_now = std::env::temp_dir().join(format!("centaur-tree-fork-now-{}", m[0]));

    // Left running by an earlier turn, detached (handed to this process): a server that starts
    // a child (a backend, a worker) whenever `fork-now` appears, for as long as it says. Its
    // command line ends in `sleep <m[0]>` ($0 and $1 of the script) so it can be found.
    let script = format!(
        "while :; do if [ -e {f} ]; then n=$(cat {f}); rm -f {f}; sleep $n & fi; sleep 0.02; done",
        f = fork_now.display()
    );
    let mut earlier = std::process::Command::new("setsid")
        .args([
            "sh",
            "-c",
            &format!("(exec sh -c '{script}' sleep {}) & exit 0", m[0]),
        ])
        .spawn()
        .unwrap();
    let _earlier_owned = tree::own(Some(earlier.id()), Lifetime::Turn);
    let _left = EndOnDrop(m.clone());
    earlier.wait().unwrap();
    until_running(&m[..1]).await;

    // A harness that serves every turn: its new children still end with the turn.
    let mut harness = tokio::process::Command::new("sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _owned = tree::own(harness.id(), Lifetime::Sandbox);
    let mut stdin = harness.stdin.take().unwrap();

    let before = Before::now();
    // During the turn: the server starts a child, and the harness runs a command.
    std::fs::write(&fork_now, &m[1]).unwrap();
    stdin
        .write_all(format!("sleep {} &\n", m[2]).as_bytes())
        .await
        .unwrap();
    until_running(&m[..3]).await;

    let ended = tree::end_turn(&before).await;
    assert_eq!(ended.left, 0);
    assert!(running(&format!("sleep {}", m[2])).is_empty(), "{ended:?}");
    assert_eq!(running(&format!("sleep {}", m[0])).len(), 1, "{ended:?}");
    assert_eq!(running(&format!("sleep {}", m[1])).len(), 1, "{ended:?}");
    assert!(harness.try_wait().unwrap().is_none());

    // Ending the turn again (the runner does, once its harness has stopped) ends what started
    // after the first sweep, and still spares the rest.
    stdin
        .write_all(format!("sleep {} &\n", m[3]).as_bytes())
        .await
        .unwrap();
    until_running(&m[3..]).await;
    let ended = tree::end_turn(&before).await;
    assert_eq!(ended.left, 0);
    assert!(running(&format!("sleep {}", m[3])).is_empty(), "{ended:?}");
    assert_eq!(running(&format!("sleep {}", m[1])).len(), 1, "{ended:?}");

    tree::end_all().await;
    assert!(running(&format!("sleep {}", m[0])).is_empty());
    assert!(running(&format!("sleep {}", m[1])).is_empty());
    let _ = tokio::time::timeout(Duration::from_secs(2), harness.wait()).await;
}

#[tokio::test]
async fn a_turn_that_forks_while_it_is_ended_still_ends() {
    let _one = ONE_AT_A_TIME.lock().await;
    tree::become_subreaper().unwrap();
    let m = marker(10);
    let before = Before::now();
    // A loop that ignores SIGTERM and keeps starting detached processes.
    let mut bash = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' TERM; while :; do setsid sh -c 'trap \"\" TERM; exec sleep {m}' & sleep 0.01; done"
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let _owned = tree::own(bash.id(), Lifetime::Turn);
    until_running(std::slice::from_ref(&m)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let ended = tree::end_turn(&before).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ended.left, 0);
    assert!(running(&format!("sleep {m}")).is_empty());
    // bash is the runner's own child: it was killed, and is left for its owner to wait for.
    let status = tokio::time::timeout(Duration::from_secs(2), bash.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
}

#[tokio::test]
async fn the_reaper_waits_for_orphans_and_leaves_owned_children_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    tree::become_subreaper().unwrap();
    let m = marker(20);
    // An orphan handed to this process, which then ends: a zombie only the reaper waits for.
    let mut parent = std::process::Command::new("sh")
        .args(["-c", &format!("(exec sleep 0.{m}) & exit 0")])
        .spawn()
        .unwrap();
    let parent_owned = tree::own(Some(parent.id()), Lifetime::Turn);
    parent.wait().unwrap();
    drop(parent_owned);
    // An owned child that ends: its owner must still get its exit status.
    let mut owned = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let _owned = tree::own(Some(owned.id()), Lifetime::Turn);

    let by = Instant::now() + Duration::from_secs(10);
    loop {
        let zombies = zombie_children();
        if zombies.len() >= 2 {
            break;
        }
        assert!(Instant::now() < by, "no zombies: {zombies:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(tree::reap(), 1);
    assert_eq!(zombie_children(), vec![owned.id()]);
    assert_eq!(owned.wait().unwrap().code(), Some(7));
    assert_eq!(zombie_children(), Vec::<u32>::new());
}

/// Kills the processes running `sleep <marker>` when dropped, so a failed test leaves none
/// behind (the server above would hold the test's output open).
struct EndOnDrop(Vec<String>);

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        for marker in &self.0 {
            for pid in running(&format!("sleep {marker}")) {
                // SAFETY: plain signal delivery to a process found just now.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

/// This process's children that have ended and were not waited for.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id();
    let mut zombies: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let after = stat.rsplit(')').next().unwrap_or_default();
            let mut fields = after.split_whitespace();
            fields.next() == Some("Z") && fields.next() == Some(me.to_string().as_str())
        })
        .collect();
    zombies.sort_unstable();
    zombies
}
