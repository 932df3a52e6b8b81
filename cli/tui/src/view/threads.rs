//! The thread list: a filter, the matching threads most recently active first (by title,
//! badged when they wait for an approval), and a status line.

use centaur_client::render::thread_status;
use centaur_protocol::api::{ThreadStatus, ThreadSummary};
use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};

use unicode_width::UnicodeWidthStr;

use super::text::{ago, host, shorten};
use super::{DIM, clip};
use crate::app::App;
use crate::wrap::wrap;

pub fn draw(frame: &mut Frame, app: &App, area: Rect, now: DateTime<Utc>) {
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
    match empty(app) {
        Some(empty) => {
            let lines = wrap(
                &Line::styled(format!(" {empty}"), DIM),
                body.width as usize,
                &Span::raw(" "),
                false,
            );
            frame.render_widget(Paragraph::new(lines), body);
        }
        None => frame.render_widget(table(app, body, now), body),
    }
    let mut spans = vec![
        Span::styled(format!(" {}", host(&app.server)), DIM),
        Span::styled(" · ", DIM),
        Span::raw(format!("{} threads", app.threads.threads.len())),
    ];
    // A notice takes the place of the hints.
    spans.push(match &app.notice {
        Some(notice) => Span::styled(format!(" · {notice}"), Style::new().yellow()),
        None => Span::styled(" · Enter open · Ctrl-N new · Esc back · F1 help", DIM),
    });
    frame.render_widget(Paragraph::new(Line::from(spans)), status);
}

/// What the list says when it shows no thread.
fn empty(app: &App) -> Option<String> {
    if let Some(error) = &app.threads.error {
        Some(format!("Cannot list threads: {error}"))
    } else if !app.threads.loaded {
        Some("Loading threads…".to_owned())
    } else if app.threads.threads.is_empty() {
        Some("No threads yet. Ctrl-N starts one.".to_owned())
    } else if app.threads.visible().is_empty() {
        Some(format!("No thread matches “{}”.", app.threads.filter))
    } else {
        None
    }
}

/// Columns of the table besides the title and the key: harness, status, last active.
const HARNESS_WIDTH: u16 = 11;
const STATUS_WIDTH: u16 = 8;
const ACTIVE_WIDTH: u16 = 9;
/// Below this many columns for the title and the key together, the key is left out.
const ROOM_FOR_KEY: usize = 40;

/// The badge of a thread waiting for approvals (empty when none waits).
fn badge(waiting: u32) -> String {
    match waiting {
        0 => String::new(),
        1 => "[approval] ".to_owned(),
        n => format!("[{n} approvals] "),
    }
}

/// The visible threads as a table scrolled to keep the chosen one in `body`: each thread's
/// title (its key when untitled) first; the key is what gets cut, then left out, on a narrow
/// terminal.
fn table(app: &App, body: Rect, now: DateTime<Utc>) -> Table<'static> {
    let visible = app.threads.visible();
    let fixed = (HARNESS_WIDTH + STATUS_WIDTH + ACTIVE_WIDTH) as usize;
    // Spaces between the columns: four with the key, three without.
    let room = (body.width as usize).saturating_sub(fixed + 4);
    let label = |t: &ThreadSummary| {
        let title = t.title.as_deref().map(str::trim).filter(|t| !t.is_empty());
        badge(t.waiting_approvals).width()
            + title.map_or_else(|| t.thread_key.as_ref().width(), UnicodeWidthStr::width)
    };
    let (title_width, key_width) = if room < ROOM_FOR_KEY {
        (room + 1, 0)
    } else {
        let longest = visible.iter().map(|t| label(t)).max().unwrap_or(0);
        let title_width = longest.min(room - ROOM_FOR_KEY / 4).max(room / 2);
        (title_width, room - title_width)
    };
    let rows_fit = body.height.saturating_sub(1) as usize;
    let first = (app.threads.selected + 1).saturating_sub(rows_fit);
    let rows: Vec<Row> = visible
        .iter()
        .enumerate()
        .skip(first)
        .take(rows_fit)
        .map(|(i, t)| {
            let status_style = match t.status {
                ThreadStatus::Idle => DIM,
                ThreadStatus::Queued | ThreadStatus::Running => Style::new().yellow(),
                ThreadStatus::Failed => Style::new().red(),
            };
            let badge = badge(t.waiting_approvals);
            let title_room = title_width.saturating_sub(badge.width());
            let (title, key) = match t.title.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                Some(title) => (
                    clip(title, title_room),
                    shorten(t.thread_key.as_ref(), key_width),
                ),
                // Untitled: the key is the title, and not said twice.
                None => (shorten(t.thread_key.as_ref(), title_room), String::new()),
            };
            let mut cells = vec![Line::from(vec![
                Span::styled(badge, Style::new().yellow().bold()),
                Span::raw(title),
            ])];
            if key_width > 0 {
                cells.push(Line::styled(key, DIM));
            }
            cells.extend([
                Line::styled(t.harness.as_str(), Style::new().magenta()),
                Line::styled(thread_status(t.status), status_style),
                Line::styled(ago(now, t.last_activity_at), DIM),
            ]);
            let row = Row::new(cells);
            if i == app.threads.selected {
                row.style(Style::new().reversed())
            } else {
                row
            }
        })
        .collect();
    let mut widths = vec![Constraint::Length(title_width as u16)];
    let mut header = vec!["thread"];
    if key_width > 0 {
        widths.push(Constraint::Length(key_width as u16));
        header.push("key");
    }
    widths.extend([
        Constraint::Length(HARNESS_WIDTH),
        Constraint::Length(STATUS_WIDTH),
        Constraint::Length(ACTIVE_WIDTH),
    ]);
    header.extend(["harness", "status", "active"]);
    Table::new(rows, widths).header(Row::new(header).style(DIM.bold()))
}
