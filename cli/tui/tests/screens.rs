//! What the TUI shows, as snapshots of the screen, driven by recorded event streams. The
//! state is a function of the events, so each screen is exactly reproducible.
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use centaur_client::api::{Code, Failure};
use centaur_protocol::api::{HarnessInfo, HarnessList, ThreadList, ThreadSummary};
use centaur_protocol::slack::{SlackOrigin, SlackUser};
use centaur_protocol::{Author, ErrorCode, Event, EventBody, Harness, Role, ThreadKey};
use centaur_test_support::script::{Script, long_thread};
use centaur_test_support::tui::Tui;
use std::time::Instant;

use centaur_tui::app::{ARM_DELAY, App, AppEvent, Start};
use centaur_tui::highlight;
use ratatui::crossterm::event::{KeyCode, KeyModifiers};

fn app_with(events: &[Event]) -> Tui {
    Tui::following(events)
}

#[test]
fn streaming_text() {
    let mut script = Script::new();
    script.thread("codex");
    script.user("How do I list the files, with sizes?");
    script.reasoning("The user wants `ls` with human-readable sizes.");
    for piece in [
        "## Listing files\n\nUse `ls` with ",
        "**two** flags:\n\n- `-l` long format\n",
        "- `-h` human sizes\n\n```sh\nls -lh ",
    ] {
        script.delta(piece);
    }
    script.wait_ms(3_000);
    let mut app = app_with(script.events());
    insta::assert_snapshot!(app.screen(80, 24, script.now()));
}

#[test]
fn long_command_output_folded_then_open() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("seq 1 40");
    script.command("c1", "seq 1 40");
    for n in 1..=40 {
        script.output("c1", &format!("{n}\n"));
    }
    script.finished("c1", 0);
    script.completed("1\n…\n40");
    let mut app = app_with(script.events());
    insta::assert_snapshot!("long_output_folded", app.screen(80, 20, script.now()));
    app.key(KeyCode::Char('o'), KeyModifiers::CONTROL);
    insta::assert_snapshot!("long_output_open", app.screen(80, 20, script.now()));
    // Scrolled up by a page: the earlier lines, and a note that more is below.
    app.key(KeyCode::PageUp, KeyModifiers::NONE);
    insta::assert_snapshot!("long_output_scrolled", app.screen(80, 20, script.now()));
}

/// An approval's keys show dimmed, without brackets, until they count; then as keys.
#[test]
fn an_approval_with_another_waiting() {
    let mut script = Script::new();
    script.thread("codex");
    script.user("clean the build and rebuild");
    script.delta("I'll clean first.");
    script.agent("I'll clean first.");
    let mut app = app_with(script.events());
    app.clock.set(Instant::now());
    let first = script.approval("run `rm -rf target`");
    script.approval("run `cargo build`");
    for event in &script.events()[script.events().len() - 2..] {
        app.handle(AppEvent::Server(Box::new(event.clone())));
    }
    let unarmed = app.screen(80, 22, script.now());
    assert!(
        unarmed.contains("│  y  approve    a  approve for the session    n  deny"),
        "{unarmed}"
    );
    // The keys count from the frame that showed them (the event loop says it drew one).
    app.drawn();
    app.clock.advance(ARM_DELAY);
    insta::assert_snapshot!("approval_first_of_two", app.screen(80, 22, script.now()));
    // Decided in Slack: the overlay moves on to the next one.
    script.resolved(first, "approve", "slack:U024BE7LH");
    app.handle(AppEvent::Server(Box::new(
        script.events().last().unwrap().clone(),
    )));
    app.screen(80, 22, script.now());
    app.drawn();
    app.clock.advance(ARM_DELAY);
    insta::assert_snapshot!("approval_second", app.screen(80, 22, script.now()));
}

