//! The agent's Markdown as terminal lines: headings, emphasis, lists, quotes, tables, links,
//! and code blocks with syntax highlighting. Already wrapped to the width it is drawn at.

use pulldown_cmark::{Alignment, CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use unicode_width::UnicodeWidthStr;

use super::highlight;
use super::wrap::wrap;

pub const INLINE_CODE: Style = Style::new().fg(Color::LightYellow);
const CODE_GUTTER: &str = "│ ";
const TABLE_LINE: Style = Style::new().fg(Color::DarkGray);
/// Between two cells of a table row, and where the header's rule crosses it.
const CELL_SEPARATOR: &str = " │ ";
const RULE_CROSSING: &str = "─┼─";

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS
}

/// Renders `text` at `width` columns.
pub fn render(text: &str, width: usize) -> Vec<Line<'static>> {
    let mut writer = Writer {
        width,
        ..Writer::default()
    };
    for event in Parser::new_ext(text, options()) {
        writer.event(event);
    }
    writer.flush();
    writer.lines
}

/// The text `text` shows once rendered, without its markup (what a search looks in).
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for event in Parser::new_ext(text, options()) {
        match event {
            Event::Text(text)
            | Event::Code(text)
            | Event::InlineMath(text)
            | Event::DisplayMath(text)
            | Event::Html(text)
            | Event::InlineHtml(text) => out.push_str(&text),
            Event::SoftBreak | Event::End(TagEnd::TableCell) => out.push(' '),
            Event::HardBreak | Event::Rule => out.push('\n'),
            Event::End(tag) => {
                if matches!(
                    tag,
                    TagEnd::Paragraph
                        | TagEnd::Heading(_)
                        | TagEnd::Item
                        | TagEnd::TableHead
                        | TagEnd::TableRow
                        | TagEnd::BlockQuote(_)
                ) {
                    out.push('\n');
                }
            }
            Event::Start(_) | Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
    }
    out
}

/// A table while its rows arrive: it is drawn once whole, with its columns' widths known.
#[derive(Default)]
struct Table {
    alignments: Vec<Alignment>,
    /// Rows of cells, each cell its styled text.
    rows: Vec<Vec<Vec<Span<'static>>>>,
    /// Whether the first row is the header.
    head: bool,
    in_head: bool,
    cells: Vec<Vec<Span<'static>>>,
}

/// A container that prefixes its lines: a list item (marker, then spaces) or a quote.
struct Container {
    first: Span<'static>,
    rest: Span<'static>,
    used: bool,
}

#[derive(Default)]
struct Writer {
    width: usize,
    lines: Vec<Line<'static>>,
    spans: Vec<Span<'static>>,
    styles: Vec<Style>,
    containers: Vec<Container>,
    lists: Vec<Option<u64>>,
    code: Option<(String, String)>,
    link: Option<String>,
    table: Option<Table>,
    blank_before_next: bool,
}

impl Writer {
    fn style(&self) -> Style {
        self.styles
            .iter()
            .fold(Style::default(), |acc, style| acc.patch(*style))
    }

    /// Starts a block: a blank line between it and the block before.
    fn block(&mut self) {
        self.flush();
        if std::mem::take(&mut self.blank_before_next) && !self.lines.is_empty() {
            let prefix = self.prefix(true);
            self.lines.push(Line::from(prefix.0));
        }
    }

    /// The prefix spans of the next line and the indent of its continuation lines.
    fn prefix(&mut self, blank: bool) -> (Vec<Span<'static>>, Span<'static>) {
        let mut first = Vec::new();
        let mut rest = String::new();
        let mut rest_style = Style::default();
        for container in &mut self.containers {
            if container.used || blank {
                first.push(container.rest.clone());
            } else {
                first.push(container.first.clone());
                container.used = true;
            }
            rest.push_str(&container.rest.content);
            rest_style = container.rest.style;
        }
        (first, Span::styled(rest, rest_style))
    }

    fn flush(&mut self) {
        if self.spans.is_empty() {
            return;
        }
        let spans = std::mem::take(&mut self.spans);
        let (mut line, indent) = self.prefix(false);
        line.extend(spans);
        self.lines
            .extend(wrap(&Line::from(line), self.width, &indent, false));
    }

    fn text(&mut self, text: &str) {
        let style = self.style();
        self.spans.push(Span::styled(text.to_owned(), style));
    }

