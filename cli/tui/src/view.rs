//! Drawing the TUI from its state. Nothing here does I/O or changes what the events say; the
//! only state it keeps is a cache of each block's lines at the current width, so a frame with
//! a long transcript costs the lines on screen, not the whole thread.

use centaur_protocol::{ApprovalKind, Harness};
use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block as Frame_, Borders, Clear, Padding, Paragraph, Row, Table};
use serde_json::Value;
use unicode_width::UnicodeWidthStr;

use super::app::{App, Focus, Link, Overlay, Screen, ThreadView};
use super::markdown;
use super::transcript::{Block, SandboxState, TurnOutcome};
use super::wrap::wrap;

/// Output lines shown for a folded command.
const FOLDED_OUTPUT: usize = 5;
const COMPOSER_MAX_LINES: usize = 8;

const DIM: Style = Style::new().fg(Color::DarkGray);
const OUTPUT: Style = Style::new().fg(Color::Gray);

/// Each block's lines at one width, redrawn only when the block or its fold changes.
#[derive(Default)]
pub struct TranscriptCache {
    entries: Vec<Option<Entry>>,
    width: u16,
    highlighted: bool,
    /// Rows the transcript had in the last frame (for paging).
    pub viewport_height: usize,
    /// A block to scroll into view at the next frame.
    pub reveal: Option<usize>,
    /// How many blocks the last frame knew.
    known: usize,
}

struct Entry {
    version: u64,
    open: bool,
    lines: Vec<Line<'static>>,
}

pub fn draw(frame: &mut Frame, app: &mut App, now: DateTime<Utc>) {
    let area = frame.area();
    match (app.screen, app.thread.is_some()) {
        (Screen::Thread, true) => draw_thread(frame, app, area, now),
        _ => draw_threads(frame, app, area, now),
    }
    match app.overlay {
        Some(Overlay::Help) => draw_help(frame, area),
        Some(Overlay::HarnessPicker { selected }) => draw_picker(frame, area, selected),
        None => {}
    }
}

fn draw_thread(frame: &mut Frame, app: &mut App, area: Rect, now: DateTime<Utc>) {
    let server = app.server.clone();
    let notice = app.notice.clone();
    let thread = app.thread.as_mut().expect("a thread");
    let composer_width = area.width.saturating_sub(2).max(1) as usize;
    let composer = composer_rows(thread, composer_width);
    let composer_height = composer.0.len().min(COMPOSER_MAX_LINES) as u16 + 2;
    let [body, notice_area, composer_area, status_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(notice.is_some())),
        Constraint::Length(composer_height),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_transcript(frame, thread, body);
    if let Some(notice) = notice {
        frame.render_widget(
            Paragraph::new(Line::from(format!(" {notice}")).fg(Color::Yellow)),
            notice_area,
        );
    }
    draw_composer(frame, thread, composer_area, composer);
    frame.render_widget(
        Paragraph::new(status_line(
            &server,
            thread,
            now,
            status_area.width as usize,
        )),
        status_area,
    );
    if let Some(asking) = thread.asking() {
        draw_approval(frame, thread, body, asking.clone());
    }
}