/// A command with a right-to-left override and a zero-width space: the approval shows them
/// written out, with a line saying so, in the box and in the transcript.
#[test]
fn an_approval_with_invisible_characters() {
    let mut script = Script::new();
    script.thread("codex");
    script.user("tidy up");
    let mut app = app_with(script.events());
    app.clock.set(Instant::now());
    script.approval("run `echo safe \u{202e}hs.x | lruc\u{202c} \u{200b}`");
    app.handle(AppEvent::Server(Box::new(
        script.events().last().unwrap().clone(),
    )));
    app.screen(80, 22, script.now());
    app.drawn();
    app.clock.advance(ARM_DELAY);
    let screen = app.screen(80, 22, script.now());
    assert!(!screen.contains('\u{202e}'), "{screen}");
    assert!(!screen.contains('\u{200b}'), "{screen}");
    insta::assert_snapshot!("approval_invisible_characters", screen);
}

#[test]
fn a_failed_turn() {
    let mut script = Script::new();
    script.thread("claude-code");
    script.user("deploy it");
    script.command("c1", "curl -sf https://deploy.internal/hook");
    script.egress_denied("deploy.internal");
    script.output("c1", "curl: (56) CONNECT tunnel failed, response 403\n");
    script.finished("c1", 56);
    script.usage(5123, 210);
    script.failed("the harness exited with status 1: rate limited by the model API");
    let mut app = app_with(script.events());
    insta::assert_snapshot!(app.screen(80, 18, script.now()));
}

#[test]
fn a_narrow_terminal() {
    let mut script = Script::new();
    script.thread("codex");
    script.user("Explain the retry policy in one paragraph, with an example.");
    script.stream(
        "Retries back off **exponentially**, from 100 ms up to 2 s, and stop after the server answers.\n\n```rust\nlet delay = (delay * 2).min(MAX);\n```\n",
        16,
    );
    script.command("c1", "grep -rn backoff src/");
    script.output(
        "c1",
        "src/client.rs:42:    let mut backoff = Duration::from_millis(100);\n",
    );
    script.finished("c1", 0);
    script.completed("done");
    let mut app = app_with(script.events());
    insta::assert_snapshot!(app.screen(36, 30, script.now()));
}

/// A listed thread, active `minutes` ago.
fn summary(
    key: &str,
    title: Option<&str>,
    harness: Harness,
    minutes: i64,
    status: &str,
    waiting_approvals: u32,
) -> ThreadSummary {
    let now = Script::new().now();
    ThreadSummary {
        thread_key: ThreadKey::parse(key).unwrap(),
        platform: key.split(':').next().unwrap().to_owned(),
        harness,
        persona: None,
        status: serde_json::from_value(serde_json::json!(status)).unwrap(),
        title: title.map(str::to_owned),
        waiting_approvals,
        slack: None,
        created_at: now - chrono::Duration::minutes(minutes + 5),
        last_activity_at: now - chrono::Duration::minutes(minutes),
        last_event_id: 12,
    }
}

/// Where a Slack thread lives and who started it.
fn in_slack(
    mut thread: ThreadSummary,
    channel: &str,
    channel_name: Option<&str>,
    who: &str,
    name: Option<&str>,
) -> ThreadSummary {
    thread.slack = Some(SlackOrigin {
        team_id: "T024BE7LD".into(),
        channel_id: channel.into(),
        channel_name: channel_name.map(str::to_owned),
        thread_ts: "1763804400.000100".into(),
        started_by: SlackUser {
            id: who.into(),
            name: name.map(str::to_owned),
        },
    });
    thread
}

/// The thread list with four threads: titled or not, one waiting for two approvals (started
/// in Slack), one whose last turn failed.
fn listing() -> Tui {
    listing_with(Vec::new())
}

/// [`listing`] with `more` threads after its four.
fn listing_with(more: Vec<ThreadSummary>) -> Tui {
    highlight::load_now();
    let (app, _) = App::new("http://127.0.0.1:8080".into(), &Start::default());
    let mut app = Tui::from(app);
    let mut threads = vec![
        in_slack(
            summary(
                "slack:C024BE91L:1763804400.000100",
                Some("Why does the nightly build time out?"),
                Harness::Codex,
                0,
                "running",
                2,
            ),
            "C024BE91L",
            Some("general"),
            "U024BE7LH",
            Some("Ann"),
        ),
        summary(
            "cli:0196f1c2-0000-7000-8000-000000000001",
            Some("List the files, with sizes"),
            Harness::Shell,
            42,
            "idle",
            0,
        ),
        summary(
            "cli:0196f1c2-0000-7000-8000-000000000002",
            Some("Deploy the staging branch"),
            Harness::ClaudeCode,
            50,
            "failed",
            0,
        ),
        summary(
            "api:nightly-report",
            None,
            Harness::ClaudeCode,
            60 * 26,
            "idle",
            0,
        ),
    ];
    threads.extend(more);
    app.handle(AppEvent::Threads(Ok(ThreadList {
        threads,
        next_before: None,
    })));
    app
}

