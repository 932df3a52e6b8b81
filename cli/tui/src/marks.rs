//! A search's matches, marked in a block's lines as they are laid out: in each line before it
//! is wrapped, so a match a wrap splits is marked on both lines, and counted in the order the
//! lines are drawn. Counting a block's matches ([`count`]) lays it out open the same way, so
//! the count, n/N and what is highlighted agree.
//!
//! While a block is laid out inside [`marking`], [`crate::wrap::wrap`] marks each line it is
//! given; lines a layout does not draw (a folded command's hidden output) are [`skip`]ped so
//! the matches after them keep their numbers.

use std::cell::RefCell;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;

use crate::reader::{find, fold};

/// A match.
pub const MATCH: Style = Style::new().fg(Color::Black).bg(Color::Yellow);
/// The search's current match.
pub const CURRENT_MATCH: Style = Style::new()
    .fg(Color::Black)
    .bg(Color::LightRed)
    .add_modifier(Modifier::BOLD);

struct Marking {
    needle: Vec<char>,
    /// Which match (from 0, in this layout) is the current one.
    current: Option<usize>,
    /// Matches seen so far in this layout.
    seen: usize,
}

thread_local! {
    static MARKING: RefCell<Option<Marking>> = const { RefCell::new(None) };
}

/// Runs `lay_out` with `needle`'s matches marked in the lines it wraps, the `current`-th most;
/// what it laid out, and how many matches it saw.
pub fn marking<T>(
    needle: &[char],
    current: Option<usize>,
    lay_out: impl FnOnce() -> T,
) -> (T, usize) {
    let outer = MARKING.replace(Some(Marking {
        needle: needle.to_vec(),
        current,
        seen: 0,
    }));
    let laid_out = lay_out();
    let seen = MARKING.replace(outer).map_or(0, |m| m.seen);
    (laid_out, seen)
}

/// `line` with the matches in it marked, when [`marking`]; `None` when not marking or nothing
/// in it matches.
pub fn mark(line: &Line<'static>) -> Option<Line<'static>> {
    MARKING.with_borrow_mut(|marking| {
        let marking = marking.as_mut().filter(|m| !m.needle.is_empty())?;
        let chars = crate::wrap::styled_chars(line);
        let text: String = chars.iter().map(|(c, _)| c).collect();
        let found = find(&fold(&text), &marking.needle);
        if found.is_empty() {
            return None;
        }
        let mut chars = chars;
        for range in found {
            let style = if marking.current == Some(marking.seen) {
                CURRENT_MATCH
            } else {
                MATCH
            };
            for (_, s) in &mut chars[range] {
                *s = s.patch(style);
            }
            marking.seen += 1;
        }
        Some(Line::from(crate::wrap::styled_runs(chars)))
    })
}

/// Counts the matches in lines the layout does not draw, so later ones keep their numbers.
pub fn skip(lines: &[Line<'static>]) {
    MARKING.with_borrow_mut(|marking| {
        if let Some(marking) = marking.as_mut().filter(|m| !m.needle.is_empty()) {
            for line in lines {
                marking.seen += find(&fold(&line.to_string()), &marking.needle).len();
            }
        }
    });
}

/// Whether `line` shows the current match.
pub fn has_current(line: &Line<'_>) -> bool {
    line.spans
        .iter()
        .any(|span| line.style.patch(span.style).bg == CURRENT_MATCH.bg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wrap::wrap;
    use ratatui::text::Span;

    fn marked(lines: &[Line<'static>], style: Style) -> String {
        lines
            .iter()
            .flat_map(|line| line.spans.iter())
            .filter(|span| span.style.bg == style.bg)
            .map(|span| span.content.as_ref())
            .collect()
    }

    /// Matches are numbered across the lines laid out, skipped ones included, and one split
    /// by a wrap is marked on both of its lines.
    #[test]
    fn a_match_split_by_a_wrap_is_marked_on_both_lines() {
        let needle = fold("Retry");
        let (lines, seen) = marking(&needle, Some(2), || {
            skip(&[Line::from("retry, hidden")]);
            let mut lines = wrap(&Line::from("retry then"), 40, &Span::raw(""), false);
            lines.extend(wrap(&Line::from("one two RETRY"), 10, &Span::raw(""), true));
            lines
        });
        assert_eq!(seen, 3);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[1].to_string(), "one two RE");
        assert_eq!(marked(&lines, CURRENT_MATCH), "RETRY");
        assert_eq!(marked(&lines, MATCH), "retry");
        assert!(has_current(&lines[1]) && has_current(&lines[2]));
        // Outside `marking`, nothing is marked.
        assert_eq!(mark(&Line::from("retry")), None);
    }
}
