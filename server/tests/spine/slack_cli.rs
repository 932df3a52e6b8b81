//! Slack from the terminal: `centaur attach <Slack message link>` finds the thread (a
//! top-level message's link, a reply's with `thread_ts`, a reply's without it through the
//! server), and `centaur dev slack` turns a local stack into a Socket Mode bot (tokens kept
//! private, a refused token named with its fix).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::json;

use centaur_server::slack::settings::SlackMode;
use centaur_test_support::binaries::{cli_binary, text};
use centaur_test_support::local_stack::LocalStack;
use centaur_test_support::process::free_port;
use centaur_test_support::server::ADMIN_KEY;
use centaur_test_support::slack::{APP_TOKEN, BOT_TOKEN, FakeSlack, TEAM_DOMAIN};
use centaur_test_support::temp::temp_dir;

/// Runs `centaur` with `args` against the stack, as its admin.
async fn centaur(stack: &LocalStack, args: &[&str]) -> Output {
    tokio::process::Command::new(cli_binary())
        .args(args)
        .env("CENTAUR_API_URL", &stack.server.url)
        .env("CENTAUR_API_TOKEN", ADMIN_KEY)
        .env("HOME", stack.dir.join("home"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("centaur runs")
}

/// Slack's link to message `ts` of `channel` (`p` and the ts without its dot), in `thread`
/// when given, as "Copy link" makes it.
fn link(channel: &str, ts: &str, thread: Option<&str>) -> String {
    let message = ts.replace('.', "");
    let mut link = format!("https://{TEAM_DOMAIN}.slack.com/archives/{channel}/p{message}");
    if let Some(thread) = thread {
        link.push_str(&format!("?thread_ts={thread}&cid={channel}"));
    }
    link
}

/// A thread whose key is a Slack thread's (`POST /agent/execute` takes `slack:` keys), one
/// echo turn on it; then its top-level message's link and a reply's link with `thread_ts`
/// both attach to it; `interrupt` takes links too; a link to nothing and a malformed link
/// fail as the docs say, without waiting.
#[tokio::test]
async fn attach_follows_a_slack_thread_by_a_message_link() {
    let stack = LocalStack::start("slack-cli-attach", 0, json!({})).await;
    let key = "slack:C1:1700000000.000100";
    let done = stack.turn(key, "echo", "hello from slack").await;
    assert_eq!(done["type"], "execution.completed", "{done}");

    for link in [
        link("C1", "1700000000.000100", None),
        link("C1", "1700000050.000200", Some("1700000000.000100")),
    ] {
        let out = centaur(&stack, &["attach", &link, "--exit-on-terminal"]).await;
        assert_eq!(out.status.code(), Some(0), "{link}: {}", text(&out.stderr));
        let said = text(&out.stdout);
        assert!(
            said.starts_with("user: hello from slack\n"),
            "{link}: {said}"
        );
        assert!(said.ends_with("— turn completed\n"), "{link}: {said}");
    }

    let out = centaur(
        &stack,
        &["interrupt", &link("C1", "1700000000.000100", None)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("nothing running on {key}\n"));

    // A message of no thread of Centaur's: named, exit 1, at once (a key would be waited for).
    for (link, ts) in [
        (
            link("C1", "1700000099.000300", Some("1700000099.000300")),
            "1700000099.000300",
        ),
        (link("C1", "1700000077.000400", None), "1700000077.000400"),
    ] {
        let started = std::time::Instant::now();
        let out = centaur(&stack, &["attach", &link]).await;
        assert_eq!(out.status.code(), Some(1), "{link}: {}", text(&out.stderr));
        let error = text(&out.stderr);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(
            error.contains(&format!("Slack message {ts} in channel C1")),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{link}");
    }

    // A malformed link: what is wrong with it, exit 2.
    let out = centaur(
        &stack,
        &["attach", "https://acme.slack.com/archives/C1/p12"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not `p` followed by at least 7 digits"),
        "{}",
        text(&out.stderr)
    );
}

/// A reply's link copied without `thread_ts` names only the reply: the server knows which
/// thread holds it (`GET /agent/slack/messages/{channel}/{ts}`). The thread starts with a
/// mention in a fake Slack (webhook mode), the reply continues it, and `attach` on the
/// reply's bare link follows that thread, each message with its Slack author.
#[tokio::test]
async fn a_reply_link_without_its_thread_is_found_through_the_server() {
    let fake = FakeSlack::start().await;
    let stack = LocalStack::start_with("slack-cli-reply", 0, json!({}), |config, _| {
        fake.configure(config, SlackMode::Webhook);
        config.slack.harness = Some(centaur_protocol::Harness::Echo);
    })
    .await;
    fake.deliver_to(&stack.server.url);

    let parent = fake.post("U1", "C1", "<@U0BOT> say hello", None).await;
    let key = format!("slack:C1:{parent}");
    // The mention is taken in the background: the thread appears, then its turn ends.
    let thread = format!(
        "/agent/threads/{}",
        centaur_protocol::ThreadKey::parse(&key)
            .unwrap()
            .to_path_segment()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack
        .server
        .admin(reqwest::Method::GET, &thread, serde_json::Value::Null)
        .await
        .0
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the mention never made thread {key}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack
        .until(&key, 0, |e| e["type"] == "execution.completed")
        .await;
    let reply = fake
        .post("U2", "C1", "<@U0BOT> and goodbye", Some(&parent))
        .await;
    // The reply is taken (stored and remembered) by the server's inbox workers.
    let lookup = format!("/agent/slack/messages/C1/{reply}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, found) = stack
            .server
            .admin(reqwest::Method::GET, &lookup, serde_json::Value::Null)
            .await;
        if status == 200 {
            assert_eq!(found["thread_key"], key.as_str(), "{found}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never knew reply {reply} ({status} {found})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The reply's bare link alone does not name the thread: a link to its own ts.
    assert_ne!(reply, parent);

    let out = centaur(
        &stack,
        &["attach", &link("C1", &reply, None), "--exit-on-terminal"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("Ann (Slack): "), "{said}");
    assert!(said.contains("Bob (Slack): "), "{said}");
}

/// `centaur` with `CENTAUR_HOME=home` and nothing else pointing it at a server.
fn dev_command(home: &Path, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(cli_binary());
    command
        .args(args)
        .env("CENTAUR_HOME", home)
        .env("HOME", home.join("user"))
        .env("npm_config_offline", "true")
        .env_remove("CENTAUR_API_URL")
        .env_remove("CENTAUR_API_TOKEN")
        .env_remove("CENTAUR_DEV_SLACK_API_URL")
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("XDG_DATA_HOME")
        .env_remove("DATABASE_URL")
        .env_remove("SLACK_BOT_TOKEN")
        .env_remove("SLACK_APP_TOKEN");
    command
}

/// Runs `centaur` in `home` with `input` on a piped (not terminal) stdin.
async fn dev(home: &Path, args: &[&str], input: &str) -> Output {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::from(dev_command(home, args));
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("centaur runs");
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input.as_bytes()).await;
    drop(stdin);
    child.wait_with_output().await.expect("centaur ends")
}

/// A fresh `CENTAUR_HOME`; dropped, its stack is stopped and the folder removed.
struct Home(PathBuf);

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::process::Command::new(cli_binary())
            .args(["dev", "down"])
            .env("CENTAUR_HOME", &self.0)
            .env("HOME", self.0.join("user"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `centaur dev slack` without a terminal reads the tokens from stdin only when told, checks
/// their shape (never echoing them), keeps them 0600 in the home's secrets; `dev doctor` says
/// whether Slack is set up. A stack started with a token Slack refuses does not start, and
/// `centaur dev` says which token and the fix in its one line; with good tokens the stack's
/// server connects to Slack in Socket Mode. `--off` forgets them.
#[tokio::test]
async fn dev_slack_makes_the_local_stack_a_socket_mode_bot() {
    let home = Home(temp_dir("dev-slack"));
    let fake = FakeSlack::start().await;
    let api = fake.api_url();
    let tokens = |bot: &str| format!("{bot}\n{APP_TOKEN}\n");

    let out = dev(&home.0, &["dev", "slack"], &tokens(BOT_TOKEN)).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--tokens-stdin"),
        "{}",
        text(&out.stderr)
    );

    let out = dev(
        &home.0,
        &["dev", "slack", "--tokens-stdin"],
        "xoxp-1234-user-token-secret\nxapp-1-A1-2-app\n",
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let error = text(&out.stderr);
    assert_eq!(error.lines().count(), 1, "{error}");
    assert!(error.contains("xoxb-"), "{error}");
    assert!(!error.contains("secret"), "{error}");
    assert!(!home.0.join("secrets/slack-bot-token").exists());

    let out = dev(&home.0, &["dev", "doctor"], "").await;
    assert!(
        text(&out.stdout).contains("Slack              off"),
        "{}",
        text(&out.stdout)
    );

    // A bot token of the right shape that Slack refuses: stored, then refused at start.
    let wrong = "xoxb-0000-0000-notarealtoken";
    let out = dev(
        &home.0,
        &["dev", "slack", "--tokens-stdin", "--api-url", &api],
        &tokens(wrong),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the next `centaur dev` runs the bot in Socket Mode"),
        "{}",
        text(&out.stderr)
    );
    for file in ["slack-bot-token", "slack-app-token"] {
        let path = home.0.join("secrets").join(file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
    }
    assert_eq!(
        std::fs::read_to_string(home.0.join("secrets/slack-bot-token")).unwrap(),
        wrong
    );
    let out = dev(&home.0, &["dev", "doctor"], "").await;
    assert!(
        text(&out.stdout).contains("the stack runs the bot in Socket Mode"),
        "{}",
        text(&out.stdout)
    );

    let port = free_port().to_string();
    let out = dev(&home.0, &["dev", "--detach", "--port", &port], "").await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let error = text(&out.stderr);
    let said = error
        .lines()
        .find(|l| l.starts_with("centaur: "))
        .unwrap_or_default();
    assert!(
        said.contains("SLACK_BOT_TOKEN was refused by Slack (invalid_auth)"),
        "{error}"
    );
    assert!(said.contains("`centaur dev slack` stores it"), "{error}");
    assert!(!error.contains(wrong), "{error}");
    assert!(!home.0.join("stack.json").exists() || !listening(&port));

    // The right tokens: the server dials Slack's Socket Mode.
    let out = dev(
        &home.0,
        &["dev", "slack", "--tokens-stdin", "--api-url", &api],
        &tokens(BOT_TOKEN),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = dev(&home.0, &["dev", "--detach", "--port", &port], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("✓ Slack: the bot runs in Socket Mode"),
        "{}",
        text(&out.stderr)
    );
    fake.wait_until(Duration::from_secs(30), |fake| {
        fake.socket_connections() >= 1
    })
    .await;

    let out = dev(&home.0, &["dev", "slack", "--off"], "").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`centaur dev down && centaur dev`"),
        "{}",
        text(&out.stderr)
    );
    assert!(!home.0.join("secrets/slack-bot-token").exists());
    assert!(!home.0.join("secrets/slack-app-token").exists());
}

fn listening(port: &str) -> bool {
    std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
}

/// In a terminal, `centaur dev slack` asks for each token without showing it, refuses one of
/// the wrong kind with where the right one is and asks again; run again, Enter keeps both.
#[tokio::test]
async fn dev_slack_in_a_terminal_asks_for_both_tokens_hidden() {
    let home = Home(temp_dir("dev-slack-tty"));
    let mut tty = centaur_test_support::pty::Pty::spawn(
        &mut dev_command(&home.0, &["dev", "slack"]),
        30,
        160,
    );
    tty.shows("Bot User OAuth Token", Duration::from_secs(30))
        .await;
    tty.answer_hidden(
        "Bot User OAuth Token",
        &format!("{APP_TOKEN}\r"),
        Duration::from_secs(10),
    )
    .await;
    tty.shows("must start with xoxb-", Duration::from_secs(10))
        .await;
    tty.answer_hidden(
        "Bot User OAuth Token",
        &format!("{BOT_TOKEN}\r"),
        Duration::from_secs(10),
    )
    .await;
    tty.shows("App-level token", Duration::from_secs(10)).await;
    tty.answer_hidden(
        "App-level token",
        &format!("{APP_TOKEN}\r"),
        Duration::from_secs(10),
    )
    .await;
    let status = tty.exit(Duration::from_secs(30)).await;
    let screen = tty.contents();
    assert!(status.success(), "{screen}");
    assert!(
        screen.contains("the next `centaur dev` runs the bot in Socket Mode"),
        "{screen}"
    );
    // Typed, never shown.
    assert!(!screen.contains(&BOT_TOKEN[5..]), "{screen}");
    assert!(!screen.contains(&APP_TOKEN[5..]), "{screen}");
    let saved = |file: &str| std::fs::read_to_string(home.0.join("secrets").join(file)).unwrap();
    assert_eq!(saved("slack-bot-token"), BOT_TOKEN);
    assert_eq!(saved("slack-app-token"), APP_TOKEN);

    let mut tty = centaur_test_support::pty::Pty::spawn(
        &mut dev_command(&home.0, &["dev", "slack"]),
        30,
        160,
    );
    tty.shows("Bot User OAuth Token", Duration::from_secs(30))
        .await;
    tty.answer_hidden("Bot User OAuth Token", "\r", Duration::from_secs(10))
        .await;
    tty.shows("App-level token", Duration::from_secs(10)).await;
    tty.answer_hidden("App-level token", "\r", Duration::from_secs(10))
        .await;
    let status = tty.exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{}", tty.contents());
    assert_eq!(saved("slack-bot-token"), BOT_TOKEN);
    assert_eq!(saved("slack-app-token"), APP_TOKEN);
}
