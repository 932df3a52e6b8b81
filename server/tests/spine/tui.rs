//! The `centaur` TUI end to end: the real binary in a pseudo-terminal, against a real server
//! process with real sandboxes. The test reads the screen as a terminal would draw it (vt100)
//! and types like a person.

use std::time::Duration;

use centaur_test_support::binaries::cli_binary;
use centaur_test_support::local_stack::kill_sandboxes;
use centaur_test_support::process::{ServerProcess, free_port, process_env};
use centaur_test_support::proxy::TestProxy;
use centaur_test_support::pty::Pty;
use centaur_test_support::server::ADMIN_KEY;
use centaur_test_support::temp::temp_dir;

const ROWS: u16 = 44;
const COLS: u16 = 100;

/// A person's session: start a thread, answer an approval, see the output; then the server
/// is killed mid-turn and restarted, and the screen reconnects and shows every line once.
#[tokio::test]
async fn a_session_in_the_tui_survives_a_server_restart() {
    let dir = temp_dir("tui");
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let port = free_port();
    let mut env = process_env(&dir, &proxy).await;
    env.push(("CENTAUR_APPROVAL_POLICY".into(), "always".into()));
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;

    let mut tui = Pty::spawn(
        std::process::Command::new(cli_binary())
            .args(["tui", "--harness", "shell"])
            .env("CENTAUR_API_URL", &server.url)
            .env("CENTAUR_API_TOKEN", ADMIN_KEY)
            .env("HOME", dir.join("home"))
            .env("TERM", "xterm-256color"),
        ROWS,
        COLS,
    );
    tui.shows("new thread · shell", Duration::from_secs(10))
        .await;

    // A message, an approval, the answer.
    tui.type_text("echo hello-from-the-tui\r");
    tui.shows("Approve this command?", Duration::from_secs(30))
        .await;
    assert!(tui.contents().contains("run `echo hello-from-the-tui`"));
    tui.type_text("y");
    tui.until("the command's output", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "hello-from-the-tui") && s.contains("✓ done")
    })
    .await;
    assert!(tui.contents().contains("approved by"), "{}", tui.contents());

    // A slow turn; the server dies in the middle of it and comes back.
    tui.type_text("for i in $(seq 1 12); do echo line-$i; sleep 0.3; done\r");
    tui.shows("Approve this command?", Duration::from_secs(30))
        .await;
    tui.type_text("y");
    tui.until("line-3", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "line-3")
    })
    .await;
    server.kill();
    tui.shows("reconnecting", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;
    tui.until("the turn's end", Duration::from_secs(60), |s| {
        s.matches("✓ done").count() == 2 && s.contains("● live")
    })
    .await;

    // Every line of output exactly once, with the output opened up.
    tui.type_text("\x0f"); // Ctrl-O
    tui.until("line-1", Duration::from_secs(5), |s| {
        s.lines().any(|l| l.trim() == "line-1")
    })
    .await;
    let rows = tui.rows();
    for n in 1..=12 {
        let line = format!("line-{n}");
        let seen = rows.iter().filter(|r| r.trim() == line).count();
        assert_eq!(seen, 1, "{line} shown {seen} times:\n{}", rows.join("\n"));
    }

    // Ctrl-C twice quits and gives the terminal back.
    tui.type_text("\x03");
    tui.shows("press Ctrl-C again to quit", Duration::from_secs(5))
        .await;
    tui.type_text("\x03");
    let status = tui.exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let raw = tui.raw();
    let raw = String::from_utf8_lossy(&raw);
    assert!(raw.contains("\x1b[?1049l"), "the alternate screen was left");
    server.terminate();
    kill_sandboxes(&dir.join("data"));
    let _ = std::fs::remove_dir_all(&dir);
}
