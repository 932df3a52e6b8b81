//! The `centaur` command against a real server with real sandboxes.

use std::process::Output;

use serde_json::json;

use centaur_test_support::binaries::{cli_binary, text};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::pg::{fresh_database, via};
use centaur_test_support::relay::Relay;
use centaur_test_support::server::{ADMIN_KEY, TestServer};
use centaur_test_support::temp::temp_dir;

/// Runs `centaur` with `args`, as the stack's admin unless `env` says otherwise.
async fn centaur(stack: &LocalStack, args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(cli_binary())
        .args(args)
        .env("CENTAUR_API_URL", &stack.server.url)
        .env("CENTAUR_API_TOKEN", ADMIN_KEY)
        .env("HOME", stack.dir.join("home"))
        .envs(env.iter().copied())
        .output()
        .await
        .expect("centaur runs")
}

#[tokio::test]
async fn send_attach_threads_and_exit_codes() {
    let stack = LocalStack::start("cli", 0, json!({})).await;

    // One turn from a script: the thread key first, then the answer.
    let out = centaur(
        &stack,
        &[
            "send",
            "--harness",
            "shell",
            "--message",
            "echo hello",
            "--exit-on-terminal",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("thread_key=cli:"), "{stdout}");
    assert_eq!(lines.next(), Some("hello"), "{stdout}");
    let key = first.trim_start_matches("thread_key=").to_owned();

    // The same thread, followed from the start as lines, stopping at the turn's end.
    let out = centaur(&stack, &["attach", &key, "--exit-on-terminal"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "user: echo hello\n— turn started\n$ echo hello\nhello\n— turn completed\n"
    );

    // Every event as JSON, after a given id.
    let out = centaur(
        &stack,
        &[
            "attach",
            &key,
            "--after-event-id",
            "4",
            "--all-events",
            "--exit-on-terminal",
        ],
        &[],
    )
    .await;
    let ids: Vec<i64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids.first(), Some(&5), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");

    // Listed.
    let out = centaur(&stack, &["threads"], &[]).await;
    assert!(text(&out.stdout).contains(&key), "{}", text(&out.stdout));

    // A failed turn exits 1 with one line on stderr.
    let out = centaur(
        &stack,
        &[
            "send",
            "--harness",
            "shell",
            "--message",
            "sleep 5",
            "--max-duration-ms",
            "500",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the turn failed"),
        "{}",
        text(&out.stderr)
    );

    // No server, a wrong token, a usage error, a missing feature: 3, 3, 2, 1, each naming the fix.
    let out = centaur(
        &stack,
        &["threads"],
        &[("CENTAUR_API_URL", "http://127.0.0.1:9")],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot reach the Centaur server at http://127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
    let out = centaur(
        &stack,
        &["threads"],
        &[("CENTAUR_API_TOKEN", "wrong-token")],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("centaur login"),
        "{}",
        text(&out.stderr)
    );
    let out = centaur(&stack, &["send"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = centaur(&stack, &["approve", &key, "not-an-id"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not an approval id"),
        "{}",
        text(&out.stderr)
    );
    let out = centaur(&stack, &["workflows", "list"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not available"),
        "{}",
        text(&out.stderr)
    );
}

/// `login` checks the token, keeps it where only its owner can read it, and makes the URL the
/// default; later commands need neither; `logout` forgets both.
#[tokio::test]
async fn login_remembers_the_server_and_the_token() {
    let stack = LocalStack::start("cli-login", 0, json!({})).await;
    let home = stack.dir.join("home");
    let run = |args: &'static [&'static str], stdin: String, with_url: bool| {
        let mut command = tokio::process::Command::new(cli_binary());
        command
            .args(args)
            .env_remove("CENTAUR_API_URL")
            .env_remove("CENTAUR_API_TOKEN")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", &home)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if with_url {
            command.env("CENTAUR_API_URL", &stack.server.url);
        }
        async move {
            use tokio::io::AsyncWriteExt;
            let mut child = command.spawn().unwrap();
            let mut input = child.stdin.take().unwrap();
            input.write_all(stdin.as_bytes()).await.unwrap();
            drop(input);
            child.wait_with_output().await.unwrap()
        }
    };

    // A wrong token is refused and nothing is saved.
    let out = run(&["login"], "not-the-token\n".into(), true).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let file = home.join(".config/centaur/credentials.json");
    assert!(!file.exists());

    let out = run(&["login"], format!("{ADMIN_KEY}\n"), true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("readable only by you"),
        "{}",
        text(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // No URL, no token in the environment: the login's are used.
    let out = run(&["threads"], String::new(), false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let out = run(&["logout"], String::new(), false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(!saved.contains(ADMIN_KEY), "{saved}");
    let out = run(&["threads"], String::new(), false).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

/// What a sandbox prints cannot control the terminal of whoever follows the thread: titles,
/// clipboard writes (OSC 52), clearing the screen and C1 controls are removed from `send` and
/// `attach` (colours too, stdout being a pipe here), and `--all-events` carries them escaped.
#[tokio::test]
async fn sandbox_output_cannot_control_the_terminal() {
    let stack = LocalStack::start("cli-escapes", 0, json!({})).await;
    let command = r"printf 'a\033]52;c;cHduZWQK\007b\033]0;pwned\007c\033[2Jd\302\2332Je\033[31mred\033[0m\n'";
    let hostile = |out: &str| {
        out.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    };

    let out = centaur(
        &stack,
        &["send", "--harness", "shell", "--message", command],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!hostile(&stdout), "{stdout:?}");
    let mut lines = stdout.lines();
    let key = lines
        .next()
        .unwrap()
        .trim_start_matches("thread_key=")
        .to_owned();
    assert_eq!(lines.next(), Some("abcdered"), "{stdout:?}");

    let out = centaur(&stack, &["attach", &key, "--exit-on-terminal"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!hostile(&stdout), "{stdout:?}");
    for sequence in [
        "\x1b]52;c;",
        "\x1b]0;pwned\x07",
        "\x1b[2J",
        "\u{9b}2J",
        "\x1b[31m",
    ] {
        assert!(!stdout.contains(sequence), "{sequence:?} in {stdout:?}");
    }
    assert_eq!(
        stdout,
        format!("user: {command}\n— turn started\n$ {command}\nabcdered\n— turn completed\n")
    );

    // JSON carries the output as it was, every control character escaped.
    let out = centaur(
        &stack,
        &["attach", &key, "--all-events", "--exit-on-terminal"],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(!hostile(&stdout), "{stdout:?}");
    let output: String = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "command.output")
        .map(|e| e["chunk"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        output,
        "a\x1b]52;c;cHduZWQK\x07b\x1b]0;pwned\x07c\x1b[2Jd\u{9b}2Je\x1b[31mred\x1b[0m\n"
    );
}

/// A server that runs but cannot reach its database answers 503: `attach` says that, not
/// that the server cannot be reached.
#[tokio::test]
async fn attach_says_when_the_servers_database_is_unavailable() {
    let database_url = fresh_database().await;
    let relay = Relay::start(&database_url).await;
    let mut config = centaur_server::Config::new(via(&database_url, relay.addr));
    config.db_acquire_timeout_ms = 500;
    let server = TestServer::start_with(config, true).await;
    relay.cut();
    let home = temp_dir("cli-db-away");
    for args in [
        &["attach", "api:db-away"][..],
        &["attach", "api:db-away", "--exit-on-terminal"][..],
    ] {
        let out = tokio::process::Command::new(cli_binary())
            .args(args)
            .env("CENTAUR_API_URL", &server.url)
            .env("CENTAUR_API_TOKEN", ADMIN_KEY)
            .env("HOME", &home)
            .env_remove("CENTAUR_HOME")
            .output()
            .await
            .expect("centaur runs");
        let error = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {error}");
        assert!(
            error.contains("its database is unavailable"),
            "{args:?}: {error}"
        );
        assert!(!error.contains("cannot reach"), "{args:?}: {error}");
    }
    let _ = std::fs::remove_dir_all(&home);
}

/// `centaur` against `server`, as its admin.
/// `centaur interrupt`: a running turn is cancelled, nothing running is a calm answer (exit 0),
/// an unknown thread a clear error; `--all` also withdraws the waiting messages.
#[tokio::test]
async fn interrupt_stops_a_turn_and_with_all_its_queue() {
    let server = TestServer::start().await;
    let home = temp_dir("cli-interrupt");
    let run = async |args: &[&str]| server.centaur(&home, args).output().await.unwrap();

    let key = "api:cli-interrupt";
    let (_runner, execution_id) = server.running_execution(key).await;
    let out = run(&["interrupt", key]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("interrupted execution {execution_id} on {key}\n")
    );
    let path = format!("/agent/threads/{key}");
    let (_, detail) = server.admin(reqwest::Method::GET, &path, json!(null)).await;
    assert_eq!(detail["last_execution"]["status"], "cancelled");
    assert_eq!(
        detail["last_execution"]["cancel_reason"],
        "interrupted from the terminal"
    );

    let out = run(&["interrupt", key]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("nothing running on {key}\n"));

    // The queue: a queued turn and two messages waiting.
    server
        .post(
            "/agent/message",
            json!({"thread_key": key, "text": "later"}),
        )
        .await;
    let queued = server
        .post(
            "/agent/execute",
            json!({"thread_key": key, "message": "next"}),
        )
        .await;
    let out = run(&["interrupt", key, "--all"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "interrupted execution {} on {key}\nwithdrew 2 waiting messages\n",
            queued["execution_id"].as_str().unwrap()
        )
    );

    let out = run(&["interrupt", "api:no-such-thread"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("api:no-such-thread")
            && text(&out.stderr).contains("thread_not_found"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["interrupt", "no-colon"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&home);
}

/// `centaur attach` on a thread that does not exist yet waits for it (a script may attach
/// before its `send` created the thread), and gives up after `--timeout` with a clear error.
#[tokio::test]
async fn attach_waits_for_a_thread_that_does_not_exist_yet() {
    let server = TestServer::start().await;
    let home = temp_dir("cli-attach-wait");
    let key = "api:not-yet";
    let attach = server
        .centaur(
            &home,
            &["attach", key, "--exit-on-terminal", "--timeout", "60"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    // The thread appears, and its turn runs to its end.
    let (mut runner, execution_id) = server.running_execution(key).await;
    let (status, _) = runner
        .post(
            execution_id,
            vec![json!({"type": "agent.message", "text": "hello from later"})],
            Some(json!({"status": "completed", "result_text": "hello from later"})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        attach.wait_with_output(),
    )
    .await
    .expect("attach ends with the turn")
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("hello from later"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("waiting for thread `api:not-yet`"),
        "{}",
        text(&out.stderr)
    );

    // A thread that never comes: the timeout, then a clear error.
    let started = std::time::Instant::now();
    let out = server
        .centaur(&home, &["attach", "api:never", "--timeout", "1.5"])
        .output()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("thread `api:never` did not appear within 1.5s"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        waited >= std::time::Duration::from_millis(1500),
        "{waited:?}"
    );
    let out = server
        .centaur(&home, &["attach", "api:never", "--timeout", "soon"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&home);
}

/// A turn's egress denial reaches `send --json` and `attach --exit-on-terminal`: it carries the
/// turn's execution and comes before the turn's end (once, however often it was tried).
#[tokio::test]
async fn send_and_attach_show_a_turns_egress_denial() {
    let stack = LocalStack::start("cli-denied", 0, json!({})).await;
    let key = format!("cli:{}", uuid::Uuid::new_v4());
    let script = "curl -s -o /dev/null -x \"$HTTP_PROXY\" http://evil.example/; \
                  curl -s -o /dev/null -x \"$HTTP_PROXY\" http://evil.example/; echo tried";
    let out = centaur(
        &stack,
        &[
            "send",
            "--thread-key",
            &key,
            "--harness",
            "shell",
            "--message",
            script,
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .skip(1) // thread_key=…
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let denied: Vec<usize> = (0..types.len())
        .filter(|&i| types[i] == "egress.denied")
        .collect();
    assert_eq!(denied.len(), 1, "{types:?}");
    assert_eq!(types.last(), Some(&"execution.completed"), "{types:?}");
    let denial = &events[denied[0]];
    assert_eq!(denial["host"], "evil.example");
    assert_eq!(
        denial["execution_id"],
        events.last().unwrap()["execution_id"]
    );

    let out = centaur(
        &stack,
        &["attach", &key, "--exit-on-terminal", "--all-events"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let attached: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let at = attached.iter().position(|t| t == "egress.denied");
    assert!(at.is_some_and(|at| at < attached.len() - 1), "{attached:?}");
}

/// The thread keys `centaur threads --json` lists.
async fn thread_keys(stack: &LocalStack) -> Vec<String> {
    let out = centaur(stack, &["threads", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let list: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    list["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["thread_key"].as_str().unwrap().to_owned())
        .collect()
}

/// `send`'s failures as a script meets them: a harness that does not exist is a usage error
/// naming the harnesses, before any thread exists; a shell command that fails fails the turn
/// (its output first, on stdout, then the reason); the thread list shows it failed, under a
/// header, with a time people read.
#[tokio::test]
async fn send_refuses_a_bogus_harness_and_fails_with_the_command() {
    let stack = LocalStack::start("cli-send-fails", 0, json!({})).await;
    let before = thread_keys(&stack).await;
    let out = centaur(
        &stack,
        &["send", "--harness", "bogus", "--message", "echo hi"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let error = text(&out.stderr);
    assert!(
        error.contains("invalid value 'bogus' for '--harness <HARNESS>'")
            && error.contains("codex, claude-code, amp, shell, echo"),
        "{error}"
    );
    assert_eq!(text(&out.stdout), "", "a refused turn prints no key");
    assert_eq!(thread_keys(&stack).await, before, "a thread was created");

    let out = centaur(
        &stack,
        &["send", "--harness", "shell", "--message", "echo x; exit 3"],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let mut lines = stdout.lines();
    let key = lines
        .next()
        .and_then(|l| l.strip_prefix("thread_key="))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    // What the turn printed before it failed, as the shell reports it.
    assert_eq!(
        lines.collect::<Vec<_>>(),
        ["x", "[exit status 3]"],
        "{stdout}"
    );
    assert!(stderr.starts_with("centaur: the turn failed: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // The list: a header, and the failed thread says so.
    let out = centaur(&stack, &["threads"], &[]).await;
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut rows = table.lines();
    let header = rows.next().unwrap();
    for column in ["TITLE", "HARNESS", "STATUS", "ACTIVE", "THREAD KEY"] {
        assert!(header.contains(column), "{table}");
    }
    let row = rows
        .find(|r| r.ends_with(&key))
        .unwrap_or_else(|| panic!("no row for {key} in\n{table}"));
    assert!(row.contains(" failed "), "{row}");
    assert!(row.contains(" now ") || row.contains("s ago "), "{row}");
    // A narrow terminal keeps the title and shortens the key.
    let out = centaur(&stack, &["threads"], &[("COLUMNS", "70")]).await;
    let table = text(&out.stdout);
    assert!(table.lines().all(|l| l.chars().count() <= 70), "{table}");
    assert!(table.contains("echo x; exit 3"), "{table}");
    assert!(
        !table.contains(&key) && table.contains(&key[..12]),
        "{table}"
    );
}

/// A turn that waits for an approval: `send` prints the `centaur approve` line `attach`
/// prints, on stderr, and keeps waiting; deciding it lets the turn finish. The approval
/// policy comes from `--approval-policy`.
#[tokio::test]
async fn send_tells_how_to_decide_an_approval_and_waits() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let stack = LocalStack::start("cli-send-approval", 0, json!({})).await;
    let mut send = tokio::process::Command::new(cli_binary())
        .args([
            "send",
            "--harness",
            "shell",
            "--approval-policy",
            "always",
            "--message",
            "echo approved-run",
        ])
        .env("CENTAUR_API_URL", &stack.server.url)
        .env("CENTAUR_API_TOKEN", ADMIN_KEY)
        .env("HOME", stack.dir.join("home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(send.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    let approve = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            said.push(line.clone());
            if let Some(command) = line.trim().strip_prefix("centaur approve ") {
                return command.split_whitespace().map(str::to_owned).collect();
            }
        }
        Vec::new()
    })
    .await
    .expect("send printed the approve line");
    assert!(
        said.iter()
            .any(|l| l.starts_with("approval needed: ") && l.contains("echo approved-run")),
        "{said:?}"
    );
    let [key, approval_id, ..] = &approve[..] else {
        panic!("{said:?}");
    };
    assert!(key.starts_with("cli:"), "{said:?}");
    // Still waiting: the command has not run.
    assert!(send.try_wait().unwrap().is_none(), "send returned early");
    let out = centaur(&stack, &["approve", key, approval_id], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), send.wait_with_output())
        .await
        .expect("send ends with the turn")
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(stdout, format!("thread_key={key}\napproved-run\n"));
}

/// The help pages: every flag described, examples at the end, the harnesses and approval
/// policies named, and no empty `[env: …=]` for unset variables.
#[tokio::test]
async fn help_pages_describe_flags_and_end_with_examples() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(cli_binary())
            .args(args)
            .env_remove("CENTAUR_API_URL")
            .env_remove("CENTAUR_API_TOKEN")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        text(&out.stdout)
    };
    for args in [
        &["--help"][..],
        &["send", "--help"],
        &["attach", "--help"],
        &["threads", "--help"],
        &["approve", "--help"],
        &["dev", "--help"],
        &["dev", "doctor", "--help"],
        &["dev", "logs", "--help"],
        &["dev", "keys", "--help"],
        &["completions", "--help"],
    ] {
        let page = help(args);
        assert!(
            page.contains("\nExamples:\n  centaur "),
            "{args:?}:\n{page}"
        );
        assert!(!page.contains("=]"), "{args:?}:\n{page}");
        // Every option has words after the flag, or under it (the long form).
        let lines: Vec<&str> = page.lines().collect();
        for (at, line) in lines.iter().enumerate() {
            if !line.trim_start().starts_with("--") {
                continue;
            }
            let words = line
                .trim_start()
                .split("  ")
                .filter(|w| !w.trim().is_empty());
            let below = lines.get(at + 1).map_or("", |l| l.trim());
            assert!(
                words.count() >= 2 || !(below.is_empty() || below.starts_with('-')),
                "{args:?}: undescribed `{line}`"
            );
        }
    }
    let send = help(&["send", "--help"]);
    assert!(
        send.contains("[possible values: codex, claude-code, amp, shell, echo]"),
        "{send}"
    );
    assert!(
        send.contains("[possible values: never, on-request, always]"),
        "{send}"
    );
    // The policy's default is the thread's earlier choice, else the server's: not a fixed one.
    let words = send.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            "applies from this turn on and is kept for the thread; without it, the thread's earlier choice, else the server's default"
        ),
        "{send}"
    );
    assert!(!send.contains("[default: on-request]"), "{send}");
}

/// Completion scripts for bash, zsh and fish, and a man page, from the command line itself.
#[tokio::test]
async fn completions_and_the_man_page() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(cli_binary())
            .args(args)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.contains("complete -F _centaur"), "{bash}");
    assert!(bash.contains("--approval-policy"), "{bash}");
    let dir = temp_dir("cli-completions");
    std::fs::write(dir.join("centaur.bash"), &bash).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(dir.join("centaur.bash"))
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", text(&syntax.stderr));
    assert!(run(&["completions", "zsh"]).starts_with("#compdef centaur"));
    assert!(run(&["completions", "fish"]).contains("complete -c centaur"));
    let man = run(&["man"]);
    assert!(man.contains(".TH centaur 1"), "{man}");
    assert!(man.contains("centaur\\-send(1)"), "{man}");
    // The pages it refers to are there too.
    let commands = run(&["man", "--list"]);
    assert!(commands.lines().any(|c| c == "send"), "{commands}");
    for command in commands.lines() {
        let page = run(&["man", command]);
        assert!(
            page.contains(&format!(".TH centaur-{command} 1")),
            "{command}: {page}"
        );
    }
    let out = std::process::Command::new(cli_binary())
        .args(["completions", "tcsh-ish"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