/// Titles first, the key beside them; a badge on the thread waiting for approvals; the
/// failed one says so. The filter matches titles; Enter on no match says so.
#[test]
fn the_thread_list_filters() {
    let now = Script::new().now();
    let mut app = listing();
    insta::assert_snapshot!("threads_all", app.screen(100, 8, now));
    for c in "slack".chars() {
        app.key(KeyCode::Char(c), KeyModifiers::NONE);
    }
    insta::assert_snapshot!("threads_filtered", app.screen(100, 8, now));
    app.key(KeyCode::Esc, KeyModifiers::NONE);
    for c in "staging".chars() {
        app.key(KeyCode::Char(c), KeyModifiers::NONE);
    }
    let by_title = app.screen(100, 8, now);
    assert!(by_title.contains("Deploy the staging branch"), "{by_title}");
    assert!(!by_title.contains("nightly"), "{by_title}");
    app.key(KeyCode::Char('x'), KeyModifiers::NONE);
    app.key(KeyCode::Enter, KeyModifiers::NONE);
    insta::assert_snapshot!("threads_no_match", app.screen(100, 8, now));
}

/// Slack threads say their channel (or DM) and who started them (by name, else id); Ctrl-S
/// shows only them (said in the header, offered in the footer), and the filter knows channels
/// and people.
#[test]
fn the_thread_list_shows_slack_threads_and_filters_to_them() {
    let now = Script::new().now();
    let dm = in_slack(
        summary(
            "slack:D0DM00001:1763804400.000300",
            Some("Can you summarise yesterday's incident?"),
            Harness::Echo,
            90,
            "idle",
            0,
        ),
        "D0DM00001",
        None,
        "U0BOB0001",
        None,
    );
    let mut app = listing_with(vec![dm]);
    insta::assert_snapshot!("threads_with_slack", app.screen(110, 9, now));
    app.key(KeyCode::Char('s'), KeyModifiers::CONTROL);
    insta::assert_snapshot!("threads_slack_only", app.screen(110, 9, now));
    for c in "#general".chars() {
        app.key(KeyCode::Char(c), KeyModifiers::NONE);
    }
    let general = app.screen(110, 9, now);
    assert!(general.contains("Why does the nightly build"), "{general}");
    assert!(!general.contains("incident"), "{general}");
    app.key(KeyCode::Esc, KeyModifiers::NONE);
    for c in "dm".chars() {
        app.key(KeyCode::Char(c), KeyModifiers::NONE);
    }
    let dms = app.screen(110, 9, now);
    assert!(dms.contains("incident"), "{dms}");
    assert!(!dms.contains("nightly build"), "{dms}");
    // Back to every thread; a list without Slack threads does not offer the toggle.
    app.key(KeyCode::Esc, KeyModifiers::NONE);
    app.key(KeyCode::Char('s'), KeyModifiers::CONTROL);
    let all = app.screen(110, 9, now);
    assert!(
        all.contains("List the files") && all.contains("Ctrl-S Slack only"),
        "{all}"
    );
    let (plain, _) = App::new("http://127.0.0.1:8080".into(), &Start::default());
    let mut plain = Tui::from(plain);
    plain.handle(AppEvent::Threads(Ok(ThreadList {
        threads: vec![summary("api:x", Some("x"), Harness::Shell, 1, "idle", 0)],
        next_before: None,
    })));
    let plain = plain.screen(110, 6, now);
    assert!(!plain.contains("Ctrl-S"), "{plain}");
    // Only Slack threads, and none: says how to start one.
    let (none, _) = App::new("http://127.0.0.1:8080".into(), &Start::default());
    let mut none = Tui::from(none);
    none.handle(AppEvent::Threads(Ok(ThreadList {
        threads: vec![summary("api:x", Some("x"), Harness::Shell, 1, "idle", 0)],
        next_before: None,
    })));
    none.key(KeyCode::Char('s'), KeyModifiers::CONTROL);
    insta::assert_snapshot!("threads_slack_only_none", none.screen(80, 6, now));
}

