//! The thread screen's status line: the stream, the mode keys are in, the thread's title, the
//! running (or failed) turn, the approval policy chosen, the harness, the sandbox, tokens,
//! help and the server, fitted to the width.

use chrono::{DateTime, Utc};
use ratatui::style::Style;
use ratatui::text::{Line, Span};

use centaur_protocol::Role;

use super::text::{host, seconds, tokens};
use super::{DIM, clip};
use crate::app::{Link, ThreadView};
use crate::reader;
use crate::transcript::{Block, SandboxState, TurnOutcome};

/// The most columns a title takes in the status line.
const TITLE_WIDTH: usize = 40;

/// The status line, fitted to `width`: when it is too narrow, the least useful parts go first
/// (the server, the help hint, the sandbox, tokens, the harness, the title).
pub fn line(server: &str, thread: &ThreadView, now: DateTime<Utc>, width: usize) -> Line<'static> {
    let mut parts = parts(server, thread, now, width);
    let fits = |parts: &[(Span, u8)]| {
        1 + parts.iter().map(|(s, _)| s.width()).sum::<usize>() + 3 * parts.len().saturating_sub(1)
            <= width
    };
    while !fits(&parts) && parts.len() > 1 {
        let drop = parts
            .iter()
            .enumerate()
            .max_by_key(|(_, (_, rank))| *rank)
            .map(|(i, _)| i)
            .expect("parts");
        parts.remove(drop);
    }
    let mut spans = vec![Span::raw(" ")];
    for (i, (span, _)) in parts.into_iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", DIM));
        }
        spans.push(span);
    }
    Line::from(spans)
}

/// Every part the line can say, each with the order in which it is dropped (higher goes
/// first).
fn parts(
    server: &str,
    thread: &ThreadView,
    now: DateTime<Utc>,
    width: usize,
) -> Vec<(Span<'static>, u8)> {
    let mut parts: Vec<(Span<'static>, u8)> = Vec::new();
    parts.push((
        match &thread.link {
            Link::Live => Span::styled("● live", Style::new().green()),
            Link::Connecting => Span::styled("◌ connecting…", Style::new().yellow()),
            Link::Reconnecting => Span::styled("◌ reconnecting…", Style::new().yellow().bold()),
            Link::New => Span::styled("○ new", Style::new().cyan()),
            Link::Failed(error) => Span::styled(format!("✗ {error}"), Style::new().red()),
        },
        0,
    ));
    parts.push((
        Span::styled(reader::mode(thread).to_string(), Style::new().cyan().bold()),
        1,
    ));
    if let Some(title) = title(thread) {
        let room = TITLE_WIDTH.min(width / 3);
        parts.push((Span::styled(clip(&title, room), Style::new().bold()), 3));
    }
    if thread.transcript.running.is_none() && last_turn_failed(thread) {
        parts.push((Span::styled("✗ last turn failed", Style::new().red()), 1));
    }
    if let Some(policy) = thread.approval_policy {
        parts.push((Span::raw(format!("approvals: {}", policy.as_str())), 2));
    }
    if let Some(harness) = thread.transcript.harness.or(thread.harness) {
        parts.push((Span::styled(harness.as_str(), Style::new().magenta()), 4));
    }
    parts.push((
        match &thread.transcript.sandbox {
            SandboxState::None => Span::styled("no sandbox", DIM),
            SandboxState::Assigned { ready_source, .. } => Span::raw(format!(
                "sandbox up ({})",
                ready_source.as_str().replace('_', " ")
            )),
            SandboxState::Released { .. } => Span::styled("sandbox released", DIM),
        },
        6,
    ));
    if let Some(running) = &thread.transcript.running {
        parts.push((
            match running.started_at {
                Some(started) => {
                    let secs = (now - started).num_seconds().max(0) as u64;
                    Span::styled(format!("running {}", seconds(secs)), Style::new().yellow())
                }
                None => Span::styled("queued", Style::new().yellow()),
            },
            1,
        ));
    }
    let (input, output) = (
        thread.transcript.input_tokens,
        thread.transcript.output_tokens,
    );
    if input + output > 0 {
        parts.push((
            Span::styled(
                format!("{} in / {} out tokens", tokens(input), tokens(output)),
                DIM,
            ),
            5,
        ));
    }
    parts.push((Span::styled("F1 help", DIM), 7));
    parts.push((Span::styled(host(server), DIM), 8));
    parts
}

/// The thread's title: the listed one, else the first line of its first message.
fn title(thread: &ThreadView) -> Option<String> {
    if let Some(title) = thread.title.as_deref().filter(|t| !t.trim().is_empty()) {
        return Some(title.trim().to_owned());
    }
    thread.transcript.blocks().iter().find_map(|block| {
        let Block::User {
            role: Role::User,
            text,
            ..
        } = block
        else {
            return None;
        };
        text.lines()
            .map(str::trim)
            .find(|line| !line.is_empty())
            .map(str::to_owned)
    })
}

/// Whether the thread's last turn ended in failure.
fn last_turn_failed(thread: &ThreadView) -> bool {
    thread
        .transcript
        .blocks()
        .iter()
        .rev()
        .find_map(|block| {
            let Block::TurnEnd { outcome, .. } = block else {
                return None;
            };
            Some(matches!(outcome, TurnOutcome::Failed(_)))
        })
        .unwrap_or(false)
}
