//! The thread screen: the transcript, the reader's line (a search being typed, what a reading
//! key did), a notice, the composer and the status line, with the approval asked about over
//! the transcript.

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block as Frame_, Borders, Paragraph};
use unicode_width::UnicodeWidthStr;

use super::text::shorten;
use super::{DIM, Viewport, approval, status};
use crate::app::{App, Focus, Link, ThreadView};
use crate::reader;

const COMPOSER_MAX_LINES: usize = 8;

pub fn draw(
    frame: &mut Frame,
    app: &App,
    thread: &ThreadView,
    transcript: &mut Viewport,
    area: Rect,
    now: DateTime<Utc>,
) {
    let composer_width = area.width.saturating_sub(2).max(1) as usize;
    let composer = composer_rows(thread, composer_width);
    let composer_height = composer.0.len().min(COMPOSER_MAX_LINES) as u16 + 2;
    let reading = reader::status(thread);
    let [body, reader_area, notice_area, composer_area, status_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(u16::from(reading.is_some())),
        Constraint::Length(u16::from(app.notice.is_some())),
        Constraint::Length(composer_height),
        Constraint::Length(1),
    ])
    .areas(area);
    transcript.draw(frame, thread, body);
    if let Some(reading) = reading {
        draw_reader_line(frame, thread, reader_area, reading);
    }
    if let Some(notice) = &app.notice {
        frame.render_widget(
            Paragraph::new(Line::from(format!(" {notice}")).fg(Color::Yellow)),
            notice_area,
        );
    }
    draw_composer(frame, thread, composer_area, composer);
    frame.render_widget(
        Paragraph::new(status::line(
            &app.server,
            thread,
            now,
            status_area.width as usize,
        )),
        status_area,
    );
    if let Some(asking) = thread.asking() {
        approval::draw(frame, thread, body, asking, app.approval_armed());
    }
}

/// The reader's line: the query being typed (with the cursor after it), or what the search or
/// the last reading key says.
fn draw_reader_line(frame: &mut Frame, thread: &ThreadView, area: Rect, text: String) {
    let typing = thread.reading.search.as_ref().filter(|s| s.typing);
    let line = match typing {
        Some(search) => {
            let query = format!("/{}", search.query);
            let rest = text.strip_prefix(&query).unwrap_or("").to_owned();
            Line::from(vec![
                Span::raw(" "),
                Span::styled(query, Style::new().bold()),
                Span::styled(rest, DIM),
                Span::styled("  Enter finds · Esc cancels", DIM),
            ])
        }
        None => Line::from(format!(" {text}")).fg(Color::Cyan),
    };
    frame.render_widget(Paragraph::new(line), area);
    if let Some(search) = typing
        && area.height > 0
    {
        let column = 2 + search.query.width() as u16;
        frame.set_cursor_position((area.x + column.min(area.width.saturating_sub(1)), area.y));
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

/// What the composer's title says it is for.
fn composer_title(thread: &ThreadView) -> String {
    if thread
        .transcript
        .pending
        .iter()
        .any(|_| thread.asking().is_some())
    {
        " decide the approval above ".to_owned()
    } else if thread.transcript.running.is_some() {
        " steer the running turn · Esc interrupts ".to_owned()
    } else if thread.link == Link::New {
        match thread.harness {
            Some(harness) => format!(" new thread · {} ", harness.as_str()),
            None => " new thread ".to_owned(),
        }
    } else {
        " message ".to_owned()
    }
}

fn draw_composer(
    frame: &mut Frame,
    thread: &ThreadView,
    area: Rect,
    (rows, cursor): (Vec<String>, (usize, usize)),
) {
    let title = composer_title(thread);
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
        let hint = "Type a message · Enter sends · Shift+Enter new line · Ctrl-F search · F1 help";
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
