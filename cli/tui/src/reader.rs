//! Reading a thread's transcript: the keys that work while the transcript has the focus
//! (moving between blocks, folding, jumping to either end, searching, copying a block, showing
//! command output as Markdown), and the reading state a thread keeps besides its transcript.
//!
//! A search looks, case-insensitively, in the text each block shows open, line by line as
//! drawn before wrapping (a message, the agent's Markdown as rendered, a command with its
//! output); its matches are counted here the way the view marks them (see [`crate::marks`]),
//! and the view scrolls the current one into view.

use std::collections::HashMap;
use std::path::PathBuf;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{Effect, Focus, Scroll, ThreadView};
use crate::clipboard;
use crate::markdown;
use crate::transcript::Block;
use crate::view::Viewport;

/// How a thread is being read, besides which blocks are open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// The search being typed or moved through.
    pub search: Option<Search>,
    /// Command output drawn as Markdown (`m`), for shells that print Markdown files.
    pub output_as_markdown: bool,
    /// What the last key did, told in the reader's line until the next key.
    pub told: Option<String>,
    /// A copy (`y`) on its way to the clipboard and a file.
    pub copying: Option<Copying>,
}

/// What `y` copied, told once the runtime says where it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copying {
    pub lines: usize,
    /// Short enough for the terminal's clipboard (OSC 52).
    pub to_terminal: bool,
}

/// A search of the transcript.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search {
    pub query: String,
    /// The query is being typed (Enter confirms it).
    pub typing: bool,
    /// Every match, in the transcript's order, as of the last time they were counted.
    pub matches: Vec<Match>,
    /// Which of `matches` is the current one.
    pub current: Option<usize>,
    /// The focus and selection before the search, to return to when it is cancelled.
    origin: (Focus, Option<usize>),
    /// Matches counted in each block, so a block that has not changed is not laid out again
    /// to count them (as the query is typed, stepped through, or output shown another way).
    counted: HashMap<Counting, Counted>,
}

/// What a block's match count depends on besides the block: which block, the query as
/// matched, and whether command output is shown as Markdown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Counting {
    block: usize,
    needle: Vec<char>,
    output_as_markdown: bool,
}

/// A block's match count as of one of its versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counted {
    version: u64,
    matches: usize,
}

/// One occurrence of the query: the `nth` (from 0) in block `block`'s text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Match {
    pub block: usize,
    pub nth: usize,
}

impl Search {
    /// The query as the characters matching compares, lowercased (empty: nothing to find).
    pub fn needle(&self) -> Vec<char> {
        fold(&self.query)
    }

    /// The current match, if any.
    pub fn current_match(&self) -> Option<Match> {
        self.current.and_then(|i| self.matches.get(i).copied())
    }
}

/// Where the thread screen's keys go, as the status line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Keys write the message.
    Compose { output_as_markdown: bool },
    /// Keys move between the transcript's blocks (Tab).
    Read { output_as_markdown: bool },
    /// A search is typed or stepped through.
    Search,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, output_as_markdown) = match self {
            Mode::Compose { output_as_markdown } => ("compose", *output_as_markdown),
            Mode::Read { output_as_markdown } => ("read", *output_as_markdown),
            Mode::Search => ("search", false),
        };
        f.write_str(name)?;
        if output_as_markdown {
            f.write_str(" · output as Markdown")?;
        }
        Ok(())
    }
}

/// The mode the thread screen is in.
pub fn mode(thread: &ThreadView) -> Mode {
    let output_as_markdown = thread.reading.output_as_markdown;
    match (thread.focus, &thread.reading.search) {
        (Focus::Transcript, Some(_)) => Mode::Search,
        (Focus::Transcript, None) => Mode::Read { output_as_markdown },
        (Focus::Composer, _) => Mode::Compose { output_as_markdown },
    }
}

/// Whether a search query is being typed (the keys are the query's).
pub fn typing_search(thread: &ThreadView) -> bool {
    thread.focus == Focus::Transcript && thread.reading.search.as_ref().is_some_and(|s| s.typing)
}

