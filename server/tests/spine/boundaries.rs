//! The boundaries a red-team run broke, asserted against real bubblewrap sandboxes, the real
//! runner and a real proxy: what a sandbox can see of the server, what it can do to its
//! runner, what it leaves on the host, and how far its resources go.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

use centaur_test_support::events::{lines, result_text};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::server::ADMIN_KEY;

const LOWEST_UID_BASE: u32 = 1_000_000_000;

/// Nothing of the server's environment or command line is readable inside, and the runner's
/// memory, environment and descriptors are closed to the code it runs.
#[tokio::test]
async fn a_sandbox_cannot_read_the_server_or_its_runner() {
    let stack = LocalStack::start("boundary-proc", 0, json!({})).await;
    let script = r#"
echo init_environ_bytes=$(cat /proc/1/environ 2>/dev/null | wc -c)
echo init_cmdline=$(tr '\0' ' ' < /proc/1/cmdline)
echo runner=$(cat /proc/2/comm)
cat /proc/2/environ >/dev/null 2>&1 && echo runner_environ=readable || echo runner_environ=denied
(exec 3</proc/2/mem) 2>/dev/null && echo runner_mem=open || echo runner_mem=denied
ls /proc/2/fd >/dev/null 2>&1 && echo runner_fds=listed || echo runner_fds=denied
(echo forged >> /proc/2/fd/2) 2>/dev/null && echo runner_stderr=writable || echo runner_stderr=denied
python3 -c 'import ctypes; print("ptrace_attach=%d" % ctypes.CDLL(None).ptrace(16, 2, 0, 0))'
touch /workspace/made-inside
echo workspace_owner=$(stat -c %u /workspace)
"#;
    let done = stack.turn("api:proc", "shell", script).await;
    let text = result_text(&done);
    let seen = lines(text);
    let expect = |key: &str, value: &str| {
        assert_eq!(
            seen.get(key).map(String::as_str),
            Some(value),
            "{key} in:\n{text}"
        );
    };
    // bubblewrap's own process (the sandbox's pid 1) starts with an empty environment and
    // reads its arguments from a descriptor.
    expect("init_environ_bytes", "0");
    let cmdline = &seen["init_cmdline"];
    assert!(
        cmdline.starts_with("bwrap --args ") && !cmdline.contains("--bind"),
        "{cmdline}"
    );
    expect("runner", "centaur-runner");
    expect("runner_environ", "denied");
    expect("runner_mem", "denied");
    expect("runner_fds", "denied");
    expect("runner_stderr", "denied");
    expect("ptrace_attach", "-1");
    expect("workspace_owner", "1000");

    // On the host, the workspace and what was made in it belong to an unprivileged uid of the
    // thread's own, and only it may enter the workspace.
    let workspace = stack.only_workspace();
    let meta = std::fs::metadata(&workspace).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    assert!(meta.uid() >= LOWEST_UID_BASE, "owner {}", meta.uid());
    let made = std::fs::metadata(workspace.join("made-inside")).unwrap();
    assert_eq!((made.uid(), made.gid()), (meta.uid(), meta.uid()));

    // Another thread runs as another uid.
    let done = stack.turn("api:proc-2", "shell", "echo ok").await;
    assert_eq!(done["type"], "execution.completed", "{done}");
    let owners: std::collections::BTreeSet<u32> =
        std::fs::read_dir(stack.data_dir().join("workspaces"))
            .unwrap()
            .flatten()
            .map(|e| e.metadata().unwrap().uid())
            .collect();
    assert_eq!(owners.len(), 2, "{owners:?}");
}

