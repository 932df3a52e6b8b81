//! The thread list: a filter, the matching threads most recently active first (by title,
//! badged when they wait for an approval; a Slack thread's channel and who started it before
//! its title), and a status line.

use centaur_client::render::{slack_origin, thread_status};
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
    let mut spans = vec![
        Span::styled(" Threads ", Style::new().bold().reversed()),
        Span::raw("  "),
    ];
    if app.threads.slack_only {
        spans.extend([
            Span::styled("Slack only", SLACK.bold()),
            Span::styled(" (Ctrl-S all) · ", DIM),
        ]);
    }
    spans.extend([Span::styled("filter: ", DIM), filter]);
    frame.render_widget(Paragraph::new(Line::from(spans)), header);
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
        // The Slack toggle is offered where there is Slack to show.
        None if app.threads.slack_only || app.threads.threads.iter().any(|t| t.slack.is_some()) => {
            Span::styled(
                " · Enter open · Ctrl-N new · Ctrl-S Slack only · Esc back · F1 help",
                DIM,
            )
        }
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
    } else if app.threads.visible().is_empty()
        && app.threads.slack_only
        && app.threads.filter.is_empty()
    {
        Some(
            "No Slack thread yet: mention the bot in Slack to start one. Ctrl-S shows all."
                .to_owned(),
        )
    } else if app.threads.visible().is_empty() {
        Some(format!("No thread matches “{}”.", app.threads.filter))
    } else {
        None
    }
}

/// How a Slack thread's channel and starter are shown.
const SLACK: Style = Style::new().fg(ratatui::style::Color::Blue);

/// A Slack thread's channel and who started it, with the space after them (empty for others).
fn origin(t: &ThreadSummary) -> String {
    t.slack
        .as_ref()
        .map(|o| format!("{}  ", slack_origin(o)))
        .unwrap_or_default()
}

/// Below this many columns for the title itself, a Slack thread shows only its channel, then
/// nothing before the title: the title says what the thread is about.
const TITLE_ROOM: usize = 20;

/// [`origin`] fitted before a title in `room` columns: whole, else the channel alone, else
/// nothing.
fn origin_within(t: &ThreadSummary, room: usize) -> String {
    let whole = origin(t);
    if room.saturating_sub(whole.width()) >= TITLE_ROOM {
        return whole;
    }
    let channel = whole
        .split(" · ")
        .next()
        .map(|c| format!("{}  ", c.trim_end()))
        .unwrap_or_default();
    if room.saturating_sub(channel.width()) >= TITLE_ROOM {
        channel
    } else {
        String::new()
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
            + origin(t).width()
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
            // The channel and starter are kept whole before the title; the title is cut.
            let origin = origin_within(t, title_width.saturating_sub(badge.width()));
            let title_room = title_width.saturating_sub(badge.width() + origin.width());
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
                Span::styled(origin, SLACK),
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