/// The line the reader shows under the transcript while the transcript has the focus: the
/// search being typed, where a search stands, or what the last key did. `None`: no line.
pub fn status(thread: &ThreadView) -> Option<String> {
    if thread.focus != Focus::Transcript {
        return None;
    }
    if let Some(told) = &thread.reading.told {
        return Some(told.clone());
    }
    let search = thread.reading.search.as_ref()?;
    if search.typing {
        let found = match search.matches.len() {
            _ if search.query.is_empty() => String::new(),
            0 => "  (no match)".to_owned(),
            1 => "  (1 match)".to_owned(),
            n => format!("  ({n} matches)"),
        };
        return Some(format!("/{}{found}", search.query));
    }
    Some(match search.current {
        Some(current) => format!(
            "match {} of {} for `{}` · n next · N previous · Esc ends the search",
            current + 1,
            search.matches.len(),
            search.query
        ),
        None => format!("no match for `{}`", search.query),
    })
}

/// Starts searching the transcript (`/`): the query is typed in the reader's line.
pub fn start_search(thread: &mut ThreadView) {
    let origin = (thread.focus, thread.selected);
    thread.focus = Focus::Transcript;
    thread.reading.told = None;
    thread.reading.search = Some(Search {
        query: String::new(),
        typing: true,
        matches: Vec::new(),
        current: None,
        origin,
        counted: HashMap::new(),
    });
}

/// A key while the transcript has the focus.
#[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
pub fn key(thread: &mut ThreadView, key: KeyEvent) -> Vec<Effect> {
    thread.reading.told = None;
    if thread.reading.search.as_ref().is_some_and(|s| s.typing) {
        search_key(thread, key);
        return Vec::new();
    }
    let ctrl = key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    let selectable = selectable(thread);
    let position = thread
        .selected
        .and_then(|s| selectable.iter().position(|i| *i == s));
    let mut effects = Vec::new();
    match key.code {
        _ if ctrl => return effects,
        KeyCode::Up | KeyCode::Char('k') => {
            thread.selected = match position {
                Some(p) => selectable.get(p.saturating_sub(1)).copied(),
                None => selectable.last().copied(),
            };
        }
        KeyCode::Down | KeyCode::Char('j') => {
            thread.selected = match position {
                Some(p) => selectable.get(p + 1).or(selectable.get(p)).copied(),
                None => selectable.last().copied(),
            };
        }
        KeyCode::Char('g') | KeyCode::Home => {
            thread.selected = selectable.first().copied();
            // Not revealed: a first block taller than the screen is shown from its top.
            thread.scroll(Scroll::Top);
            return effects;
        }
        KeyCode::Char('G') | KeyCode::End => {
            thread.selected = selectable.last().copied();
            // The end, following new output again.
            thread.scroll(Scroll::Bottom);
            return effects;
        }
        KeyCode::Enter | KeyCode::Char(' ') => {
            if let Some(selected) = thread.selected
                && thread.transcript.blocks()[selected].foldable()
                && !thread.toggled.remove(&selected)
            {
                thread.toggled.insert(selected);
            }
        }
        KeyCode::Tab => {
            thread.focus = Focus::Composer;
            thread.selected = None;
            thread.reading.search = None;
        }
        KeyCode::Esc => {
            // Only while a search runs (otherwise Esc leaves the transcript before this).
            thread.reading.search = None;
        }
        KeyCode::Char('/') => {
            start_search(thread);
            return effects;
        }
        KeyCode::Char('n') => step(thread, true),
        KeyCode::Char('N') => step(thread, false),
        KeyCode::Char('y') => effects.extend(copy(thread)),
        KeyCode::Char('m') => {
            let on = !thread.reading.output_as_markdown;
            thread.reading.output_as_markdown = on;
            thread.reading.told = Some(
                if on {
                    "command output shown as Markdown (m shows it as text)"
                } else {
                    "command output shown as text (m shows it as Markdown)"
                }
                .to_owned(),
            );
            // What is shown changed: so may the matches, and which one this is.
            recount(thread);
        }
        _ => return effects,
    }
    // Keep the selected block in view: the view scrolls to it when drawing.
    thread.scroll(Scroll::Reveal(thread.selected));
    effects
}

/// The blocks j/k move between: all but the ends of turns.
fn selectable(thread: &ThreadView) -> Vec<usize> {
    thread
        .transcript
        .blocks()
        .iter()
        .enumerate()
        .filter(|(_, block)| !matches!(block, Block::TurnEnd { .. }))
        .map(|(i, _)| i)
        .collect()
}

