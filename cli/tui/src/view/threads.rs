//! The thread list: a filter, the matching threads most recently active first, and a status
//! line.

use centaur_client::render::thread_status;
use centaur_protocol::api::ThreadStatus;
use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};

use super::DIM;
use super::text::{ago, host};
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
        Span::styled(" · Enter open · Ctrl-N new · Esc back · F1 help", DIM),
    ];
    if let Some(notice) = &app.notice {
        spans.push(Span::styled(format!(" · {notice}"), Style::new().yellow()));
    }
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

/// The visible threads as a table scrolled to keep the chosen one in `body`.
fn table(app: &App, body: Rect, now: DateTime<Utc>) -> Table<'static> {
    let rows_fit = body.height.saturating_sub(1) as usize;
    let first = (app.threads.selected + 1).saturating_sub(rows_fit);
    let rows: Vec<Row> = app
        .threads
        .visible()
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
            let row = Row::new(vec![
                Line::raw(t.thread_key.to_string()),
                Line::raw(t.platform.clone()),
                Line::styled(t.harness.as_str(), Style::new().magenta()),
                Line::styled(thread_status(t.status), status_style),
                Line::styled(ago(now, t.last_activity_at), DIM),
            ]);
            if i == app.threads.selected {
                row.style(Style::new().reversed())
            } else {
                row
            }
        })
        .collect();
    Table::new(
        rows,
        [
            Constraint::Fill(1),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(8),
            Constraint::Length(9),
        ],
    )
    .header(Row::new(["thread", "platform", "harness", "status", "active"]).style(DIM.bold()))
}