    fn event(&mut self, event: Event<'_>) {
        if let Some((_, code)) = &mut self.code {
            match event {
                Event::Text(text) => {
                    code.push_str(&text);
                    return;
                }
                Event::End(TagEnd::CodeBlock) => {}
                Event::Start(_)
                | Event::End(_)
                | Event::Code(_)
                | Event::InlineMath(_)
                | Event::DisplayMath(_)
                | Event::Html(_)
                | Event::InlineHtml(_)
                | Event::FootnoteReference(_)
                | Event::SoftBreak
                | Event::HardBreak
                | Event::Rule
                | Event::TaskListMarker(_) => return,
            }
        }
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(text) => self.text(&text),
            Event::Code(code) => {
                let style = self.style().patch(INLINE_CODE);
                self.spans.push(Span::styled(code.to_string(), style));
            }
            Event::InlineMath(text) | Event::DisplayMath(text) => self.text(&text),
            Event::Html(html) | Event::InlineHtml(html) => {
                for (i, line) in html.trim_end_matches('\n').split('\n').enumerate() {
                    if i > 0 {
                        self.flush();
                    }
                    self.text(line);
                }
            }
            Event::SoftBreak => self.text(" "),
            Event::HardBreak => self.flush(),
            Event::Rule => {
                self.block();
                let rule = "─".repeat(self.width.clamp(1, 60));
                self.lines
                    .push(Line::styled(rule, Style::new().fg(Color::DarkGray)));
                self.blank_before_next = true;
            }
            Event::TaskListMarker(done) => self.text(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(name) => self.text(&format!("[^{name}]")),
        }
    }