/// The transcript's visible lines.
fn draw_transcript(frame: &mut Frame, thread: &mut ThreadView, area: Rect) {
    let height = area.height as usize;
    let width = area.width.max(1);
    let cache = &mut thread.cache;
    let highlighted = super::highlight::is_ready();
    let relaid = cache.width != width || cache.highlighted != highlighted;
    if relaid {
        cache.entries.clear();
        cache.width = width;
        cache.highlighted = highlighted;
    }
    cache.viewport_height = height;
    let blocks = thread.transcript.blocks();
    cache.entries.resize_with(blocks.len(), || None);
    // Positions count lines up from the bottom. Walk up from the last block, laying out what
    // changed, until the view (and a block to reveal) is covered; blocks above stay as they
    // are, so a frame costs what is on screen, however long the thread.
    let anchored = thread.scroll > 0 && !relaid;
    let view_top = height + thread.scroll;
    let known = std::mem::replace(&mut cache.known, blocks.len());
    let mut reveal = cache.reveal.take().filter(|r| *r < blocks.len());
    // (block, position of its bottom line)
    let mut walked: Vec<(usize, usize)> = Vec::new();
    let mut below = 0;
    let mut index = blocks.len();
    while index > 0 && (below < height + thread.scroll || reveal.is_some_and(|r| r < index)) {
        index -= 1;
        let version = thread.transcript.version(index);
        let open = thread.expand_all != thread.toggled.contains(&index);
        let entry = &mut cache.entries[index];
        let fresh = matches!(entry, Some(e) if e.version == version && e.open == open);
        if !fresh {
            // What it was drawn as before; a block never drawn (above the view until now) did
            // not move anything.
            let before = match entry {
                Some(e) => Some(e.lines.len()),
                None if index >= known => Some(0),
                None => None,
            };
            let mut lines = if index == 0 {
                Vec::new()
            } else {
                vec![Line::default()]
            };
            lines.extend(block_lines(&blocks[index], open, width as usize));
            // New lines below the view while scrolled up keep the view where it was.
            if let Some(before) = before
                && anchored
                && below < view_top
                && lines.len() > before
            {
                thread.scroll += lines.len() - before;
            }
            *entry = Some(Entry {
                version,
                open,
                lines,
            });
        }
        let len = entry.as_ref().map_or(0, |e| e.lines.len());
        walked.push((index, below));
        if reveal == Some(index) {
            let top = below + len;
            if top > thread.scroll + height {
                thread.scroll = top.saturating_sub(height);
            } else if below < thread.scroll {
                thread.scroll = below;
            }
            reveal = None;
        }
        below += len;
    }
    if index == 0 {
        thread.scroll = thread.scroll.min(below.saturating_sub(height));
    }

    if blocks.is_empty() {
        let hint = match &thread.link {
            Link::New => {
                let harness = thread
                    .harness
                    .map_or("the server's default harness", Harness::as_str);
                format!(
                    "A new thread ({}) with {harness}. Type a message below and press Enter.",
                    thread.key
                )
            }
            Link::Connecting => format!("Opening {}…", thread.key),
            Link::Failed(error) => format!("Cannot follow {}: {error}", thread.key),
            _ => format!("{} has no events yet.", thread.key),
        };
        let lines = wrap(
            &Line::from(hint).style(DIM),
            width as usize,
            &Span::raw(""),
            false,
        );
        frame.render_widget(Paragraph::new(lines), area);
        return;
    }

    let mut visible = Vec::with_capacity(height);
    let view = thread.scroll..thread.scroll + height;
    for &(index, bottom) in walked.iter().rev() {
        let lines = &cache.entries[index].as_ref().expect("laid out above").lines;
        let top = bottom + lines.len();
        for (i, line) in lines.iter().enumerate() {
            if !view.contains(&(top - 1 - i)) {
                continue;
            }
            // The selected block's first line is marked.
            let first = i == usize::from(index > 0);
            if first && thread.selected == Some(index) && thread.focus == Focus::Transcript {
                visible.push(line.clone().patch_style(Style::new().bg(Color::DarkGray)));
            } else {
                visible.push(line.clone());
            }
        }
    }
    frame.render_widget(Paragraph::new(visible), area);
    if thread.scroll > 0 && area.height > 0 {
        let note = format!(" ↓ {} more lines (PageDown) ", thread.scroll);
        let w = note.width() as u16;
        let at = Rect::new(
            area.right().saturating_sub(w),
            area.bottom() - 1,
            w.min(area.width),
            1,
        );
        frame.render_widget(Paragraph::new(note).black().on_yellow(), at);
    }
}

