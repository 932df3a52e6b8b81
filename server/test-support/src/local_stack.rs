//! The local backend under test: a server whose sandboxes are real bubblewrap sandboxes
//! running the real runner, behind a [`TestProxy`]; and ending a test's sandboxes, which a
//! server dropped without a graceful shutdown leaves running.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use crate::binaries::runner_binary;
use crate::pg::fresh_database;
use crate::proxy::{PROXY_TOKEN, TestProxy};
use crate::server::TestServer;
use crate::temp::temp_dir;

/// A server with the local backend, a proxy whose policy lets sandboxes reach `allow`.
pub struct LocalStack {
    pub server: TestServer,
    pub proxy: TestProxy,
    pub dir: PathBuf,
}

impl LocalStack {
    pub async fn start(name: &str, warm: usize, policy: Value) -> LocalStack {
        LocalStack::start_with(name, warm, policy, |_, _| {}).await
    }

    /// Like `start`, with a last word on the configuration (given the test's folder).
    pub async fn start_with(
        name: &str,
        warm: usize,
        policy: Value,
        tweak: impl FnOnce(&mut centaur_server::Config, &Path),
    ) -> LocalStack {
        let dir = temp_dir(name);
        let proxy = TestProxy::start(None, dir.join("proxy")).await;
        std::fs::write(dir.join("policy.json"), policy.to_string()).unwrap();
        let mut config = centaur_server::Config::new(fresh_database().await);
        config.sandbox_backend = centaur_server::config::BackendKind::Local;
        config.data_dir = dir.join("data");
        config.runner_bin = Some(runner_binary());
        config.proxy_token = Some(PROXY_TOKEN.into());
        config.proxy_control_url = Some(format!("http://{}", proxy.addr));
        config.egress_policy = Some(dir.join("policy.json"));
        config.warm_pool = warm;
        config.warm_harnesses = vec![
            centaur_protocol::Harness::Echo,
            centaur_protocol::Harness::Shell,
        ];
        config.reaper_ms = 200;
        tweak(&mut config, &dir);
        let server = TestServer::start_configured(config).await;
        proxy.deliver_audit_to(&server.url);
        LocalStack { server, proxy, dir }
    }

    /// Runs `message` as one turn on `thread_key`; returns the terminal event.
    pub async fn turn(&self, thread_key: &str, harness: &str, message: &str) -> Value {
        let accepted = self
            .server
            .post(
                "/agent/execute",
                json!({"thread_key": thread_key, "harness": harness, "message": message}),
            )
            .await;
        let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
        self.terminal(thread_key, &execution_id).await
    }

    pub async fn terminal(&self, thread_key: &str, execution_id: &str) -> Value {
        let mut stream = self
            .server
            .events(
                thread_key,
                &format!("execution_id={execution_id}&close_on_terminal=true"),
            )
            .await;
        let frames = stream.read_to_end(Duration::from_secs(60)).await;
        let last = frames.last().expect("a terminal event");
        last.data.clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The workspace of the stack's only thread.
    pub fn only_workspace(&self) -> PathBuf {
        let mut workspaces: Vec<PathBuf> = std::fs::read_dir(self.data_dir().join("workspaces"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(workspaces.len(), 1, "{workspaces:?}");
        workspaces.pop().unwrap()
    }

    /// Reads the thread's stream after `after` until `pred` matches an event; returns every
    /// event seen.
    pub async fn until(&self, key: &str, after: i64, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut stream = self
            .server
            .events(key, &format!("after_event_id={after}"))
            .await;
        let mut seen = Vec::new();
        loop {
            let frame = stream
                .next(Duration::from_secs(90))
                .await
                .unwrap_or_else(|| panic!("no matching event; saw {seen:#?}"));
            let done = pred(&frame.data);
            seen.push(frame.data);
            if done {
                return seen;
            }
        }
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        kill_sandboxes(&self.data_dir());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` is a bubblewrap process that started no later than `file` was written.
fn is_bwrap_started_before(pid: i32, file: &Path) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    if !first.ends_with(b"bwrap") {
        return false;
    }
    let Ok(written) = std::fs::metadata(file).and_then(|m| m.modified()) else {
        return false;
    };
    // Field 22 of /proc/<pid>/stat: start time in clock ticks after boot (100 per second).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit(')').next().unwrap_or_default();
    let Some(ticks) = after_comm
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse::<u64>().ok())
    else {
        return false;
    };
    let boot = std::fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|t| t.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    let started = std::time::UNIX_EPOCH + Duration::from_millis((boot * 100 + ticks) * 10);
    started <= written + Duration::from_secs(2)
}

/// Tests drop their servers without a graceful shutdown: end their sandboxes here.
pub fn kill_sandboxes(data: &Path) {
    let Ok(entries) = std::fs::read_dir(data.join("sandboxes")) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = std::fs::read_to_string(entry.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            continue;
        };
        // Only a sandbox of this data directory: a pid from an old pid file may since belong to
        // anything (other tests' processes, busy CI machines reuse pids quickly). bubblewrap's
        // arguments come from a descriptor, so its command line does not name the folder: the
        // process must be bubblewrap and must have started before its pid file was written.
        if !is_bwrap_started_before(pid, &entry.path().join("pid")) {
            continue;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<i32>().ok())
        {
            // SAFETY: plain signal delivery.
            unsafe { libc::kill(child, libc::SIGKILL) };
        }
        // SAFETY: plain signal delivery.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
