//! The transcript's viewport: how far it is scrolled up from the end (0 follows new output),
//! and each block's lines at the current width, laid out again only when the block, its fold or
//! its selection changes, so a frame with a long transcript costs the lines on screen, not the
//! whole thread. The selected block is drawn with a bar down its left side; a search's matches
//! are marked as a block is laid out (see [`crate::marks`]), and revealing the current one
//! scrolls to its line.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use unicode_width::UnicodeWidthStr;

use super::DIM;
use super::blocks;
use crate::app::{Focus, Link, Scroll, Scrolls, ThreadView};
use crate::highlight;
use crate::marks;
use crate::reader;
use crate::transcript::Block;
use crate::wrap::wrap;

/// Down the left of the selected block.
const SELECTED_BAR: &str = "▌ ";
const SELECTED: Style = Style::new().fg(Color::Cyan);

/// Width at which blocks are laid out to count a search's matches: any would do, since lines
/// are marked before they are wrapped.
const COUNTING_WIDTH: usize = 200;

#[derive(Default)]
pub struct Viewport {
    /// The [`ThreadView::serial`] this viewport shows; another thread starts afresh.
    thread: Option<u64>,
    /// Lines scrolled up from the end; 0 follows new output.
    scroll: usize,
    entries: Vec<Option<Entry>>,
    width: u16,
    highlighted: bool,
    /// Whether command output was laid out as Markdown.
    output_as_markdown: bool,
    /// Rows the transcript had in the last frame (a page).
    height: usize,
    /// A block to scroll into view at the next frame.
    reveal: Option<usize>,
    /// How many blocks the last frame knew.
    known: usize,
    /// Whether each block has the search's query in its text, as of a version of the block
    /// and a query: looked up again only when either changed, not every frame.
    searched: Vec<Option<Searched>>,
}

/// Whether a block had a query in its text (see [`reader::searches`]).
struct Searched {
    version: u64,
    needle: Vec<char>,
    found: bool,
}

/// One block's lines (with the blank line above it) as last laid out.
struct Entry {
    version: u64,
    open: bool,
    selected: bool,
    /// The search marked in it: the query, and which of its matches is the current one.
    marks: Option<Marks>,
    lines: Vec<Line<'static>>,
}

type Marks = (Vec<char>, Option<usize>);

impl Viewport {
    /// How many of `needle`'s matches block `block` shows when open: what a search counts.
    pub fn count_matches(block: &Block, needle: &[char], output_as_markdown: bool) -> usize {
        marks::marking(needle, None, || {
            blocks::lines(block, true, COUNTING_WIDTH, output_as_markdown)
        })
        .1
    }
}

impl Viewport {
    /// Lines scrolled up from the end.
    pub fn scrolled(&self) -> usize {
        self.scroll
    }

    /// Forgets everything about a thread other than `serial`.
    fn show(&mut self, serial: u64) {
        if self.thread != Some(serial) {
            *self = Viewport {
                thread: Some(serial),
                ..Viewport::default()
            };
        }
    }

    pub fn apply(&mut self, scrolls: Scrolls) {
        self.show(scrolls.thread);
        let page = self.height.max(2) - 1;
        for scroll in scrolls.moves {
            match scroll {
                Scroll::Up(lines) => self.scroll += lines,
                Scroll::Down(lines) => self.scroll = self.scroll.saturating_sub(lines),
                Scroll::PageUp => self.scroll += page,
                Scroll::PageDown => self.scroll = self.scroll.saturating_sub(page),
                Scroll::Bottom => self.scroll = 0,
                // Clamped to the transcript's length when it is laid out.
                Scroll::Top => self.scroll = usize::MAX / 2,
                Scroll::Reveal(block) => self.reveal = block,
            }
        }
    }

