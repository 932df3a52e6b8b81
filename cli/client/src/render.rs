//! Events as lines for people (`centaur attach` without `--all-events`). A pure function of
//! the events seen: the same events always print the same text.

use centaur_protocol::api::ThreadStatus;
use centaur_protocol::slack::SlackOrigin;
use centaur_protocol::text::revealed;
use centaur_protocol::{Author, Event, EventBody, ThreadKey};
use chrono::{DateTime, SecondsFormat, Utc};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
use uuid::Uuid;

use crate::sanitize::{Colours, Sanitizer, clean};

/// A thread's status as the API names it.
pub fn thread_status(status: ThreadStatus) -> &'static str {
    match status {
        ThreadStatus::Idle => "idle",
        ThreadStatus::Queued => "queued",
        ThreadStatus::Running => "running",
        ThreadStatus::Failed => "failed",
    }
}

/// A time as the API writes it (RFC 3339, UTC, as many fraction digits as it has).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Text from another platform (a Slack display name, a channel name) on one line, safe to
/// print: names are chosen by people outside Centaur.
fn one_line(text: &str) -> String {
    clean(text, Colours::Drop)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Who wrote a message, as transcripts say it: `Ann (Slack)` (the id when the name is unknown).
pub fn author(author: &Author) -> String {
    match author {
        Author::Slack(user) => format!("{} (Slack)", one_line(user.label())),
    }
}

/// Who decided an approval, readably: `slack:U1 (Ann)` (as the server records a decision from
/// Slack) is `Ann (Slack)`, `slack:U1` is `U1 (Slack)`; anything else as it is, safe to print.
pub fn decider(decided_by: &str) -> String {
    let Some(rest) = decided_by.strip_prefix("slack:") else {
        return one_line(decided_by);
    };
    let name = rest
        .split_once(" (")
        .and_then(|(_, name)| name.strip_suffix(')'))
        .filter(|name| !name.trim().is_empty())
        .unwrap_or(rest);
    format!("{} (Slack)", one_line(name))
}

/// Where a Slack thread lives and who started it: `#general · Ann`, `DM · Ann` (a direct
/// message has no channel name; a channel whose name is unknown shows its id).
pub fn slack_origin(origin: &SlackOrigin) -> String {
    let place = if origin.channel_id.starts_with('D') {
        "DM".to_owned()
    } else {
        match &origin.channel_name {
            Some(name) => format!("#{}", one_line(name)),
            None => format!("#{}", one_line(&origin.channel_id)),
        }
    };
    format!("{place} · {}", one_line(origin.started_by.label()))
}

/// An approval asked for, and the command that decides it (two lines, without the last line
/// break): what `attach` prints in the thread's flow and `send` on stderr.
pub fn approval_request(
    thread_key: &ThreadKey,
    approval_id: Uuid,
    summary: &str,
    colours: Colours,
) -> String {
    format!(
        "approval needed: {}\n  centaur approve {} {approval_id}   (add --deny to refuse)",
        clean(&revealed(summary), colours),
        clean(thread_key.as_str(), colours)
    )
}

/// How long ago `then` was, roughly and briefly: `now`, `42s ago`, `3m ago`, `5h ago`,
/// `2d ago`. A clock a little behind the server's is not "in the future": that is `now` too.
/// The TUI's thread list and `centaur threads` both say it this way.
pub fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..5 => "now".to_owned(),
        5..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// `text` cut at the end to fit `width` terminal columns (wide characters such as CJK count
/// two), with `…` where it was cut.
pub fn clip(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let mut clipped = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w + 1 > width {
            break;
        }
        clipped.push(c);
        used += w;
    }
    if width > 0 {
        clipped.push('…');
    }
    clipped
}

/// Every string that comes from the thread goes through [`crate::sanitize`] before it is
/// printed, so nothing a sandbox prints can control the terminal.
#[derive(Default)]
pub struct Lines {
    /// Whether colour sequences in the thread's text are kept.
    colours: Colours,
    /// Agent text is streaming (deltas printed, the line not yet ended).
    streaming: bool,
    /// The current agent message arrived as deltas (so its whole text is not printed again).
    streamed: bool,
    /// The text arriving in pieces now (agent text or one command's output) and the sanitizer
    /// that carries a sequence cut between two pieces.
    stream: Option<(Stream, Sanitizer)>,
}

/// Text that arrives in pieces.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stream {
    Agent,
    Command(String),
}