/// A message from Slack says who wrote it, and a decision made there who made it, by name;
/// names are shown as text, whatever they hold.
#[test]
fn slack_people_in_the_transcript() {
    let mut script = Script::new();
    script.thread("shell");
    script.push(EventBody::MessageCreated {
        message_id: uuid::Uuid::from_u128(7),
        role: Role::User,
        text: "run the smoke tests".into(),
        author: Some(Author::Slack(SlackUser {
            id: "U024BE7LH".into(),
            name: Some("Ann\x1b]0;pwned\x07 Lee".into()),
        })),
    });
    script.user("and show me the log");
    let approval = script.approval("run `./smoke.sh`");
    script.resolved(approval, "approve", "slack:U024BE7LH (Ann Lee)");
    script.command("c1", "./smoke.sh");
    script.output("c1", "ok\n");
    script.finished("c1", 0);
    script.completed("All smoke tests pass.");
    let mut app = app_with(script.events());
    let screen = app.screen(80, 18, script.now());
    assert!(!screen.contains("pwned"), "{screen}");
    insta::assert_snapshot!("slack_people", screen);
}

/// On a narrow terminal the titles stay whole and the keys go.
#[test]
fn the_thread_list_on_a_narrow_terminal() {
    let now = Script::new().now();
    let mut app = listing();
    insta::assert_snapshot!(app.screen(64, 8, now));
}

fn harness_list() -> HarnessList {
    let info = |harness, reason: Option<&str>| HarnessInfo {
        harness,
        available: reason.is_none(),
        unavailable_reason: reason.map(str::to_owned),
    };
    HarnessList {
        harnesses: vec![
            info(
                Harness::Codex,
                Some("needs an OpenAI key (`centaur dev keys`)"),
            ),
            info(
                Harness::ClaudeCode,
                Some("needs an Anthropic key (`centaur dev keys`)"),
            ),
            info(Harness::Amp, Some("needs an Amp key (`centaur dev keys`)")),
            info(Harness::Shell, None),
            info(Harness::Echo, None),
        ],
        default: Harness::Shell,
    }
}

/// The picker starts on the server's default; harnesses without a key are dimmed with the
/// reason, and Enter on one says it instead of opening a thread.
#[test]
fn the_harness_picker_says_what_cannot_run() {
    let now = Script::new().now();
    let mut app = listing();
    app.handle(AppEvent::Harnesses(Ok(harness_list())));
    app.key(KeyCode::Char('n'), KeyModifiers::CONTROL);
    insta::assert_snapshot!("picker", app.screen(90, 14, now));
    for _ in 0..3 {
        app.key(KeyCode::Up, KeyModifiers::NONE);
    }
    app.key(KeyCode::Enter, KeyModifiers::NONE);
    insta::assert_snapshot!("picker_refuses", app.screen(90, 14, now));
}

/// The server refused the turn for its harness: its sentence in the notice, the thread still
/// new and the message back to send with another harness.
#[test]
fn a_refused_harness() {
    highlight::load_now();
    let (app, _) = App::new(
        "http://127.0.0.1:8080".into(),
        &Start {
            harness: Some(Harness::Codex),
            new_thread: true,
            ..Start::default()
        },
    );
    let mut app = Tui::from(app);
    for c in "fix the flaky test".chars() {
        app.key(KeyCode::Char(c), KeyModifiers::NONE);
    }
    app.key(KeyCode::Enter, KeyModifiers::NONE);
    let key = app.thread.as_ref().unwrap().key.clone();
    app.handle(AppEvent::Executed {
        key,
        result: Err(Failure::Api {
            code: Code::Known(ErrorCode::HarnessUnavailable),
            message: "codex cannot run: it needs an OpenAI key (`centaur dev keys`)".into(),
        }),
    });
    let text = app.screen(100, 10, Script::new().now());
    // The key is made anew each run: shown as as many `#`.
    let key = app.thread.as_ref().unwrap().key.to_string();
    insta::assert_snapshot!(text.replace(&key, &format!("cli:{}", "#".repeat(key.len() - 4))));
}