    /// Draws the visible part of `thread`'s transcript in `area`.
    pub fn draw(&mut self, frame: &mut Frame, thread: &ThreadView, area: Rect) {
        self.show(thread.serial);
        let relaid = self.fit(area, thread.reading.output_as_markdown);
        let walked = self.lay_out(thread, relaid);
        if thread.transcript.blocks().is_empty() {
            let lines = wrap(
                &Line::from(empty_hint(thread)).style(DIM),
                self.width as usize,
                &Span::raw(""),
                false,
            );
            frame.render_widget(Paragraph::new(lines), area);
            return;
        }
        frame.render_widget(Paragraph::new(self.visible(&walked)), area);
        if self.scroll > 0 && area.height > 0 {
            let note = format!(" ↓ {} more lines (PageDown) ", self.scroll);
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

    /// Takes the size of `area` (and whether code is highlighted yet); whether every block must
    /// be laid out again.
    fn fit(&mut self, area: Rect, output_as_markdown: bool) -> bool {
        let width = area.width.max(1);
        let highlighted = highlight::is_ready();
        let relaid = self.width != width
            || self.highlighted != highlighted
            || self.output_as_markdown != output_as_markdown;
        if relaid {
            self.entries.clear();
            self.width = width;
            self.highlighted = highlighted;
            self.output_as_markdown = output_as_markdown;
        }
        self.height = area.height as usize;
        relaid
    }

    /// Lays out the blocks the frame needs and settles the scroll; the blocks walked, each with
    /// the position of its bottom line.
    ///
    /// Positions count lines up from the bottom. The walk goes up from the last block, laying
    /// out what changed, until the view (and a block to reveal) is covered; blocks above stay
    /// as they are, so a frame costs what is on screen, however long the thread.
    fn lay_out(&mut self, thread: &ThreadView, relaid: bool) -> Vec<(usize, usize)> {
        let blocks = thread.transcript.blocks();
        let height = self.height;
        let width = self.width as usize;
        self.entries.resize_with(blocks.len(), || None);
        self.searched.resize_with(blocks.len(), || None);
        let anchored = self.scroll > 0 && !relaid;
        let view_top = height + self.scroll;
        let known = std::mem::replace(&mut self.known, blocks.len());
        let mut reveal = self.reveal.take().filter(|r| *r < blocks.len());
        let mut walked = Vec::new();
        let mut below = 0;
        let mut index = blocks.len();
        while index > 0 && (below < height + self.scroll || reveal.is_some_and(|r| r < index)) {
            index -= 1;
            let version = thread.transcript.version(index);
            let open = thread.is_open(index);
            let selected = is_selected(thread, index);
            let marks = self.marks_in(thread, index);
            let entry = &mut self.entries[index];
            let fresh = matches!(
                entry,
                Some(e) if e.version == version
                    && e.open == open
                    && e.selected == selected
                    && e.marks == marks
            );
            if !fresh {
                // What it was drawn as before; a block never drawn (above the view until now)
                // did not move anything.
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
                let lay_out = || {
                    block_lines(
                        &blocks[index],
                        open,
                        selected,
                        width,
                        self.output_as_markdown,
                    )
                };
                lines.extend(match &marks {
                    Some((needle, current)) => marks::marking(needle, *current, lay_out).0,
                    None => lay_out(),
                });
                // New lines below the view while scrolled up keep the view where it was.
                if let Some(before) = before
                    && anchored
                    && below < view_top
                    && lines.len() > before
                {
                    self.scroll += lines.len() - before;
                }
                *entry = Some(Entry {
                    version,
                    open,
                    selected,
                    marks,
                    lines,
                });
            }
            let len = entry.as_ref().map_or(0, |e| e.lines.len());
            walked.push((index, below));
            if reveal == Some(index) {
                let top = below + len;
                let matched = entry
                    .as_ref()
                    .and_then(|e| e.lines.iter().position(marks::has_current));
                if let Some(line) = matched {
                    // The current match's line, in the middle of the screen unless in view.
                    let at = top - 1 - line;
                    if at < self.scroll || at >= self.scroll + height {
                        self.scroll = at.saturating_sub(height / 2);
                    }
                } else if top > self.scroll + height {
                    self.scroll = top.saturating_sub(height);
                } else if below < self.scroll {
                    self.scroll = below;
                }
                reveal = None;
            }
            below += len;
        }
        if index == 0 {
            self.scroll = self.scroll.min(below.saturating_sub(height));
        }
        walked
    }

    /// The search to mark in block `index`: its query, and which of the block's matches is
    /// the current one. `None` when no search runs or the search does not count this block's
    /// matches.
    fn marks_in(&mut self, thread: &ThreadView, index: usize) -> Option<Marks> {
        let search = thread.reading.search.as_ref()?;
        let needle = search.needle();
        if needle.is_empty() {
            return None;
        }
        let version = thread.transcript.version(index);
        let searched = self.searched.get_mut(index)?;
        let found = match searched {
            Some(s) if s.version == version && s.needle == needle => s.found,
            Some(_) | None => {
                let found = reader::searches(&thread.transcript.blocks()[index], &needle);
                *searched = Some(Searched {
                    version,
                    needle: needle.clone(),
                    found,
                });
                found
            }
        };
        if !found {
            return None;
        }
        let current = search
            .current_match()
            .filter(|m| m.block == index)
            .map(|m| m.nth);
        Some((needle, current))
    }

    /// The lines on screen, top to bottom.
    fn visible(&self, walked: &[(usize, usize)]) -> Vec<Line<'static>> {
        let mut visible = Vec::with_capacity(self.height);
        let view = self.scroll..self.scroll + self.height;
        for &(index, bottom) in walked.iter().rev() {
            let Some(entry) = &self.entries[index] else {
                continue;
            };
            let top = bottom + entry.lines.len();
            for (i, line) in entry.lines.iter().enumerate() {
                if view.contains(&(top - 1 - i)) {
                    visible.push(line.clone());
                }
            }
        }
        visible
    }
}

/// Whether block `index` is drawn as the selected one.
fn is_selected(thread: &ThreadView, index: usize) -> bool {
    thread.focus == Focus::Transcript && thread.selected == Some(index)
}

/// A block's lines; the selected one narrower, behind a bar, with its first line in bold.
fn block_lines(
    block: &Block,
    open: bool,
    selected: bool,
    width: usize,
    output_as_markdown: bool,
) -> Vec<Line<'static>> {
    if !selected {
        return blocks::lines(block, open, width, output_as_markdown);
    }
    let bar = Span::styled(SELECTED_BAR, SELECTED);
    let inner = width.saturating_sub(bar.width()).max(1);
    blocks::lines(block, open, inner, output_as_markdown)
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            let line = if i == 0 {
                line.patch_style(Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED))
            } else {
                line
            };
            let mut spans = Vec::with_capacity(line.spans.len() + 1);
            spans.push(bar.clone());
            spans.extend(line.spans.into_iter().map(|s| s.patch_style(line.style)));
            Line::from(spans)
        })
        .collect()
}

/// What an empty transcript says instead.
fn empty_hint(thread: &ThreadView) -> String {
    match &thread.link {
        Link::New => {
            let harness = thread
                .harness
                .map_or("the server's default harness", |h| h.as_str());
            format!(
                "A new thread ({}) with {harness}. Type a message below and press Enter.",
                thread.key
            )
        }
        Link::Connecting => format!("Opening {}…", thread.key),
        Link::Failed(error) => format!("Cannot follow {}: {error}", thread.key),
        Link::Live | Link::Reconnecting => format!("{} has no events yet.", thread.key),
    }
}