/// The socket mounted into sandboxes serves the runner API only, to sandbox tokens only, and a
/// token only to its own sandbox's runner: another process of the sandbox that holds the token
/// (as if it had stolen it) is refused, and so is anyone on the host.
#[tokio::test]
async fn a_sandbox_token_is_taken_only_from_its_runner() {
    let stack = LocalStack::start("boundary-token", 0, json!({})).await;
    let key = "api:token";
    // A process that outlives the turn waits for a token, then tries to claim the next turn.
    let script = r#"
setsid sh -c '
  for i in $(seq 1 600); do [ -s /workspace/token ] && break; sleep 0.1; done
  curl -s -o /workspace/forged-body -w "%{http_code}" --unix-socket /run/centaur/server/server.sock \
    -H "Authorization: Bearer $(cat /workspace/token)" -H "content-type: application/json" \
    -X POST -d "{}" http://runner/runner/v1/threads/api:token/claim > /workspace/forged.tmp
  mv /workspace/forged.tmp /workspace/forged
' >/dev/null 2>&1 < /dev/null &
echo started
"#;
    let done = stack.turn(key, "shell", script).await;
    assert_eq!(done["type"], "execution.completed", "{done}");

    // Give the thread's sandbox a token the test knows.
    let secret = "0123456789abcdef0123456789abcdef";
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.server.database_url)
        .await
        .unwrap();
    let sandbox_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT s.id FROM sandboxes s JOIN threads t ON t.id = s.thread_id \
         WHERE t.thread_key = $1 AND s.state <> 'released'",
    )
    .bind(key)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    sqlx::query("UPDATE sandboxes SET token_hash = $2 WHERE id = $1")
        .bind(sandbox_id)
        .bind(Sha256::digest(secret.as_bytes()).to_vec())
        .execute(&mut conn)
        .await
        .unwrap();
    let token = format!("cst_{}_{secret}", sandbox_id.simple());
    let socket = stack.data_dir().join("run/server.sock");

    // From the host: the token, the admin key, and a route the socket does not serve.
    let claim = format!("/runner/v1/threads/{key}/claim");
    let (status, body) = socket_call(&socket, &token, "POST", &claim).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("runner process"), "{body}");
    let (status, body) = socket_call(&socket, ADMIN_KEY, "POST", &claim).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("only sandbox tokens"), "{body}");
    let (status, _) = socket_call(&socket, &token, "GET", "/agent/threads").await;
    assert_eq!(status, 404);
    let (status, _) = socket_call(&socket, &token, "GET", "/admin/api-keys").await;
    assert_eq!(status, 404);

    // From inside, by a process the runner started.
    let workspace = stack.only_workspace();
    let owner = std::fs::metadata(&workspace).unwrap().uid();
    let token_file = workspace.join("token");
    std::fs::write(&token_file, &token).unwrap();
    std::os::unix::fs::chown(&token_file, Some(owner), Some(owner)).unwrap();
    let forged = workspace.join("forged");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !forged.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background process never tried"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = std::fs::read_to_string(workspace.join("forged-body")).unwrap_or_default();
    assert_eq!(std::fs::read_to_string(&forged).unwrap(), "403", "{body}");
    assert!(body.contains("runner process"), "{body}");
}

/// `/tmp` and the home are bounded, processes are limited per sandbox even as root, and a
/// workspace past its cap stops its sandbox with a turn that says why.
#[tokio::test]
async fn a_sandbox_s_resources_are_bounded() {
    let stack = LocalStack::start_with("boundary-limits", 0, json!({}), |config, _| {
        config.sandbox_tmpfs_mb = 16;
        config.sandbox_processes = 64;
        config.sandbox_workspace_mb = 8;
    })
    .await;
    let script = r#"
echo tmp_kb=$(df -k /tmp | awk 'NR==2 {print $2}')
echo home_kb=$(df -k /home/sandbox | awk 'NR==2 {print $2}')
dd if=/dev/zero of=/tmp/big bs=1M count=64 2>/dev/null && echo tmp_fill=ok || echo tmp_fill=refused
rm -f /tmp/big
echo nproc=$(ulimit -u)
"#;
    let done = stack.turn("api:limits", "shell", script).await;
    let text = result_text(&done);
    let seen = lines(text);
    assert_eq!(
        seen.get("tmp_kb").map(String::as_str),
        Some("16384"),
        "{text}"
    );
    assert_eq!(
        seen.get("home_kb").map(String::as_str),
        Some("16384"),
        "{text}"
    );
    assert_eq!(
        seen.get("tmp_fill").map(String::as_str),
        Some("refused"),
        "{text}"
    );
    assert_eq!(seen.get("nproc").map(String::as_str), Some("64"), "{text}");

    let done = stack
        .turn(
            "api:limits",
            "shell",
            "dd if=/dev/zero of=/workspace/big bs=1M count=32 2>/dev/null; sleep 60",
        )
        .await;
    assert_eq!(done["type"], "execution.failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("over its cap of 8 MiB"),
        "the failure names the cause: {done}"
    );
}