impl Lines {
    /// Lines that keep the thread's colours or not (keep them only for a terminal).
    pub fn new(colours: Colours) -> Lines {
        Lines {
            colours,
            ..Lines::default()
        }
    }

    /// The text to print for `event`, if any.
    pub fn render(&mut self, event: &Event) -> Option<String> {
        let colours = self.colours;
        let c = |text: &str| clean(text, colours);
        let line = match &event.body {
            EventBody::AgentMessageDelta { text } => {
                let text = self.piece(Stream::Agent, text);
                self.streaming = true;
                self.streamed = true;
                return Some(text);
            }
            // The whole message was streamed already; print it only if it was not.
            EventBody::AgentMessage { text } => {
                if std::mem::take(&mut self.streamed) {
                    let end = self.end_stream(None);
                    return (!end.is_empty()).then_some(end);
                }
                format!("agent: {}", c(text))
            }
            EventBody::CommandOutput {
                command_id,
                chunk,
                at: None,
            } => {
                return Some(self.piece(Stream::Command(command_id.clone()), chunk));
            }
            // Printed text cannot be taken back: a piece that belongs earlier says so.
            EventBody::CommandOutput {
                command_id,
                chunk,
                at: Some(at),
            } => {
                let mut out = self.piece(
                    Stream::Command(command_id.clone()),
                    &format!("\n[output from byte {at}, which arrived late:]\n"),
                );
                out.push_str(&self.piece(Stream::Command(command_id.clone()), chunk));
                return Some(out);
            }
            EventBody::MessageCreated {
                role,
                text,
                author: who,
                ..
            } => match who {
                Some(who) => format!("{}: {}", author(who), c(text)),
                None => format!("{}: {}", role.as_str(), c(text)),
            },
            EventBody::AgentReasoning { text } => format!("(thinking) {}", c(text)),
            EventBody::CommandStarted { command, .. } => format!("$ {}", c(command)),
            EventBody::CommandFinished { exit_code, .. } => match exit_code {
                Some(0) => return None,
                Some(code) => format!("[exit status {code}]"),
                None => "[command ended without a status]".to_owned(),
            },
            EventBody::FileChanged { path, kind } => format!("file {}: {}", c(kind), c(path)),
            EventBody::ToolCallStarted { tool, method, .. } => {
                format!("tool {}.{}…", c(tool), c(method))
            }
            EventBody::ToolCallFinished {
                tool,
                method,
                error,
                ..
            } => match error {
                Some(error) => format!("tool {}.{} failed: {}", c(tool), c(method), c(error)),
                None => format!("tool {}.{} done", c(tool), c(method)),
            },
            EventBody::ApprovalRequested {
                approval_id,
                summary,
                ..
            } => approval_request(&event.thread_key, *approval_id, summary, colours),
            EventBody::ApprovalResolved {
                decision,
                decided_by,
                ..
            } => format!("approval {} by {}", decision.as_str(), decider(decided_by)),
            EventBody::EgressDenied { host, reason } => {
                format!("egress to {} denied: {}", c(host), c(reason))
            }
            EventBody::Usage {
                input_tokens,
                output_tokens,
            } => format!("tokens: {input_tokens} in, {output_tokens} out"),
            EventBody::ExecutionStarted {} => "— turn started".to_owned(),
            EventBody::ExecutionCompleted { .. } => "— turn completed".to_owned(),
            EventBody::ExecutionFailed { error, .. } => format!("— turn failed: {}", c(error)),
            EventBody::ExecutionCancelled { reason } => {
                format!("— turn cancelled: {}", c(reason))
            }
            EventBody::SandboxReleased { reason, .. } => {
                format!("— sandbox released: {}", c(reason))
            }
            EventBody::ThreadCreated { .. }
            | EventBody::SandboxAssigned { .. }
            | EventBody::ExecutionQueued {} => return None,
        };
        // A line of its own, after whatever was arriving in pieces.
        Some(format!("{}{line}\n", self.end_stream(None)))
    }

    /// Ends the text arriving in pieces unless it goes on with `next`: what its sanitizer still
    /// owes (a line break, a colour reset), then a line break after streamed agent text.
    fn end_stream(&mut self, next: Option<&Stream>) -> String {
        let mut out = String::new();
        if self.stream.as_ref().is_some_and(|(s, _)| Some(s) != next)
            && let Some((_, mut sanitizer)) = self.stream.take()
        {
            sanitizer.finish(&mut out);
        }
        if next != Some(&Stream::Agent) && std::mem::take(&mut self.streaming) {
            out.push('\n');
        }
        out
    }

