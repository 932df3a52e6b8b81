//! Fitting text to a width, and the numbers and names the screens show.

pub use centaur_client::render::{ago, clip};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use super::DIM;
use crate::wrap::wrap;

/// `line` cut to `width` columns with an ellipsis.
pub fn truncate(line: &Line<'static>, width: usize) -> Line<'static> {
    if line.width() <= width {
        return line.clone();
    }
    let mut lines = wrap(line, width.saturating_sub(1).max(1), &Span::raw(""), true);
    let mut first = lines.swap_remove(0);
    first.spans.push(Span::styled("…", DIM));
    first
}

/// `text` cut to `width` columns, keeping its start and end.
pub fn shorten(text: &str, width: usize) -> String {
    if text.width() <= width || width < 5 {
        return text.to_owned();
    }
    let keep = width - 1;
    let head: String = text.chars().take(keep - keep / 3).collect();
    let tail: Vec<char> = text.chars().rev().take(keep / 3).collect();
    format!("{head}…{}", tail.into_iter().rev().collect::<String>())
}

/// How long a turn took, from tenths of a second up to hours.
pub fn duration(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..10 => format!("{:.1}s", ms as f64 / 1000.0),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// How long something has been running.
pub fn seconds(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m {:02}s", secs / 60, secs % 60),
        _ => format!("{}h {:02}m", secs / 3600, (secs % 3600) / 60),
    }
}

/// A token count, in thousands or millions when large.
pub fn tokens(n: u64) -> String {
    match n {
        0..1000 => n.to_string(),
        1000..1_000_000 => format!("{:.1}k", n as f64 / 1000.0),
        _ => format!("{:.1}M", n as f64 / 1_000_000.0),
    }
}

/// The server's address without its scheme.
pub fn host(server: &str) -> String {
    server
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}
