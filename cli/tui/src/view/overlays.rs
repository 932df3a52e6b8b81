//! Boxes over a screen: the keys (help) and the harness picker for a new thread.

use centaur_protocol::Harness;
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block as Frame_, Borders, Clear, Paragraph};

use super::DIM;

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

const HELP: &[(&str, &[(&str, &str)])] = &[
    (
        "Thread",
        &[
            ("Enter", "send the message (steers the turn if one runs)"),
            ("Shift+Enter, Alt+Enter, Ctrl-J", "new line"),
            (
                "↑ ↓",
                "move in the message; history at its first or last line",
            ),
            ("Esc", "interrupt the running turn"),
            ("Ctrl-C", "interrupt; clear the message; twice: quit"),
            ("PageUp PageDown, Shift+↑ ↓, wheel", "scroll"),
            (
                "Tab",
                "pick a block to fold or open (j/k, Enter; Tab/Esc back)",
            ),
            ("Ctrl-O", "open or fold every block"),
            ("Ctrl-T", "threads"),
            ("Ctrl-N", "new thread (choose the harness)"),
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
    (
        "Threads",
        &[
            ("type", "filter (every word must match)"),
            ("↑ ↓ Enter", "choose and open"),
            ("Ctrl-R, F5", "refresh"),
            ("Esc", "clear the filter, or back to the thread"),
        ],
    ),
    ("Anywhere", &[("F1, ?", "this help (any key closes it)")]),
];

pub fn help(frame: &mut Frame, area: Rect) {
    let mut lines = Vec::new();
    for (section, keys) in HELP {
        if !lines.is_empty() {
            lines.push(Line::default());
        }
        lines.push(Line::styled(*section, Style::new().bold().cyan()));
        for (key, what) in *keys {
            lines.push(Line::from(vec![
                Span::styled(format!("  {key:<34}"), Style::new().bold()),
                Span::raw(*what),
            ]));
        }
    }
    draw_box(frame, area, 96, " Keys · any key closes ", lines);
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

pub fn picker(frame: &mut Frame, area: Rect, selected: usize) {
    let lines: Vec<Line> = Harness::ALL
        .iter()
        .enumerate()
        .map(|(i, harness)| {
            let line = Line::from(vec![
                Span::styled(format!(" {:<12}", harness.as_str()), Style::new().bold()),
                Span::styled(harness_note(*harness), DIM),
            ]);
            if i == selected {
                line.patch_style(Style::new().reversed())
            } else {
                line
            }
        })
        .collect();
    draw_box(
        frame,
        area,
        72,
        " New thread: pick a harness (Enter, Esc) ",
        lines,
    );
}