    /// One piece of `stream`, safe to print.
    fn piece(&mut self, stream: Stream, text: &str) -> String {
        let mut out = self.end_stream(Some(&stream));
        let colours = self.colours;
        let (_, sanitizer) = self
            .stream
            .get_or_insert_with(|| (stream, Sanitizer::new(colours)));
        sanitizer.push(text, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `attach` and `send` print of an approval reads as what runs: invisible characters
    /// written out, escape sequences too (not removed, which would hide that they were there).
    #[test]
    fn an_approval_writes_out_invisible_characters() {
        let key = ThreadKey::parse("api:x").unwrap();
        let id = Uuid::nil();
        let shown = approval_request(
            &key,
            id,
            "run `echo ok \u{202e}mr\u{202c} \u{1b}[2K`",
            Colours::Keep,
        );
        assert_eq!(
            shown.lines().next().unwrap(),
            "approval needed: run `echo ok [U+202E]mr[U+202C] [U+001B][2K`"
        );
    }

    /// Times as both the TUI and `centaur threads` say them.
    #[test]
    fn how_long_ago_briefly() {
        let now: DateTime<Utc> = "2026-11-22T10:00:00Z".parse().unwrap();
        let before = |s: i64| now - chrono::Duration::seconds(s);
        assert_eq!(ago(now, before(2)), "now");
        assert_eq!(ago(now, before(42)), "42s ago");
        assert_eq!(ago(now, before(190)), "3m ago");
        assert_eq!(ago(now, before(5 * 3600 + 10)), "5h ago");
        assert_eq!(ago(now, before(40 * 86_400)), "40d ago");
        // A clock a little behind the server's is not "in the future".
        assert_eq!(ago(now, now + chrono::Duration::seconds(3)), "now");
    }

    /// Cut to terminal columns, not characters: a CJK character takes two, and is never split.
    #[test]
    fn clipped_to_columns_with_an_ellipsis() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("run the tests", 8), "run the…");
        assert_eq!(clip("修复登录页面", 12), "修复登录页面");
        assert_eq!(clip("修复登录页面", 8), "修复登…");
        assert_eq!(clip("修复登录页面", 7), "修复登…");
        assert_eq!(clip("anything", 0), "");
    }

