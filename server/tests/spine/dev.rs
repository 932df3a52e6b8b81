//! `centaur dev` as a newcomer meets it: a fresh data directory, the stack started in the
//! background, a turn, its status, stopped with nothing left behind, and started again on the
//! same data.

use std::path::{Path, PathBuf};
use std::process::Output;

use centaur_test_support::binaries::{cli_binary, text};
use centaur_test_support::process::free_port;
use centaur_test_support::temp::temp_dir;

/// `centaur` with `CENTAUR_HOME=home` and nothing else pointing it at a server.
fn command(home: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(cli_binary());
    command
        .args(args)
        .env("CENTAUR_HOME", home)
        .env("HOME", home.join("user"))
        .env("TERM", "xterm-256color")
        // `centaur dev` and `centaur dev keys` install the CLI of a key given: from npm's cache only
        // (here the empty one in `HOME`), never from the network, unless a test says otherwise.
        .env("npm_config_offline", "true")
        .env_remove("CENTAUR_API_URL")
        .env_remove("CENTAUR_API_TOKEN")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("DATABASE_URL");
    command
}

/// Runs [`command`] to its end, with `PATH` replaced if given.
async fn centaur(home: &Path, args: &[&str], path: Option<&str>) -> Output {
    let mut command = tokio::process::Command::from(command(home, args));
    command.stdin(std::process::Stdio::null());
    if let Some(path) = path {
        command.env("PATH", path);
    }
    command.output().await.expect("centaur runs")
}

/// The port at the end of an address or URL in `stack.json`.
fn port_in(address: &serde_json::Value) -> u16 {
    let address = address.as_str().expect("an address");
    address.rsplit(':').next().unwrap().parse().expect("a port")
}

/// Live (not zombie) processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// A fresh `CENTAUR_HOME`; dropped (a test passing or failing), its stack is stopped, any
/// PostgreSQL it left is stopped, and the folder is removed.
struct Home(PathBuf);

impl Home {
    fn new(name: &str) -> Home {
        Home(temp_dir(name))
    }
}