/// A key while the query is typed: it changes, and the nearest match above where the search
/// started is shown as it does.
#[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
fn search_key(thread: &mut ThreadView, key: KeyEvent) {
    let Some(search) = &mut thread.reading.search else {
        return;
    };
    let plain = !key
        .modifiers
        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT);
    match key.code {
        KeyCode::Char(c) if plain => search.query.push(c),
        KeyCode::Backspace if search.query.is_empty() => return cancel(thread),
        KeyCode::Backspace => {
            search.query.pop();
        }
        KeyCode::Esc => return cancel(thread),
        KeyCode::Enter if search.query.is_empty() => return cancel(thread),
        KeyCode::Enter => {
            search.typing = false;
            if let Some(current) = search.current_match() {
                open(thread, current.block);
            }
            thread.scroll(Scroll::Reveal(thread.selected));
            return;
        }
        _ => return,
    }
    let origin = search.origin.1;
    let matches = find_all(thread, &fold(&search_query(thread)));
    let current = matches
        .iter()
        .rposition(|m| origin.is_none_or(|o| m.block <= o))
        .or(matches.len().checked_sub(1));
    if let Some(search) = &mut thread.reading.search {
        search.matches = matches;
        search.current = current;
    }
    match current_block(thread) {
        Some(block) => {
            thread.selected = Some(block);
            thread.scroll(Scroll::Reveal(Some(block)));
        }
        None => {
            thread.selected = origin;
            thread.scroll(Scroll::Reveal(origin));
        }
    }
}

fn search_query(thread: &ThreadView) -> String {
    thread
        .reading
        .search
        .as_ref()
        .map(|s| s.query.clone())
        .unwrap_or_default()
}

fn current_block(thread: &ThreadView) -> Option<usize> {
    let search = thread.reading.search.as_ref()?;
    search.current_match().map(|m| m.block)
}

/// Ends the search being typed: back to the focus and block from before it.
fn cancel(thread: &mut ThreadView) {
    let Some(search) = thread.reading.search.take() else {
        return;
    };
    let (focus, selected) = search.origin;
    thread.focus = focus;
    thread.selected = selected;
    match selected {
        Some(block) => thread.scroll(Scroll::Reveal(Some(block))),
        None => thread.scroll(Scroll::Bottom),
    }
}

/// n (`forward`) or N: the next or previous match, wrapping at either end, counted again
/// first (the transcript may have grown).
fn step(thread: &mut ThreadView, forward: bool) {
    let Some(search) = &thread.reading.search else {
        return;
    };
    let was = search.current_match();
    let needle = search.needle();
    let matches = find_all(thread, &needle);
    let current = if matches.is_empty() {
        None
    } else {
        let len = matches.len();
        Some(match was {
            Some(was) => {
                let at = matches.partition_point(|m| *m < was);
                let on = matches.get(at) == Some(&was);
                match (forward, on) {
                    (true, true) => (at + 1) % len,
                    (true, false) => at % len,
                    (false, _) => (at + len - 1) % len,
                }
            }
            None if forward => 0,
            None => len - 1,
        })
    };
    settle(thread, matches, current);
}

/// Counts the matches again (output is shown another way): the current match stays the
/// one it was if still there, else it is the next one (the first, if there was none).
fn recount(thread: &mut ThreadView) {
    let Some(search) = &thread.reading.search else {
        return;
    };
    let was = search.current_match();
    let needle = search.needle();
    let matches = find_all(thread, &needle);
    let current = match was {
        _ if matches.is_empty() => None,
        Some(was) => Some(matches.partition_point(|m| *m < was).min(matches.len() - 1)),
        None => Some(0),
    };
    settle(thread, matches, current);
}

/// Keeps the search's `matches` and `current` one, and picks (and opens) the block it is in.
fn settle(thread: &mut ThreadView, matches: Vec<Match>, current: Option<usize>) {
    if let Some(search) = &mut thread.reading.search {
        search.matches = matches;
        search.current = current;
    }
    if let Some(block) = current_block(thread) {
        thread.selected = Some(block);
        open(thread, block);
    }
}

/// Opens block `index` if it is folded, so the match in it shows.
fn open(thread: &mut ThreadView, index: usize) {
    if thread.transcript.blocks()[index].foldable()
        && !thread.is_open(index)
        && !thread.toggled.remove(&index)
    {
        thread.toggled.insert(index);
    }
}

/// `y`: the selected block's text to the clipboard and a file; [`copied`] tells where it went.
fn copy(thread: &mut ThreadView) -> Option<Effect> {
    let Some(selected) = thread.selected else {
        thread.reading.told = Some("pick a block to copy first (j/k)".to_owned());
        return None;
    };
    let text = thread.transcript.blocks()[selected].plain_text();
    let copying = Copying {
        lines: text.lines().count().max(1),
        to_terminal: clipboard::fits_terminal(&text),
    };
    thread.reading.copying = Some(copying);
    thread.reading.told = Some(format!("copying {}…", lines(copying.lines)));
    Some(Effect::Copy(text))
}

