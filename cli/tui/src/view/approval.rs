//! The approval asked about, in a box over the bottom of the transcript: what it is, its
//! details, and the keys that decide it: dimmed, without their brackets, until they count
//! (see [`crate::app::ARM_DELAY`]).

use centaur_protocol::text::reveal;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block as Frame_, Borders, Clear, Padding, Paragraph};
use serde_json::Value;

use super::DIM;
use super::blocks::kind_label;
use crate::app::ThreadView;
use crate::transcript::PendingApproval;
use crate::wrap::wrap;

pub fn draw(
    frame: &mut Frame,
    thread: &ThreadView,
    area: Rect,
    asking: &PendingApproval,
    armed: bool,
) {
    let width = area.width.saturating_sub(2).clamp(10, 90);
    let lines = body(asking, width.saturating_sub(4) as usize, armed);
    let waiting = thread
        .transcript
        .pending
        .iter()
        .filter(|p| !thread.deciding.contains(&p.approval_id))
        .count();
    let kind = kind_label(asking.kind);
    let title = if waiting > 1 {
        format!(" Approve this {kind}? (1 of {waiting}) ")
    } else {
        format!(" Approve this {kind}? ")
    };
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width.saturating_sub(width)) / 2,
        area.bottom().saturating_sub(height),
        width.min(area.width),
        height,
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(
            Frame_::default()
                .borders(Borders::ALL)
                .padding(Padding::horizontal(1))
                .border_style(Style::new().yellow())
                .title(Span::styled(title, Style::new().yellow().bold())),
        ),
        rect,
    );
}

/// The summary, each detail that says something, and the keys. Invisible characters (bidi
/// overrides, zero-width spaces, …) are written out as `[U+202E]`, with a line saying so, so
/// what is approved reads as what runs.
fn body(asking: &PendingApproval, width: usize, armed: bool) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut hid = false;
    let mut shown = |text: &str| match reveal(text) {
        Some(revealed) => {
            hid = true;
            revealed
        }
        None => text.to_owned(),
    };
    let headline = Line::styled(shown(&asking.summary), Style::new().bold());
    lines.extend(wrap(&headline, width, &Span::raw("  "), false));
    if let Value::Object(details) = &asking.details {
        for (name, value) in details {
            let value = match value {
                Value::String(s) => shown(s),
                other @ Value::Null
                | other @ Value::Bool(_)
                | other @ Value::Number(_)
                | other @ Value::Array(_)
                | other @ Value::Object(_) => shown(&other.to_string()),
            };
            if value.is_empty() {
                continue;
            }
            let line = Line::from(vec![
                Span::styled(format!("{}: ", shown(name)), DIM),
                Span::raw(value),
            ]);
            lines.extend(wrap(&line, width, &Span::raw("  "), false));
        }
    }
    if hid {
        let warning = Line::styled(
            "⚠ it holds invisible characters, written out as [U+…]",
            Style::new().yellow().bold(),
        );
        lines.extend(wrap(&warning, width, &Span::raw("  "), false));
    }
    lines.push(Line::default());
    lines.push(keys(armed));
    lines
}

/// The keys that decide: `[y] approve …` in colour once they count, the same dimmed and
/// without brackets before.
fn keys(armed: bool) -> Line<'static> {
    let keys = [
        ('y', " approve   ", Style::new().green().bold()),
        (
            'a',
            " approve for the session   ",
            Style::new().green().bold(),
        ),
        ('n', " deny", Style::new().red().bold()),
    ];
    let mut spans = Vec::new();
    for (key, what, style) in keys {
        if armed {
            spans.push(Span::styled(format!("[{key}]"), style));
            spans.push(Span::raw(what));
        } else {
            spans.push(Span::styled(format!(" {key} "), DIM));
            spans.push(Span::styled(what, DIM));
        }
    }
    Line::from(spans)
}