impl std::ops::Deref for Home {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = command(&self.0, &["dev", "down"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn dev_boots_serves_stops_and_keeps_its_data() {
    let home = Home::new("dev-home");
    let port = free_port();
    let port_arg = port.to_string();

    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("harnesses ready: shell, echo"),
        "{}",
        text(&out.stderr)
    );

    // Found through CENTAUR_HOME: no URL, no token, no login.
    let out = centaur(
        &home,
        &[
            "send",
            "--harness",
            "shell",
            "--message",
            "echo hello",
            "--exit-on-terminal",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key = stdout
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("thread_key=")
        .to_owned();
    assert_eq!(stdout.lines().nth(1), Some("hello"), "{stdout}");

    // The stack's own log says what it did.
    let out = centaur(&home, &["dev", "logs", "stack"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the stack is up"),
        "{}",
        text(&out.stdout)
    );

    // `doctor` checks the running stack's port, not 8080, and gives this machine's fixes only.
    let out = centaur(&home, &["dev", "doctor"], None).await;
    let report = text(&out.stdout);
    assert!(report.contains(&format!("{port} (this stack)")), "{report}");
    assert!(!report.contains("8080"), "{report}");
    assert!(!report.contains("macOS"), "{report}");

    // A harness without its key is refused before anything is stored, with the fix.
    let before = centaur(&home, &["threads", "--json"], None).await;
    let out = centaur(
        &home,
        &["send", "--harness", "codex", "--message", "hello"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("codex needs an OpenAI key (`centaur dev keys`)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "", "a refused turn prints no key");
    let after = centaur(&home, &["threads", "--json"], None).await;
    assert_eq!(text(&after.stdout), text(&before.stdout));

    // A TUI on a stack it did not start says, once it quits, that the stack still runs: the
    // plain TUI and a second `centaur dev` alike.
    for args in [&[][..], &["dev", "--port", &port_arg]] {
        let mut tui = centaur_test_support::pty::Pty::spawn(&mut command(&home, args), 44, 100);
        tui.until("the thread", std::time::Duration::from_secs(30), |s| {
            s.contains(&key) || s.contains("echo hello") || s.contains("new thread")
        })
        .await;
        tui.type_text("\x03");
        tui.type_text("\x03");
        tui.exit(std::time::Duration::from_secs(30)).await;
        tui.shows(
            "centaur: the stack still runs: `centaur dev down` stops it",
            std::time::Duration::from_secs(5),
        )
        .await;
        assert!(listening(port), "{args:?} stopped the stack");
    }

    // A peer closing a pipe or socket is the stack's everyday life, not its death: SIGPIPE
    // must not end it (it did, when the stack inherited the line commands' disposition).
    let pid: i32 = std::fs::read_to_string(home.join("stack.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: a signal to the stack's process.
    unsafe { libc::kill(pid, libc::SIGPIPE) };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(listening(port), "SIGPIPE ended the stack");

    let out = centaur(&home, &["dev", "status"], None).await;
    let status = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{status}");
    for component in ["server", "postgres", "proxy", "sandboxes"] {
        let row = status
            .lines()
            .find(|l| l.starts_with(component))
            .unwrap_or_else(|| panic!("no {component} row in\n{status}"));
        assert!(row.contains("healthy"), "{row}");
    }

    // A second `centaur dev` attaches instead of starting another stack.
    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("already runs"),
        "{}",
        text(&out.stderr)
    );

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("stack.json")).unwrap()).unwrap();
    let pid = state["pid"].as_u64().unwrap() as i32;
    let postgres_port: u16 = port_in(&state["postgres_address"]);
    let proxy_port: u16 = port_in(&state["proxy_control_url"]);

    let out = centaur(&home, &["dev", "down"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Gone, or a zombie waiting for an init that does not reap (as in some containers).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    assert!(
        stat.is_empty() || state.starts_with('Z'),
        "the stack process runs: {stat}"
    );
    for port in [port, postgres_port, proxy_port] {
        assert!(!listening(port), "something still listens on {port}");
    }
    let left = processes_mentioning(&home.display().to_string());
    assert!(left.is_empty(), "left running: {left:#?}");

    // Down, the commands say so and how to start it again (not a login for port 8080).
    let said = format!(
        "centaur: no stack runs for {}: start it with `centaur dev`\n",
        home.display()
    );
    for args in [
        &["threads"][..],
        &["send", "--message", "hello"],
        &["attach", &key],
        &[],
    ] {
        let out = centaur(&home, args, None).await;
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert_eq!(text(&out.stderr), said, "{args:?}");
    }

    // `dev logs` ends quietly when its reader stops early (`| head`).
    let mut many = String::new();
    for i in 0..200_000 {
        many.push_str(&format!("line {i}\n"));
    }
    std::fs::write(home.join("logs/proxy.log"), many).unwrap();
    let mut logs = command(&home, &["dev", "logs"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(logs.stdout.as_mut().unwrap(), &mut first).unwrap();
    drop(logs.stdout.take());
    let out = logs.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    use std::os::unix::process::ExitStatusExt;
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );

    // Up again on the same data: the thread is still there.
    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = centaur(&home, &["threads"], None).await;
    assert!(text(&out.stdout).contains(&key), "{}", text(&out.stdout));
    let out = centaur(&home, &["dev", "down"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!listening(port));
}

#[tokio::test]
async fn doctor_names_what_is_missing_and_the_fix() {
    let home = Home::new("dev-doctor");
    let out = centaur(&home, &["dev", "doctor"], Some("/nonexistent")).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("✗ bubblewrap"), "{report}");
    assert!(report.contains("`bwrap` is not on PATH"), "{report}");
    assert!(
        report.contains("fix (Debian/Ubuntu): sudo apt-get install -y bubblewrap"),
        "{report}"
    );
    // This machine's fixes only.
    assert!(!report.contains("macOS"), "{report}");
    assert!(!report.contains("brew "), "{report}");

    // `centaur dev` itself stops before starting anything, with the same fix in one line.
    let out = centaur(&home, &["dev", "--detach"], Some("/nonexistent")).await;
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(
        error.contains("sudo apt-get install -y bubblewrap"),
        "{error}"
    );
    assert!(!home.join("stack.json").exists());

    // A port that is taken: named, with the flag that avoids it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = centaur(&home, &["dev", "--detach", "--port", &port], None).await;
    assert_eq!(out.status.code(), Some(1));
    let error = text(&out.stderr);
    assert!(error.contains(&format!("{port} is in use")), "{error}");
    assert!(error.contains("--port"), "{error}");
    assert!(!home.join("stack.json").exists());
}

/// `centaur dev` in a terminal: the TUI opens on a new thread (shell, with no model key, and
/// it says how to add one); quitting it stops the stack it started.
#[tokio::test]
async fn dev_opens_the_tui_and_quitting_stops_the_stack() {
    use std::time::Duration;
    let home = Home::new("dev-tui");
    let port = free_port();
    let mut tui = centaur_test_support::pty::Pty::spawn(
        &mut command(&home, &["dev", "--port", &port.to_string()]),
        44,
        100,
    );
    // First run in a terminal: the model keys are asked for; Enter skips each.
    tui.shows("OpenAI API key", Duration::from_secs(30)).await;
    tui.answer_hidden("OpenAI API key", "\r", Duration::from_secs(10))
        .await;
    tui.shows("Anthropic API key", Duration::from_secs(10))
        .await;
    tui.answer_hidden("Anthropic API key", "\r", Duration::from_secs(10))
        .await;
    tui.shows("new thread · shell", Duration::from_secs(30))
        .await;
    // How to add a key, once the TUI has the harness list (asked for as it opens).
    tui.shows("centaur dev keys", Duration::from_secs(10)).await;
    tui.type_text("echo hi-from-dev\r");
    tui.until("the answer", Duration::from_secs(30), |s| {
        s.lines().any(|l| l.trim() == "hi-from-dev") && s.contains("✓ done")
    })
    .await;
    assert!(listening(port));
    tui.type_text("\x03");
    tui.type_text("\x03");
    tui.exit(Duration::from_secs(30)).await;
    assert!(!listening(port), "the stack still serves");
    assert!(!tui.contents().contains("still runs"), "{}", tui.contents());
    assert!(!home.join("stack.json").exists());
    let left = processes_mentioning(&home.display().to_string());
    assert!(left.is_empty(), "left running: {left:#?}");
}

/// A `centaur dev` killed outright (SIGKILL, a closed terminal) takes its stack with it.
#[tokio::test]
async fn a_killed_centaur_dev_takes_its_stack_down() {
    use std::time::Duration;
    let home = Home::new("dev-killed");
    let port = free_port();
    std::fs::create_dir_all(home.join("secrets")).unwrap();
    // Keys asked before: straight to the TUI.
    std::fs::write(home.join("secrets/.asked"), "").unwrap();
    let mut tui = centaur_test_support::pty::Pty::spawn(
        &mut command(&home, &["dev", "--port", &port.to_string()]),
        44,
        100,
    );
    tui.shows("new thread · shell", Duration::from_secs(30))
        .await;
    assert!(listening(port));
    tui.child.kill().unwrap();
    tui.child.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while listening(port) || !processes_mentioning(&home.display().to_string()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {:#?}",
            processes_mentioning(&home.display().to_string())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!home.join("stack.json").exists());
}

/// The postgres row of `centaur dev status`, and the whole report.
async fn postgres_row(home: &Path) -> (String, String) {
    let out = centaur(home, &["dev", "status"], None).await;
    let status = text(&out.stdout);
    let row = status
        .lines()
        .find(|l| l.starts_with("postgres"))
        .unwrap_or_default()
        .to_owned();
    (row, status)
}

/// Waits up to `secs` for the postgres row of `centaur dev status` to satisfy `done`.
async fn until_postgres_row(home: &Path, secs: u64, done: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let (row, status) = postgres_row(home).await;
        if done(&row) {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never got there:\n{status}\n{}",
            std::fs::read_to_string(home.join("logs/stack.log")).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// PostgreSQL killed outright (SIGKILL of its postmaster): the stack says so and restarts it;
/// while it cannot, `centaur dev` refuses to attach and names the fix; once it is back, turns
/// work again without restarting anything by hand.
#[tokio::test]
async fn dev_restarts_a_killed_postgres() {
    use std::time::{Duration, Instant};
    let home = Home::new("dev-heal");
    let port_arg = free_port().to_string();
    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("stack.json")).unwrap()).unwrap();
    let postgres_port: u16 = port_in(&state["postgres_address"]);
    let postmaster: i32 = std::fs::read_to_string(home.join("postgres/data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: a signal to the stack's PostgreSQL.
    assert_eq!(unsafe { libc::kill(postmaster, libc::SIGKILL) }, 0);
    // Its port taken meanwhile: the restarts fail until it is free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let squatter = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", postgres_port)).await {
            Ok(listener) => break listener,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot take {postgres_port}: {error}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };

    let row = until_postgres_row(&home, 20, |row| {
        row.contains("restarting") && row.contains("last attempt")
    })
    .await;
    assert!(row.contains(&format!("pid {postmaster}")), "{row}");
    let out = centaur(&home, &["dev", "status"], None).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    // Attaching to a stack that does not work: refused, with the reason and the fix.
    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    let error = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{error}");
    assert!(error.contains("PostgreSQL is down"), "{error}");
    assert!(error.contains("centaur dev logs postgres"), "{error}");
    assert!(error.contains("centaur dev down && centaur dev"), "{error}");
    assert!(!error.contains("attaching"), "{error}");

    drop(squatter);
    let row = until_postgres_row(&home, 60, |row| row.contains("healthy")).await;
    assert!(row.contains("restarted 1 time, last"), "{row}");
    assert!(
        row.contains(&format!("the postmaster (pid {postmaster}) exited")),
        "{row}"
    );
    let log = std::fs::read_to_string(home.join("logs/stack.log")).unwrap();
    assert!(
        log.contains(&format!(
            "postgres: the postmaster (pid {postmaster}) exited"
        )),
        "{log}"
    );
    assert!(log.contains("postgres: restart attempt 1 failed"), "{log}");
    assert!(log.contains("postgres: restarted"), "{log}");

    // The server reconnects by itself: a turn works again within seconds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = centaur(
            &home,
            &[
                "send",
                "--harness",
                "shell",
                "--message",
                "echo healed",
                "--exit-on-terminal",
            ],
            None,
        )
        .await;
        if out.status.code() == Some(0) {
            assert_eq!(text(&out.stdout).lines().nth(1), Some("healed"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no turn after the restart: {}",
            text(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = centaur(&home, &["dev", "status"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = centaur(&home, &["dev", "--detach", "--port", &port_arg], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already runs"));

    // Printing commands read by something that stops early (`| head -2`) end quietly.
    for args in [
        &["dev", "status"][..],
        &["dev", "logs"][..],
        &["dev", "doctor"][..],
    ] {
        let mut child = command(&home, args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let error = text(&out.stderr);
        assert!(!error.contains("panicked"), "{args:?}: {error}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {error}");
    }
}

/// Runs [`command`] with `input` on its stdin (a pipe, not a terminal).
async fn centaur_piped(home: &Path, args: &[&str], input: &str) -> Output {
    piped(command(home, args), input).await
}

/// Runs `command` with `input` on its stdin (a pipe, not a terminal).
async fn piped(command: std::process::Command, input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("centaur runs");
    let mut stdin = child.stdin.take().unwrap();
    // A command that refuses without reading may be gone already: its exit code tells.
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    child.wait_with_output().await.expect("centaur ends")
}

/// The files `centaur dev keys` may write, as they are.
fn key_files(home: &Path) -> Vec<(String, Option<String>)> {
    [
        "secrets/openai-api-key",
        "secrets/anthropic-api-key",
        "codex.toml",
        "egress-policy.json",
        "endpoints.json",
        "harness.env",
    ]
    .iter()
    .map(|f| (f.to_string(), std::fs::read_to_string(home.join(f)).ok()))
    .collect()
}

/// `echo KEY | centaur dev keys` cannot ask: it refuses in one line that names the way
/// without a terminal, exits non-zero, and saves nothing (it said "keys saved" and exited 0).
#[tokio::test]
async fn keys_without_a_terminal_refuse_unless_told_to_read_stdin() {
    let home = Home::new("dev-keys-piped");
    let out = centaur_piped(&home, &["dev", "keys"], "sk-piped-0123456789\n").await;
    let error = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("--openai-key-stdin"), "{error}");
    assert!(!error.contains("saved"), "{error}");
    assert!(!home.join("secrets/openai-api-key").exists());
    assert!(!home.join("secrets/anthropic-api-key").exists());

    // Told to read it: saved, for the proxy only.
    let out = centaur_piped(
        &home,
        &["dev", "keys", "--anthropic-key-stdin"],
        "sk-ant-piped-0123456789\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("Anthropic API key"));
    let saved = home.join("secrets/anthropic-api-key");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "sk-ant-piped-0123456789"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Nothing on stdin: refused, nothing changed.
    let before = key_files(&home);
    let out = centaur_piped(&home, &["dev", "keys", "--openai-key-stdin"], "").await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no OpenAI key on stdin"));
    assert_eq!(key_files(&home), before);
}

/// One step points Codex at another OpenAI-compatible endpoint: the key, Codex's provider
/// (base URL, model, the placeholder's variable, no WebSocket) and the egress policy (the
/// host:port allowed, private because it is loopback, the key bound there and only there).
/// A bad URL changes nothing.
#[tokio::test]
async fn keys_with_a_base_url_write_codex_settings_and_the_policy_together() {
    let home = Home::new("dev-keys-endpoint");
    let out = centaur_piped(
        &home,
        &[
            "dev",
            "keys",
            "--openai-key-stdin",
            "--openai-base-url",
            "http://127.0.0.1:18123/v1",
            "--codex-model",
            "local-model",
        ],
        "sk-local-0123456789\n",
    )
    .await;
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("http://127.0.0.1:18123/v1"), "{said}");
    assert_eq!(
        std::fs::read_to_string(home.join("secrets/openai-api-key")).unwrap(),
        "sk-local-0123456789"
    );

    let codex = std::fs::read_to_string(home.join("codex.toml")).unwrap();
    for line in [
        "model = \"local-model\"",
        "model_provider = \"centaur\"",
        "[model_providers.centaur]",
        "base_url = \"http://127.0.0.1:18123/v1\"",
        "wire_api = \"responses\"",
        "env_key = \"OPENAI_API_KEY\"",
        "supports_websockets = false",
    ] {
        assert!(codex.lines().any(|l| l == line), "no `{line}` in\n{codex}");
    }
    assert!(codex.contains("request_max_retries = "), "{codex}");
    assert!(!codex.contains("sk-local"), "{codex}");

    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("egress-policy.json")).unwrap())
            .unwrap();
    let list = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let allow = list(&policy["allow"]);
    assert!(allow.contains(&"127.0.0.1:18123".to_owned()), "{allow:?}");
    assert!(
        !allow.iter().any(|h| h.starts_with("api.openai.com")),
        "{allow:?}"
    );
    assert!(allow.contains(&"pypi.org".to_owned()), "{allow:?}");
    assert_eq!(list(&policy["allow_private"]), ["127.0.0.1:18123"]);
    let binding = policy["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "OPENAI_API_KEY")
        .unwrap();
    assert_eq!(list(&binding["hosts"]), ["127.0.0.1:18123"]);
    assert_eq!(list(&binding["headers"]), ["authorization"]);
    assert_eq!(binding["format"], "Bearer {value}");

    // A gateway for Claude Code: its host allowed with its port, its key bound there.
    let out = centaur(
        &home,
        &[
            "dev",
            "keys",
            "--anthropic-base-url",
            "https://llm-gateway.example.com:8443/anthropic",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let policy: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("egress-policy.json")).unwrap())
            .unwrap();
    let allow = list(&policy["allow"]);
    assert!(
        allow.contains(&"llm-gateway.example.com:8443".to_owned()),
        "{allow:?}"
    );
    assert!(
        !allow.iter().any(|h| h.starts_with("api.anthropic.com")),
        "{allow:?}"
    );
    assert_eq!(list(&policy["allow_private"]), ["127.0.0.1:18123"]);
    let binding = policy["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ANTHROPIC_API_KEY")
        .unwrap();
    assert_eq!(list(&binding["hosts"]), ["llm-gateway.example.com:8443"]);
    // Claude Code's base URL, in the settings file the server reads again when it changes.
    let harness_env = std::fs::read_to_string(home.join("harness.env")).unwrap();
    assert!(
        harness_env
            .lines()
            .any(|l| l == "ANTHROPIC_BASE_URL=https://llm-gateway.example.com:8443/anthropic"),
        "{harness_env}"
    );

    // Bad URLs: a clear line each, exit 2, not one file touched.
    let before = key_files(&home);
    for (flag, url, says) in [
        ("--openai-base-url", "127.0.0.1:18123/v1", "not a URL"),
        (
            "--openai-base-url",
            "ftp://models.example.com/v1",
            "http://",
        ),
        (
            "--openai-base-url",
            "https://me:secret@models.example.com/v1",
            "credentials",
        ),
        (
            "--anthropic-base-url",
            "https://llm-gateway.example.com/v1",
            "without /v1",
        ),
    ] {
        let out = centaur_piped(
            &home,
            &["dev", "keys", "--openai-key-stdin", flag, url],
            "sk-other-0123456789\n",
        )
        .await;
        let error = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{url}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.contains(says), "{url}: {error}");
        assert!(
            !error.contains("secret"),
            "the URL's password is repeated: {error}"
        );
        assert_eq!(key_files(&home), before, "{url} changed something");
    }
}

/// A real Codex turn through a `centaur dev` stack against an OpenAI-compatible endpoint on
/// 127.0.0.1, configured only with `centaur dev keys` flags; then another endpoint and model,
/// set while the stack runs, serve the next new thread without a restart.
#[tokio::test]
async fn codex_reaches_any_endpoint_set_by_dev_keys_without_a_restart() {
    use centaur_test_support::model::{HELLO, MockModel, Reply};
    use centaur_test_support::proxy::REAL_OPENAI_KEY;

    let first = MockModel::start(vec![]).await;
    let second = MockModel::start(vec![("again", Reply::Text("the second model".into()))]).await;
    let home = Home::new("dev-endpoint");
    // The Codex CLI the tests install once, as `centaur dev` would have put it.
    std::fs::create_dir_all(&*home).unwrap();
    std::os::unix::fs::symlink(
        centaur_test_support::npm::codex_dir(),
        home.join("harnesses"),
    )
    .unwrap();

    let base_url = format!("http://{}/v1", first.host());
    let out = centaur_piped(
        &home,
        &[
            "dev",
            "keys",
            "--openai-key-stdin",
            "--openai-base-url",
            &base_url,
            "--codex-model",
            "first-model",
        ],
        &format!("{REAL_OPENAI_KEY}\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let port = free_port().to_string();
    let out = centaur(&home, &["dev", "--detach", "--port", &port], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("harnesses ready: codex"),
        "{}",
        text(&out.stderr)
    );

    let send = |message: &'static str| {
        let home = home.to_path_buf();
        async move {
            centaur(
                &home,
                &[
                    "send",
                    "--harness",
                    "codex",
                    "--message",
                    message,
                    "--exit-on-terminal",
                ],
                None,
            )
            .await
        }
    };
    let out = send("hello there").await;
    let logs = || {
        format!(
            "{}\n{}",
            std::fs::read_to_string(home.join("logs/server.log")).unwrap_or_default(),
            std::fs::read_to_string(home.join("logs/proxy.log")).unwrap_or_default()
        )
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        logs()
    );
    assert!(text(&out.stdout).contains(HELLO), "{}", text(&out.stdout));
    {
        let seen = first.seen.lock().unwrap();
        assert!(!seen.bodies.is_empty());
        assert!(seen.bodies.iter().all(|b| b["model"] == "first-model"));
        // The proxy swapped the sandbox's placeholder for the key.
        assert!(
            seen.authorizations
                .iter()
                .all(|a| *a == format!("Bearer {REAL_OPENAI_KEY}")),
            "{:?}",
            seen.authorizations
        );
    }
    let first_requests = first.seen.lock().unwrap().bodies.len();

    // Another endpoint and model while the stack runs: the next new thread uses them.
    let base_url = format!("http://{}/v1", second.host());
    let out = centaur(
        &home,
        &[
            "dev",
            "keys",
            "--openai-base-url",
            &base_url,
            "--codex-model",
            "second-model",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("new threads"),
        "{}",
        text(&out.stderr)
    );
    let out = send("again, please").await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr),
        logs()
    );
    assert!(
        text(&out.stdout).contains("the second model"),
        "{}",
        text(&out.stdout)
    );
    {
        let seen = second.seen.lock().unwrap();
        assert!(!seen.bodies.is_empty());
        assert!(seen.bodies.iter().all(|b| b["model"] == "second-model"));
        assert!(
            seen.authorizations
                .iter()
                .all(|a| *a == format!("Bearer {REAL_OPENAI_KEY}"))
        );
    }
    assert_eq!(first.seen.lock().unwrap().bodies.len(), first_requests);
    let out = centaur(&home, &["dev", "down"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `centaur dev keys` in a terminal asks for each key, base URL and Codex's model, Enter
/// keeping what is there; a bad URL is asked again; what was typed is written together.
#[tokio::test]
async fn keys_in_a_terminal_ask_for_keys_base_urls_and_the_model() {
    use std::time::Duration;
    let home = Home::new("dev-keys-tty");
    let mut tty =
        centaur_test_support::pty::Pty::spawn(&mut command(&home, &["dev", "keys"]), 30, 120);
    tty.shows("OpenAI API key", Duration::from_secs(30)).await;
    tty.answer_hidden(
        "OpenAI API key",
        "sk-typed-0123456789\r",
        Duration::from_secs(10),
    )
    .await;
    tty.shows("base URL (for Codex)", Duration::from_secs(10))
        .await;
    assert!(
        tty.contents().contains("https://api.openai.com/v1"),
        "{}",
        tty.contents()
    );
    tty.type_text("not a url\r");
    tty.shows("not a URL", Duration::from_secs(10)).await;
    tty.type_text("http://127.0.0.1:11434/v1\r");
    tty.shows("Codex model", Duration::from_secs(10)).await;
    tty.type_text("gpt-oss:20b\r");
    tty.shows("Anthropic API key", Duration::from_secs(10))
        .await;
    tty.answer_hidden("Anthropic API key", "\r", Duration::from_secs(10))
        .await;
    tty.shows("base URL (for Claude Code)", Duration::from_secs(10))
        .await;
    tty.type_text("\r");
    let status = tty.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", tty.contents());

    assert_eq!(
        std::fs::read_to_string(home.join("secrets/openai-api-key")).unwrap(),
        "sk-typed-0123456789"
    );
    assert!(!home.join("secrets/anthropic-api-key").exists());
    let codex = std::fs::read_to_string(home.join("codex.toml")).unwrap();
    assert!(codex.contains("model = \"gpt-oss:20b\""), "{codex}");
    assert!(
        codex.contains("base_url = \"http://127.0.0.1:11434/v1\""),
        "{codex}"
    );
    let policy = std::fs::read_to_string(home.join("egress-policy.json")).unwrap();
    assert!(policy.contains("\"127.0.0.1:11434\""), "{policy}");
    assert!(policy.contains("api.anthropic.com"), "{policy}");
}

/// With neither a `centaur dev` home nor a login, a command says both ways to get a server,
/// in one line, exit 3.
#[tokio::test]
async fn without_a_stack_or_a_login_commands_name_both_fixes() {
    let home = Home::new("dev-nowhere");
    let _ = std::fs::remove_dir_all(&*home);
    for args in [&["threads"][..], &["send", "--message", "hello"]] {
        let out = centaur(&home, args, None).await;
        let error = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {error}");
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(
            error.contains("`centaur dev`") && error.contains("`centaur login`"),
            "{error}"
        );
    }
}

/// `GET /agent/harnesses` of the stack running for `home`, and codex's entry in it.
async fn codex_in_harness_list(home: &Path) -> serde_json::Value {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("stack.json")).unwrap()).unwrap();
    let token = std::fs::read_to_string(home.join("dev-token")).unwrap();
    let list: serde_json::Value = centaur_test_support::http::http()
        .build()
        .unwrap()
        .get(format!(
            "{}/agent/harnesses",
            state["api_url"].as_str().unwrap()
        ))
        .bearer_auth(token.trim())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    list["harnesses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["harness"] == "codex")
        .unwrap_or_else(|| panic!("no codex in {list}"))
        .clone()
}

/// A stack started without keys says codex "needs an OpenAI key (`centaur dev keys`)". Given
/// the key, `centaur dev keys` installs Codex's CLI at once (npm, here from the npm cache the
/// tests' own install fills, so without the network), and the running stack offers codex
/// without a restart. Without npm the key is saved, the failure said in one line, and codex
/// keeps its hint, which stays true: giving the key again installs it.
#[tokio::test]
async fn a_key_given_to_a_running_stack_installs_its_cli_and_codex_is_offered() {
    // Fills npm's cache with Codex's packages (when the tests install it the first time).
    let _ = centaur_test_support::npm::codex_dir();
    let npm_cache = std::process::Command::new("npm")
        .args(["config", "get", "cache"])
        .output()
        .expect("npm runs (install Node.js and npm)");
    let npm_cache = text(&npm_cache.stdout).trim().to_owned();

    let home = Home::new("dev-keys-install");
    let port = free_port().to_string();
    let out = centaur(&home, &["dev", "--detach", "--port", &port], None).await;
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("harnesses ready: shell, echo"), "{said}");
    assert!(
        said.contains("codex needs an OpenAI API key: `centaur dev keys` adds one"),
        "{said}"
    );
    let codex = codex_in_harness_list(&home).await;
    assert_eq!(codex["available"], false, "{codex}");
    assert_eq!(
        codex["unavailable_reason"], "needs an OpenAI key (`centaur dev keys`)",
        "{codex}"
    );

    // No npm: the key is saved, the install's failure said, and codex not offered yet.
    let mut keys = command(&home, &["dev", "keys", "--openai-key-stdin"]);
    keys.env("PATH", "/nonexistent");
    let out = piped(keys, "sk-test-0123456789\n").await;
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("OpenAI API key (for Codex) saved"), "{said}");
    let failed = said
        .lines()
        .find(|l| l.contains("codex is not available yet"))
        .unwrap_or_else(|| panic!("no failure line in\n{said}"));
    assert!(failed.contains("cannot run npm"), "{said}");
    assert!(failed.contains("the next `centaur dev`"), "{said}");
    assert!(!said.contains("is ready"), "{said}");
    assert_eq!(
        std::fs::read_to_string(home.join("secrets/openai-api-key")).unwrap(),
        "sk-test-0123456789"
    );
    assert_eq!(codex_in_harness_list(&home).await["available"], false);

    // The key again, with npm: Codex's CLI installed, and offered by the running stack.
    let mut keys = command(&home, &["dev", "keys", "--openai-key-stdin"]);
    keys.env("npm_config_cache", &npm_cache)
        .env_remove("npm_config_offline")
        .env("npm_config_prefer_offline", "true");
    let out = piped(keys, "sk-test-0123456789\n").await;
    let said = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("✓ installing @openai/codex@0.169.0 with npm"),
        "{said}"
    );
    assert!(
        said.contains("codex is ready: the running stack offers it now"),
        "{said}"
    );
    assert!(home.join("harnesses/bin/codex").is_file());
    let codex = codex_in_harness_list(&home).await;
    assert_eq!(codex["available"], true, "{codex}");
    assert!(codex["unavailable_reason"].is_null(), "{codex}");
    // `centaur dev status` says so too (it said what was ready when the stack started).
    let out = centaur(&home, &["dev", "status"], None).await;
    assert!(
        text(&out.stdout).contains("harnesses ready: codex, shell, echo"),
        "{}",
        text(&out.stdout)
    );

    let out = centaur(&home, &["dev", "down"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// A `centaur dev keys` that must wait for another `centaur dev` to finish setting up (it holds
/// the setup lock while asking for keys or starting the stack) says so in one line, then waits,
/// and goes on once the lock is free (it used to sit silent after saving the key).
#[tokio::test]
async fn keys_waiting_for_another_setup_say_so_then_finish() {
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let home = Home::new("dev-keys-waits");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("setup.lock"))
        .unwrap();
    // SAFETY: flock on a descriptor `lock` owns; stands in for another `centaur dev`.
    assert_eq!(
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );

    // No npm: once it has the lock, the install fails at once and says so.
    let mut keys = command(&home, &["dev", "keys", "--openai-key-stdin"]);
    keys.env("PATH", "/nonexistent");
    let mut keys = tokio::process::Command::from(keys);
    keys.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = keys.spawn().expect("centaur runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"sk-test-0123456789\n").await.unwrap();
    drop(stdin);
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            said.push_str(&line);
            said.push('\n');
            if line.contains("waiting for another `centaur dev` to finish setting up") {
                return line;
            }
        }
        panic!("ended without a waiting line:\n{said}");
    })
    .await
    .unwrap_or_else(|_| panic!("no waiting line in 30s"));
    assert!(waiting.contains(&home.display().to_string()), "{waiting}");
    // Saved before waiting; waiting, not done.
    assert!(said.contains("OpenAI API key (for Codex) saved"), "{said}");
    assert_eq!(
        std::fs::read_to_string(home.join("secrets/openai-api-key")).unwrap(),
        "sk-test-0123456789"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(child.try_wait().unwrap().is_none(), "did not wait:\n{said}");

    drop(lock);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut rest = String::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            rest.push_str(&line);
            rest.push('\n');
        }
        (rest, child.wait().await.unwrap())
    })
    .await
    .expect("it finishes once the lock is free");
    let (rest, status) = rest;
    assert_eq!(status.code(), Some(0), "{said}{rest}");
    assert!(rest.contains("codex is not available yet"), "{said}{rest}");
    assert!(
        !rest.contains("waiting for another"),
        "said twice:\n{said}{rest}"
    );
}