/// One block as lines at `width`.
fn block_lines(block: &Block, open: bool, width: usize) -> Vec<Line<'static>> {
    let none = Span::raw("");
    let indent = Span::raw("  ");
    match block {
        Block::User { role, text } => {
            let label = match role {
                centaur_protocol::Role::User => "› ".to_owned(),
                other => format!("{} › ", other.as_str()),
            };
            let mut lines = Vec::new();
            for (i, row) in text.split('\n').enumerate() {
                let marker = if i == 0 {
                    Span::styled(label.clone(), Style::new().cyan().bold())
                } else {
                    Span::raw(" ".repeat(label.width()))
                };
                let line = Line::from(vec![
                    marker,
                    Span::styled(row.to_owned(), Style::new().bold()),
                ]);
                lines.extend(wrap(&line, width, &indent, false));
            }
            lines
        }
        Block::Agent { text, .. } => markdown::render(text, width),
        Block::Reasoning { text } => {
            let style = DIM.add_modifier(Modifier::ITALIC);
            if !open {
                let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let line = Line::from(vec![
                    Span::styled("▸ thinking · ", style),
                    Span::styled(first.to_owned(), style),
                ]);
                return vec![truncate(&line, width)];
            }
            let mut lines = vec![Line::styled("▾ thinking", style)];
            for row in text.lines() {
                let line = Line::styled(format!("  {row}"), style);
                lines.extend(wrap(&line, width, &indent, false));
            }
            lines
        }
        Block::Command {
            command,
            output,
            exit,
        } => {
            let status = match exit {
                None => Span::styled(" …", Style::new().yellow()),
                Some(Some(0)) => Span::styled(" ✓", Style::new().green()),
                Some(Some(code)) => Span::styled(format!(" ✗ exit {code}"), Style::new().red()),
                Some(None) => Span::styled(" ✗ ended without a status", Style::new().red()),
            };
            let header = Line::from(vec![
                Span::styled("$ ", DIM),
                Span::styled(command.clone(), Style::new().bold()),
                status,
            ]);
            let mut lines = wrap(&header, width, &indent, false);
            let rows: Vec<String> = output_lines(output);
            let shown = if open || rows.len() <= FOLDED_OUTPUT {
                &rows[..]
            } else {
                let hidden = rows.len() - FOLDED_OUTPUT;
                lines.push(Line::styled(
                    format!("  … {hidden} more lines (Tab to pick, Enter or Ctrl-O to show)"),
                    DIM,
                ));
                &rows[hidden..]
            };
            for row in shown {
                let line = Line::styled(format!("  {row}"), OUTPUT);
                lines.extend(wrap(&line, width, &indent, true));
            }
            lines
        }
        Block::FileChange { path, kind } => vec![Line::from(vec![
            Span::styled(format!("✎ {kind} "), Style::new().magenta()),
            Span::raw(path.clone()),
        ])],
        Block::Tool {
            tool,
            method,
            arguments,
            outcome,
        } => {
            let status = match outcome {
                None => Span::styled(" …", Style::new().yellow()),
                Some(Ok(_)) => Span::styled(" ✓", Style::new().green()),
                Some(Err(_)) => Span::styled(" ✗", Style::new().red()),
            };
            let header = Line::from(vec![
                Span::styled("⚙ ", Style::new().blue()),
                Span::styled(format!("{tool}.{method}"), Style::new().bold()),
                Span::styled(format!(" {}", compact(arguments)), DIM),
                status,
            ]);
            if !open {
                let mut lines = vec![truncate(&header, width)];
                if let Some(Err(error)) = outcome {
                    lines.extend(wrap(
                        &Line::styled(format!("  {error}"), Style::new().red()),
                        width,
                        &indent,
                        false,
                    ));
                }
                return lines;
            }
            let mut lines = wrap(&header, width, &indent, false);
            let body = match outcome {
                Some(Ok(result)) => serde_json::to_string_pretty(result).unwrap_or_default(),
                Some(Err(error)) => error.clone(),
                None => String::new(),
            };
            for row in body.lines() {
                lines.extend(wrap(
                    &Line::styled(format!("  {row}"), OUTPUT),
                    width,
                    &indent,
                    true,
                ));
            }
            lines
        }
        Block::Approval {
            kind,
            summary,
            resolved,
            ..
        } => {
            let what = kind_label(*kind);
            let line = match resolved {
                None => Line::from(vec![
                    Span::styled("? ", Style::new().yellow().bold()),
                    Span::styled(format!("{what} approval: {summary}"), Style::new().yellow()),
                    Span::styled(" — waiting", DIM),
                ]),
                Some((decision, by)) => {
                    let (mark, style, said) = match decision.as_str() {
                        "approve" => ("✓ ", Style::new().green(), "approved"),
                        "approve_for_session" => {
                            ("✓ ", Style::new().green(), "approved for the session")
                        }
                        "deny" => ("✗ ", Style::new().red(), "denied"),
                        _ => ("· ", DIM, "cancelled"),
                    };
                    Line::from(vec![
                        Span::styled(mark, style),
                        Span::raw(format!("{what} approval: {summary}")),
                        Span::styled(format!(" — {said} by {by}"), DIM),
                    ])
                }
            };
            wrap(&line, width, &indent, false)
        }
        Block::EgressDenied { host, reason } => wrap(
            &Line::from(vec![
                Span::styled("⊘ ", Style::new().red().bold()),
                Span::styled(
                    format!("egress to {host} denied: {reason}"),
                    Style::new().red(),
                ),
            ]),
            width,
            &indent,
            false,
        ),
        Block::TurnEnd { outcome, took } => {
            let took = took
                .map(|d| format!(" in {}", duration(d.num_milliseconds().max(0) as u64)))
                .unwrap_or_default();
            let line = match outcome {
                TurnOutcome::Completed => Line::styled(format!("✓ done{took}"), DIM),
                TurnOutcome::Failed(error) => Line::from(vec![
                    Span::styled("✗ turn failed: ", Style::new().red().bold()),
                    Span::styled(error.clone(), Style::new().red()),
                ]),
                TurnOutcome::Cancelled(reason) => Line::from(vec![
                    Span::styled("⏹ turn cancelled: ", Style::new().yellow().bold()),
                    Span::raw(reason.clone()),
                ]),
            };
            wrap(&line, width, &indent, false)
        }
        Block::Note { text } => wrap(&Line::styled(text.clone(), DIM), width, &none, false),
    }
}