    fn start(&mut self, tag: Tag<'_>) {
        match tag {
            Tag::Paragraph => self.block(),
            Tag::Heading { level, .. } => {
                self.block();
                self.styles.push(match level {
                    HeadingLevel::H1 => Style::new()
                        .fg(Color::Magenta)
                        .add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
                    HeadingLevel::H2 => Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
                    HeadingLevel::H3 | HeadingLevel::H4 | HeadingLevel::H5 | HeadingLevel::H6 => {
                        Style::new().add_modifier(Modifier::BOLD)
                    }
                });
            }
            Tag::BlockQuote(_) => {
                self.block();
                let bar = Span::styled("▌ ", Style::new().fg(Color::Green));
                self.containers.push(Container {
                    first: bar.clone(),
                    rest: bar,
                    used: false,
                });
                self.styles
                    .push(Style::new().add_modifier(Modifier::ITALIC));
            }
            Tag::CodeBlock(kind) => {
                self.block();
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                self.code = Some((language, String::new()));
            }
            Tag::List(start) => {
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.flush();
                }
                self.lists.push(start);
            }
            Tag::Item => {
                self.flush();
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let marker = format!("{n}. ");
                        *n += 1;
                        marker
                    }
                    _ => "• ".to_owned(),
                };
                let width = marker.chars().count();
                self.containers.push(Container {
                    first: Span::styled(marker, Style::new().fg(Color::Cyan)),
                    rest: Span::raw(" ".repeat(width)),
                    used: false,
                });
            }
            Tag::Emphasis => self
                .styles
                .push(Style::new().add_modifier(Modifier::ITALIC)),
            Tag::Strong => self.styles.push(Style::new().add_modifier(Modifier::BOLD)),
            Tag::Strikethrough => self
                .styles
                .push(Style::new().add_modifier(Modifier::CROSSED_OUT)),
            Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. } => {
                self.link = Some(dest_url.to_string());
                self.styles.push(
                    Style::new()
                        .fg(Color::LightBlue)
                        .add_modifier(Modifier::UNDERLINED),
                );
            }
            Tag::Table(alignments) => {
                self.block();
                self.table = Some(Table {
                    alignments,
                    ..Table::default()
                });
            }
            Tag::TableHead => {
                if let Some(table) = &mut self.table {
                    table.in_head = true;
                }
            }
            Tag::TableRow | Tag::TableCell => {}
            Tag::HtmlBlock
            | Tag::FootnoteDefinition(_)
            | Tag::DefinitionList
            | Tag::DefinitionListTitle
            | Tag::DefinitionListDefinition
            | Tag::Superscript
            | Tag::Subscript
            | Tag::MetadataBlock(_) => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                self.flush();
                self.blank_before_next = true;
            }
            TagEnd::Heading(_) => {
                self.styles.pop();
                self.flush();
                self.blank_before_next = true;
            }
            TagEnd::BlockQuote(_) => {
                self.flush();
                self.styles.pop();
                self.containers.pop();
                self.blank_before_next = true;
            }
            TagEnd::CodeBlock => {
                if let Some((language, code)) = self.code.take() {
                    self.code_block(&language, &code);
                }
                self.blank_before_next = true;
            }
            TagEnd::List(_) => {
                self.flush();
                self.lists.pop();
                if self.lists.is_empty() {
                    self.blank_before_next = true;
                }
            }
            TagEnd::Item => {
                self.flush();
                self.containers.pop();
                // Paragraphs inside loose items do not add space before the next item.
                self.blank_before_next = false;
            }
            TagEnd::Emphasis | TagEnd::Strong | TagEnd::Strikethrough => {
                self.styles.pop();
            }
            TagEnd::Link | TagEnd::Image => {
                self.styles.pop();
                if let Some(url) = self.link.take() {
                    let shown: String = self
                        .spans
                        .last()
                        .map(|s| s.content.to_string())
                        .unwrap_or_default();
                    if shown != url && !url.is_empty() {
                        self.spans.push(Span::styled(
                            format!(" ({url})"),
                            Style::new().fg(Color::DarkGray),
                        ));
                    }
                }
            }
            TagEnd::TableCell => {
                let cell = std::mem::take(&mut self.spans);
                if let Some(table) = &mut self.table {
                    table.cells.push(cell);
                }
            }
            TagEnd::TableHead | TagEnd::TableRow => {
                if let Some(table) = &mut self.table {
                    if std::mem::take(&mut table.in_head) {
                        table.head = true;
                    }
                    let cells = std::mem::take(&mut table.cells);
                    table.rows.push(cells);
                }
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    self.table_lines(table);
                }
                self.blank_before_next = true;
            }
            TagEnd::HtmlBlock
            | TagEnd::FootnoteDefinition
            | TagEnd::DefinitionList
            | TagEnd::DefinitionListTitle
            | TagEnd::DefinitionListDefinition
            | TagEnd::Superscript
            | TagEnd::Subscript
            | TagEnd::MetadataBlock(_) => {}
        }
    }

    /// A table with its columns aligned: each as wide as its widest cell, the widest narrowed
    /// until the table fits, cells wrapped within their column; a rule under the header.
    fn table_lines(&mut self, table: Table) {
        let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
        if columns == 0 {
            return;
        }
        let cell_width = |cell: &[Span<'static>]| cell.iter().map(Span::width).sum::<usize>();
        let mut widths = vec![1; columns];
        for row in &table.rows {
            for (column, cell) in row.iter().enumerate() {
                widths[column] = widths[column].max(cell_width(cell));
            }
        }
        let (_, indent) = self.prefix(true);
        let room = self
            .width
            .saturating_sub(indent.width() + CELL_SEPARATOR.width() * (columns - 1))
            .max(columns);
        while widths.iter().sum::<usize>() > room {
            let (widest, width) = widths
                .iter()
                .copied()
                .enumerate()
                .max_by_key(|(i, w)| (*w, usize::MAX - i))
                .expect("a table has columns");
            if width <= 1 {
                break;
            }
            widths[widest] = width - 1;
        }
        for (r, row) in table.rows.into_iter().enumerate() {
            let head = table.head && r == 0;
            let mut cells: Vec<Vec<Line<'static>>> = Vec::with_capacity(columns);
            for (column, width) in widths.iter().enumerate() {
                let mut spans = row.get(column).cloned().unwrap_or_default();
                if head {
                    spans = spans
                        .into_iter()
                        .map(|span| span.add_modifier(Modifier::BOLD))
                        .collect();
                }
                cells.push(wrap(&Line::from(spans), *width, &Span::raw(""), false));
            }
            let height = cells.iter().map(Vec::len).max().unwrap_or(1);
            for i in 0..height {
                let (mut line, _) = self.prefix(false);
                for (column, width) in widths.iter().enumerate() {
                    if column > 0 {
                        line.push(Span::styled(CELL_SEPARATOR, TABLE_LINE));
                    }
                    let text = cells[column].get(i).cloned().unwrap_or_default();
                    let alignment = table
                        .alignments
                        .get(column)
                        .copied()
                        .unwrap_or(Alignment::None);
                    let gap = width.saturating_sub(text.width());
                    let (before, after) = match alignment {
                        Alignment::None | Alignment::Left => (0, gap),
                        Alignment::Right => (gap, 0),
                        Alignment::Center => (gap / 2, gap - gap / 2),
                    };
                    if before > 0 {
                        line.push(Span::raw(" ".repeat(before)));
                    }
                    line.extend(text.spans);
                    // The last column needs no padding after it.
                    if after > 0 && column + 1 < columns {
                        line.push(Span::raw(" ".repeat(after)));
                    }
                }
                self.lines.push(Line::from(line));
            }
            if head {
                let (mut line, _) = self.prefix(false);
                let rule: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
                line.push(Span::styled(rule.join(RULE_CROSSING), TABLE_LINE));
                self.lines.push(Line::from(line));
            }
        }
    }

    fn code_block(&mut self, language: &str, code: &str) {
        let code = code.strip_suffix('\n').unwrap_or(code);
        let raw: Vec<&str> = code.split('\n').collect();
        let plain = Style::new().fg(Color::Gray);
        let highlighted = highlight::highlight(language, &raw).unwrap_or_else(|| {
            raw.iter()
                .map(|line| vec![Span::styled((*line).to_owned(), plain)])
                .collect()
        });
        let gutter = Span::styled(CODE_GUTTER, Style::new().fg(Color::DarkGray));
        for spans in highlighted {
            let (mut line, indent) = self.prefix(false);
            line.push(gutter.clone());
            line.extend(spans);
            let indent = Span::styled(
                format!("{}{CODE_GUTTER}", indent.content),
                Style::new().fg(Color::DarkGray),
            );
            self.lines
                .extend(wrap(&Line::from(line), self.width, &indent, true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str, width: usize) -> Vec<String> {
        render(text, width).iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn blocks_lists_quotes_and_code() {
        let markdown = "# Title\n\nSome *text* with `code` and a [link](https://example.com).\n\n- one\n- two\n  1. nested\n\n> quoted\n\n```sh\necho hi\n```\n";
        assert_eq!(
            texts(markdown, 80),
            [
                "Title",
                "",
                "Some text with code and a link (https://example.com).",
                "",
                "• one",
                "• two",
                "  1. nested",
                "",
                "▌ quoted",
                "",
                "│ echo hi",
            ]
        );
    }

    #[test]
    fn list_items_wrap_under_their_text() {
        assert_eq!(
            texts("- a list item that is too long", 14),
            ["• a list item ", "  that is too ", "  long"]
        );
    }

    #[test]
    fn highlighted_code_keeps_its_text_and_gains_colours() {
        highlight::load_now();
        let lines = render("```rust\nlet x = 1;\n```", 40);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].to_string(), "│ let x = 1;");
        let colours: std::collections::HashSet<_> =
            lines[0].spans.iter().filter_map(|s| s.style.fg).collect();
        assert!(colours.len() >= 3, "{lines:?}");
    }

    /// A table's columns line up, each as wide as its widest cell, with a rule under the
    /// header and right-aligned columns aligned right.
    #[test]
    fn tables_are_aligned() {
        let markdown = "| file | size |\n|---|---:|\n| README.md | 12 KiB |\n| a | 3 B |\n";
        assert_eq!(
            texts(markdown, 80),
            [
                "file      │   size",
                "──────────┼───────",
                "README.md │ 12 KiB",
                "a         │    3 B",
            ]
        );
    }

    /// A table wider than the screen narrows its widest column and wraps that column's cells,
    /// and no line is wider than the width.
    #[test]
    fn a_wide_table_wraps_its_widest_column() {
        let markdown =
            "| key | what it does |\n|---|---|\n| g | jumps to the first block of the thread |\n";
        let lines = texts(markdown, 30);
        assert_eq!(
            lines,
            [
                "key │ what it does",
                "────┼─────────────────────────",
                "g   │ jumps to the first block",
                "    │ of the thread",
            ]
        );
        assert!(lines.iter().all(|l| l.width() <= 30), "{lines:?}");
    }

    /// A table in a list item sits under the item's text; a table with more columns than
    /// room still draws, each column at least one wide.
    #[test]
    fn tables_in_lists_and_in_no_room() {
        assert_eq!(
            texts("- sizes:\n\n  | a | b |\n  |---|---|\n  | 1 | 2 |\n", 40),
            ["• sizes:", "  ", "  a │ b", "  ──┼──", "  1 │ 2"]
        );
        let lines = texts(
            "| a | b | c | d |\n|---|---|---|---|\n| 1 | 2 | 3 | 4 |\n",
            6,
        );
        assert_eq!(lines[0], "a │ b │ c │ d");
    }

    #[test]
    fn plain_text_drops_the_markup() {
        assert_eq!(
            plain("Use **two** `ls`\nflags:\n\n- one\n"),
            "Use two ls flags:\none\n"
        );
    }

    #[test]
    fn an_unclosed_fence_while_streaming_is_code_so_far() {
        assert_eq!(
            texts("Here:\n\n```py\nprint(1)", 40),
            ["Here:", "", "│ print(1)"]
        );
    }
}