    /// Statuses and times print as the API's JSON writes them.
    #[test]
    fn names_and_times_as_on_the_wire() {
        for status in [
            ThreadStatus::Idle,
            ThreadStatus::Queued,
            ThreadStatus::Running,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), thread_status(status));
        }
        for at in [
            "2026-11-22T10:00:00Z",
            "2026-11-22T10:00:00.120Z",
            "2026-11-22T10:00:00.123456789Z",
        ] {
            let at: DateTime<Utc> = at.parse().unwrap();
            assert_eq!(serde_json::to_value(at).unwrap(), timestamp(at));
        }
    }

    fn event(id: i64, body: EventBody) -> Event {
        Event {
            event_id: id,
            thread_key: ThreadKey::parse("api:t").unwrap(),
            created_at: Utc::now(),
            execution_id: None,
            body,
        }
    }

    /// Streamed text ends its line before anything else is printed, and is not printed twice.
    #[test]
    fn streamed_text_and_what_follows_it() {
        let mut lines = Lines::default();
        let events = [
            EventBody::AgentMessageDelta { text: "Hel".into() },
            EventBody::AgentMessageDelta { text: "lo".into() },
            EventBody::CommandStarted {
                command_id: "c".into(),
                command: "ls".into(),
            },
            EventBody::CommandOutput {
                command_id: "c".into(),
                chunk: "a\n".into(),
                at: None,
            },
            EventBody::AgentMessageDelta {
                text: "Done".into(),
            },
            EventBody::CommandFinished {
                command_id: "c".into(),
                exit_code: Some(2),
            },
            EventBody::AgentMessage {
                text: "Done".into(),
            },
            EventBody::ExecutionCompleted {
                result_text: "Done".into(),
            },
        ];
        let printed: String = events
            .into_iter()
            .enumerate()
            .filter_map(|(i, body)| lines.render(&event(i as i64 + 1, body)))
            .collect();
        assert_eq!(
            printed,
            "Hello\n$ ls\na\nDone\n[exit status 2]\n— turn completed\n"
        );
    }

    /// A terminal attack: a title, a clear, a clipboard write, a C1 CSI, a reset, a backspace
    /// and carriage return, and a colour.
    const BAD: &str =
        "\x1b]0;pwned\x07\x1b[2J\x1b]52;c;cm0gLXJmIH4K\x1b\\\u{9b}H\x1bc\x08\rX\x1b[31mred";

    /// Every event with a string from the thread, each such string [`BAD`] (some also cut in
    /// the middle of a sequence).
    fn hostile_bodies() -> Vec<EventBody> {
        let bad = || BAD.to_owned();
        let approval_id = Uuid::nil();
        vec![
            EventBody::MessageCreated {
                message_id: approval_id,
                role: centaur_protocol::Role::User,
                text: bad(),
                author: None,
            },
            EventBody::MessageCreated {
                message_id: approval_id,
                role: centaur_protocol::Role::User,
                text: bad(),
                author: Some(Author::Slack(centaur_protocol::slack::SlackUser {
                    id: bad(),
                    name: Some(bad()),
                })),
            },
            EventBody::MessageCreated {
                message_id: approval_id,
                role: centaur_protocol::Role::User,
                text: bad(),
                author: Some(Author::Slack(centaur_protocol::slack::SlackUser {
                    id: bad(),
                    name: None,
                })),
            },
            EventBody::AgentMessageDelta { text: bad() },
            EventBody::AgentMessageDelta {
                text: "\x1b]52;c;".into(),
            },
            EventBody::AgentMessage { text: bad() },
            EventBody::AgentMessage { text: bad() },
            EventBody::AgentReasoning { text: bad() },
            EventBody::CommandStarted {
                command_id: bad(),
                command: bad(),
            },
            EventBody::CommandOutput {
                command_id: bad(),
                chunk: bad(),
                at: None,
            },
            EventBody::CommandOutput {
                command_id: bad(),
                chunk: "\x1b]0;cut".into(),
                at: None,
            },
            EventBody::CommandOutput {
                command_id: "other".into(),
                chunk: bad(),
                at: None,
            },
            EventBody::CommandFinished {
                command_id: bad(),
                exit_code: Some(1),
            },
            EventBody::FileChanged {
                path: bad(),
                kind: bad(),
            },
            EventBody::ToolCallStarted {
                call_id: bad(),
                tool: bad(),
                method: bad(),
                arguments: serde_json::json!({ "a": BAD }),
            },
            EventBody::ToolCallFinished {
                call_id: bad(),
                tool: bad(),
                method: bad(),
                result: Some(serde_json::json!(BAD)),
                error: Some(bad()),
                duration_ms: Some(1),
                attachments: Vec::new(),
            },
            EventBody::ToolCallFinished {
                call_id: bad(),
                tool: bad(),
                method: bad(),
                result: None,
                error: None,
                duration_ms: None,
                attachments: Vec::new(),
            },
            EventBody::ApprovalRequested {
                approval_id,
                kind: centaur_protocol::ApprovalKind::Command,
                summary: bad(),
                details: serde_json::json!({ "command": BAD }),
            },
            EventBody::ApprovalResolved {
                approval_id,
                decision: centaur_protocol::ApprovalResolution::Approve,
                decided_by: bad(),
            },
            EventBody::ApprovalResolved {
                approval_id,
                decision: centaur_protocol::ApprovalResolution::Deny,
                decided_by: format!("slack:U1 ({BAD})"),
            },
            EventBody::EgressDenied {
                host: bad(),
                reason: bad(),
            },
            EventBody::ExecutionFailed {
                error: bad(),
                output: Some(bad()),
            },
            EventBody::ExecutionCancelled { reason: bad() },
            EventBody::SandboxReleased {
                sandbox_id: approval_id,
                reason: bad(),
            },
            EventBody::ExecutionCompleted { result_text: bad() },
        ]
    }

    /// Every string field of every event printed: hostile sequences in each, none printed,
    /// whether colours are kept or not.
    #[test]
    fn nothing_from_the_thread_controls_the_terminal() {
        let bodies = hostile_bodies();
        for colours in [Colours::Keep, Colours::Drop] {
            let mut lines = Lines::new(colours);
            let printed: String = bodies
                .iter()
                .enumerate()
                .filter_map(|(i, body)| lines.render(&event(i as i64 + 1, body.clone())))
                .collect();
            // The only escape left: colours on a terminal.
            let rest = printed.replace("\x1b[31m", "").replace("\x1b[0m", "");
            assert!(
                !rest
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t'),
                "{printed:?}"
            );
            // An approval writes the sequences out as text (`[U+001B]]0;pwned`), so the
            // person deciding sees them; everything else drops them.
            let (approvals, others): (Vec<&str>, Vec<&str>) = printed
                .lines()
                .partition(|l| l.starts_with("approval needed: "));
            assert!(
                !others
                    .iter()
                    .any(|l| l.contains("pwned") || l.contains("cm0g")),
                "{printed:?}"
            );
            assert_eq!(approvals.len(), 1, "{printed:?}");
            assert!(
                approvals[0].contains("[U+001B]]0;pwned[U+0007]"),
                "{printed:?}"
            );
            assert!(printed.contains("\nX"), "{printed:?}");
            assert_eq!(
                printed.contains("\x1b[31m"),
                colours == Colours::Keep,
                "{printed:?}"
            );
            // Colours never run on past the text they came with.
            let opened = printed.matches("\x1b[31m").count();
            assert_eq!(printed.matches("\x1b[0m").count(), opened, "{printed:?}");
        }
    }

    /// Messages from Slack say who wrote them, and decisions made there who made them, by
    /// name; a name is one line whatever it holds.
    #[test]
    fn slack_people_by_name() {
        let ann = || {
            Some(Author::Slack(centaur_protocol::slack::SlackUser {
                id: "U1".into(),
                name: Some("Ann\nLee".into()),
            }))
        };
        let mut lines = Lines::default();
        let said = lines.render(&event(
            1,
            EventBody::MessageCreated {
                message_id: Uuid::nil(),
                role: centaur_protocol::Role::User,
                text: "deploy it".into(),
                author: ann(),
            },
        ));
        assert_eq!(said.as_deref(), Some("Ann Lee (Slack): deploy it\n"));
        let said = lines.render(&event(
            2,
            EventBody::MessageCreated {
                message_id: Uuid::nil(),
                role: centaur_protocol::Role::User,
                text: "from the terminal".into(),
                author: None,
            },
        ));
        assert_eq!(said.as_deref(), Some("user: from the terminal\n"));
        for (decided_by, shown) in [
            ("slack:U1 (Ann)", "Ann (Slack)"),
            ("slack:U1", "U1 (Slack)"),
            ("admin", "admin"),
        ] {
            let said = lines.render(&event(
                3,
                EventBody::ApprovalResolved {
                    approval_id: Uuid::nil(),
                    decision: centaur_protocol::ApprovalResolution::Approve,
                    decided_by: decided_by.into(),
                },
            ));
            assert_eq!(said, Some(format!("approval approve by {shown}\n")));
        }
    }

    /// A sequence cut between two chunks of one command's output is still removed; another
    /// event in between ends the chunk's text, so it hides nothing after it.
    #[test]
    fn sequences_cut_between_chunks() {
        let output = |chunk: &str| EventBody::CommandOutput {
            command_id: "c".into(),
            chunk: chunk.into(),
            at: None,
        };
        let mut lines = Lines::default();
        let printed: String = [
            output("a\x1b]0;pw"),
            output("ned\x07b\x1b"),
            output("[2Jc\n\x1b]52;c;"),
            EventBody::CommandFinished {
                command_id: "c".into(),
                exit_code: Some(1),
            },
            output("AAAA\x07d\n"),
        ]
        .into_iter()
        .enumerate()
        .filter_map(|(i, body)| lines.render(&event(i as i64 + 1, body)))
        .collect();
        assert_eq!(printed, "abc\n[exit status 1]\nAAAAd\n");
    }

    /// Printed output cannot be taken back: a piece that belongs earlier is printed when it
    /// arrives, saying where it belongs.
    #[test]
    fn output_that_arrives_late_says_where_it_belongs() {
        let output = |chunk: &str, at: Option<u64>| EventBody::CommandOutput {
            command_id: "c".into(),
            chunk: chunk.into(),
            at,
        };
        let mut lines = Lines::default();
        let printed: String = [
            output("line2\n", None),
            output("line1\n", Some(0)),
            output("line3\n", None),
        ]
        .into_iter()
        .enumerate()
        .filter_map(|(i, body)| lines.render(&event(i as i64 + 1, body)))
        .collect();
        assert_eq!(
            printed,
            "line2\n\n[output from byte 0, which arrived late:]\nline1\nline3\n"
        );
    }
}