fn kind_label(kind: ApprovalKind) -> &'static str {
    match kind {
        ApprovalKind::Command => "command",
        ApprovalKind::FileChange => "file change",
        ApprovalKind::Tool => "tool",
    }
}

/// Command output as display lines: escape sequences removed, carriage returns resolved the
/// way a terminal would (the text after the last one wins), tabs expanded.
fn output_lines(output: &str) -> Vec<String> {
    let trimmed = output.strip_suffix('\n').unwrap_or(output);
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split('\n')
        .map(|line| {
            let line = line.trim_end_matches('\r');
            let line = line.rsplit('\r').next().unwrap_or(line);
            let mut out = String::with_capacity(line.len());
            let mut chars = line.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '\x1b' => {
                        // CSI: ESC [ params final; other escapes: ESC and one character.
                        if chars.next_if_eq(&'[').is_some() {
                            for c in chars.by_ref() {
                                if ('@'..='~').contains(&c) {
                                    break;
                                }
                            }
                        } else {
                            chars.next();
                        }
                    }
                    '\t' => out.push_str("    "),
                    c if c.is_control() => {}
                    c => out.push(c),
                }
            }
            out
        })
        .collect()
}

fn compact(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `line` cut to `width` columns with an ellipsis.
fn truncate(line: &Line<'static>, width: usize) -> Line<'static> {
    if line.width() <= width {
        return line.clone();
    }
    let mut lines = wrap(line, width.saturating_sub(1).max(1), &Span::raw(""), true);
    let mut first = lines.swap_remove(0);
    first.spans.push(Span::styled("…", DIM));
    first
}

fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..10 => format!("{:.1}s", ms as f64 / 1000.0),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn tokens(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// The composer's text as rows `width` wide, with where the cursor is.
fn composer_rows(thread: &ThreadView, width: usize) -> (Vec<String>, (usize, usize)) {
    let (row, col) = thread.composer.cursor();
    let mut rows = Vec::new();
    let mut cursor = (0, 0);
    for (r, line) in thread.composer.lines().iter().enumerate() {
        let mut current = String::new();
        let mut current_width = 0;
        let mut cursor_at = None;
        for (c_index, c) in line.chars().enumerate() {
            let w = unicode_width::UnicodeWidthChar::width(c).unwrap_or(0);
            if current_width + w > width {
                rows.push(std::mem::take(&mut current));
                current_width = 0;
            }
            if r == row && c_index == col {
                cursor_at = Some((rows.len(), current_width));
            }
            current.push(c);
            current_width += w;
        }
        if r == row && cursor_at.is_none() {
            cursor_at = Some(if current_width >= width {
                (rows.len() + 1, 0)
            } else {
                (rows.len(), current_width)
            });
        }
        rows.push(current);
        if let Some(at) = cursor_at {
            cursor = at;
            if cursor.0 >= rows.len() {
                rows.push(String::new());
            }
        }
    }
    (rows, cursor)
}

fn draw_composer(
    frame: &mut Frame,
    thread: &ThreadView,
    area: Rect,
    (rows, cursor): (Vec<String>, (usize, usize)),
) {
    let running = thread.transcript.running.is_some();
    let title = if thread
        .transcript
        .pending
        .iter()
        .any(|_| thread.asking().is_some())
    {
        " decide the approval above ".to_owned()
    } else if running {
        " steer the running turn · Esc interrupts ".to_owned()
    } else if thread.link == Link::New {
        match thread.harness {
            Some(harness) => format!(" new thread · {} ", harness.as_str()),
            None => " new thread ".to_owned(),
        }
    } else {
        " message ".to_owned()
    };
    let focused = thread.focus == Focus::Composer && thread.asking().is_none();
    let border = if focused { Style::new().cyan() } else { DIM };
    let key_room = (area.width as usize).saturating_sub(title.width() + 6);
    let frame_block = Frame_::default()
        .borders(Borders::ALL)
        .border_style(border)
        .title(Span::styled(title, border))
        .title_top(
            Line::styled(format!(" {} ", shorten(thread.key.as_ref(), key_room)), DIM)
                .right_aligned(),
        );
    let inner = frame_block.inner(area);
    frame.render_widget(frame_block, area);
    let visible = inner.height as usize;
    let first = (cursor.0 + 1).saturating_sub(visible);
    if thread.composer.is_empty() {
        let hint = "Type a message · Enter sends · Shift+Enter new line · ↑ history · F1 help";
        frame.render_widget(Paragraph::new(Span::styled(hint, DIM)), inner);
    } else {
        let lines: Vec<Line> = rows
            .iter()
            .skip(first)
            .take(visible)
            .map(|r| Line::raw(r.clone()))
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
    }
    if focused && visible > 0 {
        frame.set_cursor_position((
            inner.x + cursor.1 as u16,
            inner.y + (cursor.0 - first) as u16,
        ));
    }
}

/// The status line, fitted to `width`: when it is too narrow, the least useful parts go first
/// (the server, the help hint, the sandbox, tokens, the harness).
fn status_line(
    server: &str,
    thread: &ThreadView,
    now: DateTime<Utc>,
    width: usize,
) -> Line<'static> {
    // (what it says, the order in which it is dropped: higher goes first)
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
    let harness = thread
        .transcript
        .harness
        .clone()
        .or_else(|| thread.harness.map(|h| h.as_str().to_owned()));
    if let Some(harness) = harness {
        parts.push((Span::styled(harness, Style::new().magenta()), 3));
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
        5,
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
            4,
        ));
    }
    parts.push((Span::styled("F1 help", DIM), 6));
    parts.push((Span::styled(host(server), DIM), 7));
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

fn seconds(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

fn host(server: &str) -> String {
    server
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// `text` cut to `width` columns, keeping its start and end.
fn shorten(text: &str, width: usize) -> String {
    if text.width() <= width || width < 5 {
        return text.to_owned();
    }
    let keep = width - 1;
    let head: String = text.chars().take(keep - keep / 3).collect();
    let tail: Vec<char> = text.chars().rev().take(keep / 3).collect();
    format!("{head}…{}", tail.into_iter().rev().collect::<String>())
}

fn draw_approval(
    frame: &mut Frame,
    thread: &ThreadView,
    area: Rect,
    asking: super::transcript::PendingApproval,
) {
    let width = area.width.saturating_sub(2).clamp(10, 90);
    let inner_width = width.saturating_sub(4) as usize;
    let mut lines = Vec::new();
    let headline = Line::styled(asking.summary.clone(), Style::new().bold());
    lines.extend(wrap(&headline, inner_width, &Span::raw("  "), false));
    if let Value::Object(details) = &asking.details {
        for (name, value) in details {
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if value.is_empty() {
                continue;
            }
            let line = Line::from(vec![
                Span::styled(format!("{name}: "), DIM),
                Span::raw(value),
            ]);
            lines.extend(wrap(&line, inner_width, &Span::raw("  "), false));
        }
    }
    lines.push(Line::default());
    lines.push(Line::from(vec![
        Span::styled("[y]", Style::new().green().bold()),
        Span::raw(" approve   "),
        Span::styled("[a]", Style::new().green().bold()),
        Span::raw(" approve for the session   "),
        Span::styled("[n]", Style::new().red().bold()),
        Span::raw(" deny"),
    ]));
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

fn draw_threads(frame: &mut Frame, app: &App, area: Rect, now: DateTime<Utc>) {
    let [header, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let filter = if app.threads.filter.is_empty() {
        Span::styled("type to filter", DIM)
    } else {
        Span::raw(app.threads.filter.clone())
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(" Threads ", Style::new().bold().reversed()),
            Span::raw("  "),
            Span::styled("filter: ", DIM),
            filter,
        ])),
        header,
    );
    let visible = app.threads.visible();
    let empty = if let Some(error) = &app.threads.error {
        Some(format!("Cannot list threads: {error}"))
    } else if !app.threads.loaded {
        Some("Loading threads…".to_owned())
    } else if app.threads.threads.is_empty() {
        Some("No threads yet. Ctrl-N starts one.".to_owned())
    } else if visible.is_empty() {
        Some(format!("No thread matches “{}”.", app.threads.filter))
    } else {
        None
    };
    if let Some(empty) = empty {
        let lines = wrap(
            &Line::styled(format!(" {empty}"), DIM),
            body.width as usize,
            &Span::raw(" "),
            false,
        );
        frame.render_widget(Paragraph::new(lines), body);
    } else {
        let rows_fit = body.height.saturating_sub(1) as usize;
        let first = (app.threads.selected + 1).saturating_sub(rows_fit);
        let rows = visible
            .iter()
            .enumerate()
            .skip(first)
            .take(rows_fit)
            .map(|(i, t)| {
                let status = serde_json::to_value(t.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let status_style = if status == "idle" {
                    DIM
                } else {
                    Style::new().yellow()
                };
                let row = Row::new(vec![
                    Line::raw(t.thread_key.to_string()),
                    Line::raw(t.platform.clone()),
                    Line::styled(t.harness.as_str(), Style::new().magenta()),
                    Line::styled(status, status_style),
                    Line::styled(ago(now, t.last_activity_at), DIM),
                ]);
                if i == app.threads.selected {
                    row.style(Style::new().reversed())
                } else {
                    row
                }
            });
        let table = Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(11),
                Constraint::Length(8),
                Constraint::Length(9),
            ],
        )
        .header(Row::new(["thread", "platform", "harness", "status", "active"]).style(DIM.bold()));
        frame.render_widget(table, body);
    }
    let mut spans = vec![
        Span::styled(format!(" {}", host(&app.server)), DIM),
        Span::styled(" · ", DIM),
        Span::raw(format!("{} threads", app.threads.threads.len())),
        Span::styled(" · Enter open · Ctrl-N new · Esc back · F1 help", DIM),
    ];
    if let Some(notice) = &app.notice {
        spans.push(Span::styled(format!(" · {notice}"), Style::new().yellow()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), status);
}

fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        0..5 => "now".to_owned(),
        5..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

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

fn draw_help(frame: &mut Frame, area: Rect) {
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

fn draw_picker(frame: &mut Frame, area: Rect, selected: usize) {
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
