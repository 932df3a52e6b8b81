//! Wrapping styled lines to a width, so the view knows every block's height before drawing.
//! A continuation line never starts with the space the line broke at; a line indented with
//! spaces (code, output) keeps its indentation on its continuation lines. A search's matches
//! are marked in a line before it is split (see [`crate::marks`]).

use ratatui::style::Style;
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthChar;

use crate::marks;

/// Splits `line` into lines at most `width` columns wide: at spaces where it can, mid-word
/// where a word is longer than the line. Continuation lines start with `indent` (a hanging
/// indent for list items and quotes), or with as many spaces as `line` starts with when that is
/// more and `indent` is blank (indented code and output stay indented, up to half the width).
/// `hard` wraps at the width exactly (for code and output, where spacing matters); either way
/// the spaces at a break are dropped from the start of the next line.
pub fn wrap(
    line: &Line<'static>,
    width: usize,
    indent: &Span<'static>,
    hard: bool,
) -> Vec<Line<'static>> {
    // A search's matches are marked before the line is split, so a split one shows on both.
    let marked = marks::mark(line);
    let line = marked.as_ref().unwrap_or(line);
    let width = width.max(1);
    let chars = styled_chars(line);
    if chars
        .iter()
        .map(|(c, _)| c.width().unwrap_or(0))
        .sum::<usize>()
        <= width
    {
        return vec![line.clone()];
    }
    let leading = chars.iter().take_while(|(c, _)| *c == ' ').count();
    let blank_indent = indent.content.chars().all(|c| c == ' ');
    let own_indent;
    let indent = if blank_indent && leading > indent.width() {
        own_indent = Span::raw(" ".repeat(leading.min(width / 2)));
        &own_indent
    } else {
        indent
    };
    let indent_width = indent.width().min(width.saturating_sub(1));
    let mut lines = Vec::new();
    let mut current: Vec<(char, Style)> = Vec::new();
    let mut current_width = 0;
    let mut limit = width;
    // Index in `current` just after the last space: where a soft break may go.
    let mut break_at: Option<usize> = None;
    for (c, style) in chars {
        let w = c.width().unwrap_or(0);
        if current_width + w > limit && !current.is_empty() {
            let next_limit = width - indent_width;
            let fits_next = |at: usize| {
                current[at..]
                    .iter()
                    .map(|(c, _)| c.width().unwrap_or(0))
                    .sum::<usize>()
                    + w
                    <= next_limit
            };
            // A soft break where the rest of the word fits on the next line; else mid-word.
            let rest = match break_at.filter(|at| !hard && c != ' ' && fits_next(*at)) {
                Some(at) => current.split_off(at),
                None => Vec::new(),
            };
            lines.push(finish(
                std::mem::take(&mut current),
                lines.is_empty(),
                indent,
            ));
            current = rest;
            current_width = current.iter().map(|(c, _)| c.width().unwrap_or(0)).sum();
            limit = width - indent_width;
            break_at = None;
        }
        if c == ' ' && current.is_empty() && !lines.is_empty() {
            // Spaces at a break are swallowed: a continuation starts with its text.
            continue;
        }
        current.push((c, style));
        current_width += w;
        if c == ' ' {
            break_at = Some(current.len());
        }
    }
    if !current.is_empty() || lines.is_empty() {
        lines.push(finish(current, lines.is_empty(), indent));
    }
    lines
}

fn finish(chars: Vec<(char, Style)>, first: bool, indent: &Span<'static>) -> Line<'static> {
    let mut spans = Vec::new();
    if !first && !indent.content.is_empty() {
        spans.push(indent.clone());
    }
    spans.extend(styled_runs(chars));
    Line::from(spans)
}

/// `line`'s characters, each with its style (the line's patched by its span's).
pub fn styled_chars(line: &Line<'_>) -> Vec<(char, Style)> {
    line.spans
        .iter()
        .flat_map(|span| {
            let style = line.style.patch(span.style);
            span.content.chars().map(move |c| (c, style))
        })
        .collect()
}

/// Characters with their styles as spans, one a run of a style.
pub fn styled_runs(chars: Vec<(char, Style)>) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    let mut text = String::new();
    let mut style = None;
    for (c, s) in chars {
        if let Some(current) = style
            && current != s
        {
            spans.push(Span::styled(std::mem::take(&mut text), current));
        }
        style = Some(s);
        text.push(c);
    }
    if let Some(style) = style {
        spans.push(Span::styled(text, style));
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn wraps_at_spaces_with_a_hanging_indent() {
        let line = Line::from("• one two three four five");
        let lines = wrap(&line, 12, &Span::raw("  "), false);
        assert_eq!(texts(&lines), ["• one two ", "  three four", "  five"]);
    }

    #[test]
    fn long_words_and_hard_wrapping_split_mid_word() {
        let line = Line::from("abcdefghij klm");
        assert_eq!(
            texts(&wrap(&line, 4, &Span::raw(""), false)),
            ["abcd", "efgh", "ij ", "klm"]
        );
        assert_eq!(
            texts(&wrap(&line, 5, &Span::raw(""), true)),
            ["abcde", "fghij", "klm"]
        );
    }

    /// A continuation line starts with its text, not with the spaces the line broke at, in
    /// prose (two spaces after a full stop) and in hard-wrapped output alike.
    #[test]
    fn no_continuation_starts_with_a_space() {
        let line = Line::from("one two.  three four.   five");
        for hard in [false, true] {
            for width in 3..line.width() {
                for wrapped in wrap(&line, width, &Span::raw(""), hard).iter().skip(1) {
                    assert!(
                        !wrapped.to_string().starts_with(' '),
                        "width {width}, hard {hard}: {wrapped:?}"
                    );
                }
            }
        }
    }

    /// Indented output keeps its indentation on its continuation lines.
    #[test]
    fn indented_lines_stay_indented() {
        let line = Line::from("      File \"main.py\", line 3, in run");
        assert_eq!(
            texts(&wrap(&line, 24, &Span::raw("  "), true)),
            ["      File \"main.py\", li", "      ne 3, in run"]
        );
    }

    /// A word longer than a continuation line is cut, never wider than the width.
    #[test]
    fn no_line_is_wider_than_the_width() {
        let line = Line::from(format!("› {}", "a".repeat(20)));
        for line in wrap(&line, 10, &Span::raw("  "), false) {
            assert!(line.width() <= 10, "{line:?}");
        }
    }

    #[test]
    fn wide_characters_count_double() {
        let line = Line::from("日本語のテキスト");
        let lines = wrap(&line, 6, &Span::raw(""), true);
        assert_eq!(texts(&lines), ["日本語", "のテキ", "スト"]);
    }
}
