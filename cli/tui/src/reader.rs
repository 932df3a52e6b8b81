//! Reading a thread's transcript: the keys that work while the transcript has the focus
//! (moving between blocks, folding, jumping to either end), and the reading state a thread
//! keeps besides its transcript.

use ratatui::crossterm::event::{KeyCode, KeyEvent};

use crate::app::{Effect, Focus, Scroll, ThreadView};

/// How a thread is being read, besides which blocks are open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {}

/// The mode the thread screen is in, as the status line names it.
pub fn mode(thread: &ThreadView) -> &'static str {
    match thread.focus {
        Focus::Composer => "compose",
        Focus::Transcript => "read",
    }
}

/// Starts searching the transcript (`/` with nothing written): not built yet.
pub fn start_search(thread: &mut ThreadView) {
    let _ = thread;
}

/// A key while the transcript has the focus.
#[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
pub fn key(thread: &mut ThreadView, key: KeyEvent) -> Vec<Effect> {
    let foldable = thread.foldable();
    let position = thread
        .selected
        .and_then(|s| foldable.iter().position(|i| *i == s));
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => {
            if let Some(p) = position.filter(|p| *p > 0) {
                thread.selected = Some(foldable[p - 1]);
            }
        }
        KeyCode::Down | KeyCode::Char('j') => {
            if let Some(p) = position.filter(|p| p + 1 < foldable.len()) {
                thread.selected = Some(foldable[p + 1]);
            }
        }
        KeyCode::Char('g') | KeyCode::Home => thread.selected = foldable.first().copied(),
        KeyCode::Char('G') | KeyCode::End => thread.selected = foldable.last().copied(),
        KeyCode::Enter | KeyCode::Char(' ') => {
            if let Some(selected) = thread.selected
                && !thread.toggled.remove(&selected)
            {
                thread.toggled.insert(selected);
            }
        }
        KeyCode::Tab => {
            thread.focus = Focus::Composer;
            thread.selected = None;
        }
        _ => {}
    }
    // Keep the selected block in view: the view scrolls to it when drawing.
    thread.scroll(Scroll::Reveal(thread.selected));
    Vec::new()
}
