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
    // Its keys count once it has been on screen a moment (they show in brackets then).
    tui.shows("[y] approve", Duration::from_secs(5)).await;
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
    // Its keys count once it has been on screen a moment (they show in brackets then).
    tui.shows("[y] approve", Duration::from_secs(5)).await;
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

/// The first minutes of a person without model keys: the picker marks Codex as needing a key
/// (and opens nothing for it), a shell thread works instead, and a `centaur send` that waits
/// for an approval says how to give it, which the TUI's list shows as a waiting approval.
#[tokio::test]
async fn a_harness_without_its_key_is_marked_and_send_tells_how_to_approve() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let dir = temp_dir("tui-first-hour");
    let proxy = TestProxy::start(None, dir.join("proxy")).await;
    let port = free_port();
    std::fs::create_dir_all(dir.join("harnesses/bin")).unwrap();
    let mut env = process_env(&dir, &proxy).await;
    env.extend([
        ("CENTAUR_APPROVAL_POLICY".into(), "always".into()),
        (
            "CENTAUR_HARNESS_DIR".into(),
            dir.join("harnesses").display().to_string(),
        ),
        (
            "CENTAUR_HARNESS_HINTS".into(),
            "codex=needs an OpenAI key (`centaur dev keys`)".into(),
        ),
    ]);
    let mut server = ServerProcess::start(env!("CARGO_BIN_EXE_centaur-server"), &env, port);
    server.wait_ready().await;
    let centaur = |command: &mut std::process::Command| {
        command
            .env("CENTAUR_API_URL", &server.url)
            .env("CENTAUR_API_TOKEN", ADMIN_KEY)
            .env("HOME", dir.join("home"))
            .env("CENTAUR_HOME", dir.join("centaur-home"))
            .env("TERM", "xterm-256color");
    };

    let mut command = std::process::Command::new(cli_binary());
    centaur(&mut command);
    let mut tui = Pty::spawn(&mut command, ROWS, COLS);
    tui.shows("No threads yet", Duration::from_secs(10)).await;

    // Ctrl-N: Codex is offered with what it needs, and Enter on it opens nothing.
    tui.type_text("\x0e");
    tui.shows("needs an OpenAI key", Duration::from_secs(10))
        .await;
    let codex_row = tui
        .rows()
        .into_iter()
        .find(|r| r.contains("codex"))
        .expect("codex is in the picker");
    assert!(
        codex_row.contains("needs an OpenAI key (`centaur dev keys`)"),
        "{codex_row}"
    );
    let shell_row = tui
        .rows()
        .into_iter()
        .find(|r| r.contains("shell"))
        .expect("shell is in the picker");
    assert!(!shell_row.contains("needs"), "{shell_row}");
    // The cursor starts on a harness that can run (the server's default, codex, cannot); up to
    // codex, the first, and Enter.
    tui.type_text("\x1b[A\x1b[A\x1b[A\x1b[A\x1b[A\r");
    tui.shows("codex: needs an OpenAI key", Duration::from_secs(5))
        .await;
    assert!(
        !tui.contents().contains("new thread ·"),
        "{}",
        tui.contents()
    );

    // Down to shell (codex, claude-code, amp, shell): a thread that works.
    tui.type_text("\x1b[B\x1b[B\x1b[B\r");
    tui.shows("new thread · shell", Duration::from_secs(5))
        .await;
    tui.type_text("echo from-the-tui\r");
    tui.shows("Approve this command?", Duration::from_secs(30))
        .await;
    // Its keys count once it has been on screen a moment (they show in brackets then).
    tui.shows("[y] approve", Duration::from_secs(5)).await;
    tui.type_text("y");
    tui.until("the command's output", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "from-the-tui") && s.contains("✓ done")
    })
    .await;

    // `centaur send` to a shell thread under `always`: it says how to approve and waits.
    let mut send = std::process::Command::new(cli_binary());
    centaur(&mut send);
    send.args([
        "send",
        "--thread-key",
        "api:first-hour-send",
        "--harness",
        "shell",
        "--message",
        "echo from-send",
    ]);
    let mut send = tokio::process::Command::from(send)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(send.stderr.take().unwrap()).lines();
    let approve_line = tokio::time::timeout(Duration::from_secs(30), async {
        let mut said = Vec::new();
        while let Some(line) = stderr.next_line().await.unwrap() {
            if let Some(at) = line.find("centaur approve ") {
                return line[at..].trim().to_owned();
            }
            said.push(line);
        }
        panic!("send ended without telling how to approve: {said:?}");
    })
    .await
    .expect("send tells how to approve within 30 s");
    // Still waiting: the turn has not ended.
    assert!(send.try_wait().unwrap().is_none(), "send stopped waiting");

    // The TUI's list badges the thread that waits.
    tui.type_text("\x14"); // Ctrl-T
    tui.until("the waiting thread's badge", Duration::from_secs(15), |s| {
        s.lines()
            .any(|l| l.contains("echo from-send") && l.contains("approval"))
    })
    .await;

    // The printed line, run as it is, decides it; send prints the answer and succeeds.
    let words: Vec<&str> = approve_line.split_whitespace().take(4).collect();
    assert_eq!(words[..2], ["centaur", "approve"], "{approve_line}");
    let mut approve = std::process::Command::new(cli_binary());
    centaur(&mut approve);
    let approved = approve.args(&words[1..]).output().unwrap();
    assert!(approved.status.success(), "{approved:?}");
    let sent = tokio::time::timeout(Duration::from_secs(30), send.wait_with_output())
        .await
        .expect("send ends after the approval")
        .unwrap();
    assert!(sent.status.success(), "{sent:?}");
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(stdout.lines().any(|l| l.trim() == "from-send"), "{stdout}");

    tui.type_text("\x03\x03");
    let status = tui.exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status:?}");
    server.terminate();
    kill_sandboxes(&dir.join("data"));
    let _ = std::fs::remove_dir_all(&dir);
}
