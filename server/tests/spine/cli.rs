//! The `centaur` command against a real server with real sandboxes.

use std::process::{Command, Output};

use serde_json::json;

use crate::sandboxes::LocalStack;
use crate::support::*;

fn centaur(stack: &LocalStack, args: &[&str]) -> Output {
    Command::new(cli_binary())
        .args(args)
        .env("CENTAUR_API_URL", &stack.server.url)
        .env("CENTAUR_API_TOKEN", ADMIN_KEY)
        .env("HOME", stack.dir.join("home"))
        .output()
        .expect("centaur runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn send_attach_threads_and_exit_codes() {
    let stack = LocalStack::start("cli", 0, json!({})).await;
    let stack = std::sync::Arc::new(stack);

    // One turn from a script: the thread key first, then the answer.
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || {
        centaur(
            &s,
            &[
                "send",
                "--harness",
                "shell",
                "--message",
                "echo hello",
                "--exit-on-terminal",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let first = lines.next().unwrap();
    assert!(first.starts_with("thread_key=cli:"), "{stdout}");
    assert_eq!(lines.next(), Some("hello"), "{stdout}");
    let key = first.trim_start_matches("thread_key=").to_owned();

    // The same thread, followed from the start as lines, stopping at the turn's end.
    let (s, k) = (stack.clone(), key.clone());
    let out =
        tokio::task::spawn_blocking(move || centaur(&s, &["attach", &k, "--exit-on-terminal"]))
            .await
            .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert_eq!(
        printed, "user: echo hello\n— turn started\n$ echo hello\nhello\n— turn completed\n",
        "{printed}"
    );
    // Every event as JSON, after a given id.
    let (s, k) = (stack.clone(), key.clone());
    let out = tokio::task::spawn_blocking(move || {
        centaur(
            &s,
            &[
                "attach",
                &k,
                "--after-event-id",
                "4",
                "--all-events",
                "--exit-on-terminal",
            ],
        )
    })
    .await
    .unwrap();
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
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || centaur(&s, &["threads"]))
        .await
        .unwrap();
    assert!(text(&out.stdout).contains(&key), "{}", text(&out.stdout));

    // A failed turn exits 1 with one line on stderr.
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || {
        centaur(
            &s,
            &[
                "send",
                "--harness",
                "shell",
                "--message",
                "sleep 5",
                "--max-duration-ms",
                "500",
            ],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the turn failed"),
        "{}",
        text(&out.stderr)
    );

    // No server, a wrong token, a usage error: 3, 3, 2, each with the fix named.
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(cli_binary())
            .args([
                "threads",
                "--api-url",
                "http://127.0.0.1:9",
                "--api-token",
                "x",
            ])
            .env("HOME", s.dir.join("home"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot reach the Centaur server at http://127.0.0.1:9"),
        "{}",
        text(&out.stderr)
    );
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(cli_binary())
            .args(["threads", "--api-token", "wrong-token"])
            .env("CENTAUR_API_URL", &s.server.url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("centaur login"),
        "{}",
        text(&out.stderr)
    );
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || centaur(&s, &["send"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let s = stack.clone();
    let out = tokio::task::spawn_blocking(move || centaur(&s, &["tools", "list"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not available"),
        "{}",
        text(&out.stderr)
    );
}