/// Ctrl-P's policy and the thread's listed title in the status line.
#[test]
fn the_approval_policy_and_title_in_the_status_line() {
    let mut script = Script::for_thread("api:nightly-report");
    script.thread("shell");
    script.user("make report");
    script.completed("done");
    let mut app = app_with(script.events());
    app.handle(AppEvent::Threads(Ok(ThreadList {
        threads: vec![summary(
            "api:nightly-report",
            Some("The nightly report"),
            Harness::Shell,
            1,
            "idle",
            0,
        )],
        next_before: None,
    })));
    for _ in 0..3 {
        app.key(KeyCode::Char('p'), KeyModifiers::CONTROL);
    }
    insta::assert_snapshot!(app.screen(120, 12, script.now()));
}

#[test]
fn help_lists_the_keys() {
    let mut script = Script::new();
    script.thread("echo");
    let mut app = app_with(script.events());
    app.key(KeyCode::F(1), KeyModifiers::NONE);
    insta::assert_snapshot!(app.screen(100, 30, script.now()));
}

/// Drawing as events arrive (with the cache) gives the same screen as drawing everything at
/// once, at any width, after a resize too.
#[test]
fn incremental_frames_match_a_fresh_draw() {
    let events = long_thread(400);
    let now = Script::new().now();
    let mut live = app_with(&events[..1]);
    for (i, event) in events.iter().enumerate().skip(1) {
        live.handle(AppEvent::Server(Box::new(event.clone())));
        if i % 7 == 0 {
            live.screen(100, 30, now);
        }
    }
    for width in [100, 57, 100] {
        let fresh = app_with(&events).screen(width, 30, now);
        assert_eq!(live.screen(width, 30, now), fresh, "width {width}");
    }
}

/// Scrolled up, the view stays put while output keeps arriving below it.
#[test]
fn scrolled_up_the_view_stays_while_output_arrives() {
    let mut script = Script::new();
    script.thread("shell");
    script.user("seq 1 100");
    script.command("c1", "seq 1 100");
    for n in 1..=60 {
        script.output("c1", &format!("{n}\n"));
    }
    let mut app = app_with(script.events());
    app.key(KeyCode::Char('o'), KeyModifiers::CONTROL);
    let now = script.now();
    app.screen(60, 20, now);
    app.key(KeyCode::PageUp, KeyModifiers::NONE);
    let before = app.screen(60, 20, now);
    for n in 61..=100 {
        script.output("c1", &format!("{n}\n"));
        app.handle(AppEvent::Server(Box::new(
            script.events().last().unwrap().clone(),
        )));
        app.screen(60, 20, now);
    }
    let after = app.screen(60, 20, now);
    // The transcript's rows but its last (where the "more below" note is).
    let transcript = |s: &str| s.lines().take(15).collect::<Vec<_>>().join("\n");
    assert_eq!(transcript(&after), transcript(&before));
    assert!(after.contains("↓ 55 more lines"), "{after}");
}

/// The first PageUp in a long thread moves one page, not to the top (blocks above the view
/// are laid out only when reached, and that must not count as new output).
#[test]
fn the_first_page_up_moves_one_page() {
    let mut script = Script::new();
    script.thread("echo");
    for n in 1..=50 {
        script.user(&format!("message {n:03}"));
    }
    let mut app = app_with(script.events());
    let now = script.now();
    let bottom = app.screen(60, 24, now);
    assert!(bottom.contains("message 050"), "{bottom}");
    app.key(KeyCode::PageUp, KeyModifiers::NONE);
    // The transcript's rows (the status line names the thread by its first message).
    let up: String = app
        .screen(60, 24, now)
        .lines()
        .take(20)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!up.contains("message 050"), "{up}");
    assert!(!up.contains("message 001"), "{up}");
    assert!(up.contains("message 040"), "{up}");
}
