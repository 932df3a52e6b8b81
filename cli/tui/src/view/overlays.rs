//! Boxes over a screen: the keys (help) and the harness picker for a new thread.

use centaur_protocol::Harness;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block as Frame_, Borders, Clear, Paragraph};

use super::DIM;
use crate::app::{App, Harnesses};

/// `lines` in a titled box `width` wide in the middle of `area`, over what is there.
fn draw_box(frame: &mut Frame, area: Rect, width: u16, title: &str, lines: Vec<Line>) {
    let width = width.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let rect = Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    );
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Frame_::default().borders(Borders::ALL).title(title)),
        rect,
    );
}

/// Every key, by where it works: the left column, then the right.
type Section = (&'static str, &'static [(&'static str, &'static str)]);

const HELP_LEFT: &[Section] = &[
    (
        "Message",
        &[
            ("Enter", "send (steers a running turn)"),
            ("Shift/Alt+Enter", "new line (also Ctrl-J)"),
            ("↑ ↓", "move; history at either end"),
            ("Esc", "interrupt the running turn"),
            ("Ctrl-C", "interrupt, clear; twice: quit"),
            ("PgUp PgDn", "scroll; also Shift+↑ ↓, wheel"),
            ("Home End", "top, bottom (nothing written)"),
            ("Ctrl-F", "search the thread"),
            ("Tab", "read blocks (nothing written)"),
            ("Ctrl-O", "open or fold every block"),
            ("Ctrl-P", "approval policy of the thread"),
            ("Ctrl-T", "threads"),
            ("Ctrl-N", "new thread: pick a harness"),
        ],
    ),
    (
        "Approval",
        &[
            ("y", "approve"),
            ("a", "approve for the session"),
            ("n or d", "deny"),
        ],
    ),
];

const HELP_RIGHT: &[Section] = &[
    (
        "Reading (Tab)",
        &[
            ("j k, ↑ ↓", "previous, next block"),
            ("Enter, Space", "fold or open the block"),
            ("g Home, G End", "top, bottom"),
            ("/, Ctrl-F", "search the thread"),
            ("n N", "next, previous match"),
            ("y", "copy it (OSC 52, else a file)"),
            ("m", "command output as Markdown"),
            ("Esc, Tab", "back to the message"),
        ],
    ),
    (
        "Threads",
        &[
            ("type", "filter: title, key, #channel…"),
            ("↑ ↓ Enter", "choose and open"),
            ("Ctrl-S", "only Slack threads, or all"),
            ("Ctrl-R, F5", "refresh"),
            ("Esc", "clear the filter, or back"),
        ],
    ),
    (
        "New thread (Ctrl-N)",
        &[
            ("↑ ↓ Enter", "pick; dimmed ones cannot run"),
            ("Esc", "cancel"),
        ],
    ),
];

const KEY_WIDTH: usize = 16;
const WHAT_WIDTH: usize = 29;

fn help_lines(sections: &[Section]) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for (section, keys) in sections {
        if !lines.is_empty() {
            lines.push(Line::default());
        }
        lines.push(Line::styled(*section, Style::new().bold().cyan()));
        for (key, what) in *keys {
            lines.push(Line::from(vec![
                Span::styled(format!(" {key:<KEY_WIDTH$}"), Style::new().bold()),
                Span::raw(format!("{what:<WHAT_WIDTH$}")),
            ]));
        }
    }
    lines
}

/// Every key, in two columns where they fit side by side.
pub fn help(frame: &mut Frame, area: Rect) {
    let (left, right) = (help_lines(HELP_LEFT), help_lines(HELP_RIGHT));
    let column = 1 + KEY_WIDTH + WHAT_WIDTH;
    let two_columns = area.width as usize >= 2 * column + 4;
    let (lines, width) = if two_columns {
        let rows = left.len().max(right.len());
        let mut left = left.into_iter();
        let mut right = right.into_iter();
        let lines = (0..rows)
            .map(|_| {
                let mut spans = left.next().unwrap_or_default().spans;
                let used: usize = spans.iter().map(Span::width).sum();
                spans.push(Span::raw(" ".repeat(column + 2 - used)));
                spans.extend(right.next().unwrap_or_default().spans);
                Line::from(spans)
            })
            .collect();
        (lines, 2 * column + 4)
    } else {
        let mut lines = left;
        lines.push(Line::default());
        lines.extend(right);
        (lines, column + 2)
    };
    draw_box(
        frame,
        area,
        width as u16,
        " Keys · F1 or ? shows them · any key closes ",
        lines,
    );
}

fn harness_note(harness: Harness) -> &'static str {
    match harness {
        Harness::Codex => "OpenAI Codex (uses the OpenAI key the proxy holds)",
        Harness::ClaudeCode => "Claude Code (uses the Anthropic key the proxy holds)",
        Harness::Amp => "Amp (uses the Amp key the proxy holds)",
        Harness::Shell => "bash: each message runs as a script",
        Harness::Echo => "repeats each message (for trying things out)",
    }
}

/// The harnesses offered for a new thread; one that cannot run is dimmed, with the reason.
pub fn picker(frame: &mut Frame, area: Rect, app: &App, selected: Harness) {
    let mut lines: Vec<Line> = app
        .offered_harnesses()
        .iter()
        .map(|info| {
            let line = if info.available {
                Line::from(vec![
                    Span::styled(
                        format!(" {:<12}", info.harness.as_str()),
                        Style::new().bold(),
                    ),
                    Span::styled(harness_note(info.harness), DIM),
                ])
            } else {
                let reason = info
                    .unavailable_reason
                    .as_deref()
                    .unwrap_or("the server cannot run it");
                Line::from(vec![
                    Span::styled(format!(" {:<12}", info.harness.as_str()), DIM),
                    Span::styled(format!("✗ {reason}"), DIM),
                ])
            };
            if info.harness == selected {
                line.patch_style(Style::new().reversed())
            } else {
                line
            }
        })
        .collect();
    if let Harnesses::Unknown(error) = &app.harnesses {
        lines.push(Line::default());
        lines.push(Line::styled(
            format!(" The server did not say which can run: {error}"),
            DIM,
        ));
    }
    draw_box(
        frame,
        area,
        72,
        " New thread: pick a harness (Enter, Esc) ",
        lines,
    );
}