/// A sandbox cannot pile up connections on the runner socket: past its cap the server closes
/// new ones at once, and its runner keeps working.
#[tokio::test]
async fn a_sandbox_cannot_exhaust_the_runner_socket() {
    let stack = LocalStack::start("boundary-conns", 0, json!({})).await;
    let script = r#"
python3 - <<'EOF'
import socket, time
held = []
for _ in range(300):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("/run/centaur/server/server.sock")
    held.append(s)
time.sleep(1)
open_ = 0
for s in held:
    s.setblocking(False)
    try:
        data = s.recv(1)
        if data:
            open_ += 1
    except BlockingIOError:
        open_ += 1
    except OSError:
        pass
print("held=%d" % open_)
EOF
"#;
    let done = stack.turn("api:conns", "shell", script).await;
    let text = result_text(&done);
    let held: usize = lines(text)
        .get("held")
        .unwrap_or_else(|| panic!("{text}"))
        .parse()
        .unwrap();
    assert!(
        held <= centaur_server::runner_socket::PER_SANDBOX,
        "{held} connections held"
    );
    assert!(held > 0, "{text}");
    // The runner still serves the thread.
    let done = stack.turn("api:conns", "shell", "echo still-here").await;
    assert!(result_text(&done).contains("still-here"), "{done}");
}

/// One HTTP/1.1 request over a Unix socket; `(status, body)`.
async fn socket_call(socket: &Path, token: &str, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(socket).await.unwrap();
    let body = if method == "POST" { "{}" } else { "" };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: runner\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A sandbox that dies while the disk holding its workspace is full is reported as that, not
/// as a harness crash (on a 4 MiB tmpfs mounted where the workspaces live).
#[tokio::test]
async fn a_full_disk_is_named_as_the_cause() {
    let mut unmount = None;
    let stack = LocalStack::start_with("boundary-disk", 0, json!({}), |config, dir| {
        let workspaces = dir.join("data").join("workspaces");
        std::fs::create_dir_all(&workspaces).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&workspaces)
            .status()
            .unwrap();
        assert!(mounted.success(), "mounting a tmpfs needs root");
        // Unmounted when the test ends, even if the stack fails to start.
        unmount = Some(Unmount(workspaces));
        config.sandbox_workspace_mb = 0;
    })
    .await;
    let _unmount = unmount;
    // Fill the disk; then the sandbox dies (its runner is killed, as a crash would).
    let filled = stack
        .turn(
            "api:disk",
            "shell",
            "head -c 8000000 /dev/zero > /workspace/fill; df -k /workspace | tail -1",
        )
        .await;
    assert_eq!(filled["type"], "execution.completed", "{filled}");
    let done = stack.turn("api:disk", "shell", "kill -9 2; sleep 30").await;
    assert_eq!(done["type"], "execution.failed", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(error.contains("no space left on the disk"), "{done}");
    assert!(!error.contains("crashed"), "{done}");
}

/// Unmounts a test's tmpfs when the test ends, passing or failing.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