/// Where the copy went: the file written (`Ok`), or why none was. `None` when nothing was
/// being copied.
pub fn copied(thread: &mut ThreadView, outcome: Result<PathBuf, String>) -> Option<String> {
    let copying = thread.reading.copying.take()?;
    let lines = lines(copying.lines);
    Some(match (outcome, copying.to_terminal) {
        (Ok(file), true) => format!(
            "copied {lines} to the clipboard (where the terminal allows) and to {}",
            file.display()
        ),
        (Ok(file), false) => format!(
            "copied {lines} to {} (too long for the terminal's clipboard)",
            file.display()
        ),
        (Err(error), true) => format!(
            "copied {lines} to the clipboard (where the terminal allows), not to a file: {error}"
        ),
        (Err(error), false) => format!("not copied: {error}"),
    })
}

fn lines(count: usize) -> String {
    if count == 1 {
        "1 line".to_owned()
    } else {
        format!("{count} lines")
    }
}

/// Every match of `needle` in the transcript, in order: in each block's text as it is drawn
/// open (see [`crate::marks`]), so the count, n/N and what is highlighted agree. A block is
/// laid out to count them only when it, the needle or the Markdown setting changed since it
/// was last counted.
fn find_all(thread: &mut ThreadView, needle: &[char]) -> Vec<Match> {
    let ThreadView {
        transcript,
        reading,
        ..
    } = thread;
    let output_as_markdown = reading.output_as_markdown;
    let Some(search) = &mut reading.search else {
        return Vec::new();
    };
    if needle.is_empty() {
        return Vec::new();
    }
    let mut matches = Vec::new();
    for (index, block) in transcript.blocks().iter().enumerate() {
        let version = transcript.version(index);
        let counting = Counting {
            block: index,
            needle: needle.to_vec(),
            output_as_markdown,
        };
        let found = match search.counted.get(&counting) {
            Some(counted) if counted.version == version => counted.matches,
            Some(_) | None => {
                let found = if searches(block, needle) {
                    Viewport::count_matches(block, needle, output_as_markdown)
                } else {
                    0
                };
                search.counted.insert(
                    counting,
                    Counted {
                        version,
                        matches: found,
                    },
                );
                found
            }
        };
        matches.extend((0..found).map(|nth| Match { block: index, nth }));
    }
    matches
}

/// Whether a search for `needle` counts the matches `block` shows: not the end of a turn,
/// and only a block whose text has the query at all (laying out a block costs more than
/// looking in its text; the view marks the same blocks).
pub fn searches(block: &Block, needle: &[char]) -> bool {
    let text = match block {
        Block::TurnEnd { .. } => return false,
        Block::Agent { text, .. } => markdown::plain(text),
        other @ (Block::User { .. }
        | Block::Reasoning { .. }
        | Block::Command { .. }
        | Block::FileChange { .. }
        | Block::Tool { .. }
        | Block::Approval { .. }
        | Block::EgressDenied { .. }
        | Block::Note { .. }) => other.plain_text(),
    };
    !find(&fold(&text), needle).is_empty()
}

/// `text` as matching compares it: one lowercased character for each of its characters, so
/// positions in it are positions in `text`.
pub fn fold(text: &str) -> Vec<char> {
    text.chars()
        .map(|c| c.to_lowercase().next().unwrap_or(c))
        .collect()
}

/// Where `needle` occurs in `haystack` (both [`fold`]ed), as character ranges, not
/// overlapping.
pub fn find(haystack: &[char], needle: &[char]) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    if needle.is_empty() || needle.len() > haystack.len() {
        return found;
    }
    let mut at = 0;
    while at + needle.len() <= haystack.len() {
        if haystack[at..at + needle.len()] == *needle {
            found.push(at..at + needle.len());
            at += needle.len();
        } else {
            at += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_ignores_case_and_counts_each_occurrence_once() {
        let haystack = fold("Retry, RETRY and retrying: ÉTÉ été");
        assert_eq!(find(&haystack, &fold("retry")), [0..5, 7..12, 17..22]);
        assert_eq!(find(&haystack, &fold("été")).len(), 2);
        assert_eq!(find(&fold("aaaa"), &fold("aa")), [0..2, 2..4]);
        assert!(find(&haystack, &[]).is_empty());
    }
}
