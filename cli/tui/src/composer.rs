//! The message composer: multi-line text with a cursor, history of what was sent, and pastes
//! taken as text (a pasted newline never sends).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

#[derive(Debug, Default)]
pub struct Composer {
    lines: Vec<String>,
    /// Cursor line and column (in characters).
    row: usize,
    col: usize,
    history: Vec<String>,
    /// Where in `history` Up/Down is, and the draft being written before it started.
    browsing: Option<(usize, String)>,
}

/// What a key did to the composer.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Changed (or moved) the text.
    Edited,
    /// Enter on a non-empty message: here is the text to send.
    Submit(String),
    /// The composer does not use this key.
    Ignored,
}

impl Composer {
    pub fn lines(&self) -> Vec<&str> {
        if self.lines.is_empty() {
            vec![""]
        } else {
            self.lines.iter().map(String::as_str).collect()
        }
    }

    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    pub fn is_empty(&self) -> bool {
        self.lines.iter().all(String::is_empty)
    }

    pub fn cursor(&self) -> (usize, usize) {
        (self.row, self.col)
    }

    fn ensure_line(&mut self) {
        if self.lines.is_empty() {
            self.lines.push(String::new());
        }
    }

    fn byte_at(line: &str, col: usize) -> usize {
        line.char_indices()
            .nth(col)
            .map(|(i, _)| i)
            .unwrap_or(line.len())
    }

    fn line_len(&self, row: usize) -> usize {
        self.lines.get(row).map_or(0, |l| l.chars().count())
    }

    pub fn insert(&mut self, text: &str) {
        self.ensure_line();
        self.browsing = None;
        for (i, piece) in text.split('\n').enumerate() {
            if i > 0 {
                self.newline();
            }
            let line = &mut self.lines[self.row];
            let at = Self::byte_at(line, self.col);
            line.insert_str(at, piece);
            self.col += piece.chars().count();
        }
    }

    /// Pasted text: line endings made plain, tabs kept, other control characters dropped.
    pub fn paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        let text: String = text
            .chars()
            .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
            .collect();
        self.insert(&text);
    }

    fn newline(&mut self) {
        self.ensure_line();
        let line = &mut self.lines[self.row];
        let at = Self::byte_at(line, self.col);
        let rest = line.split_off(at);
        self.lines.insert(self.row + 1, rest);
        self.row += 1;
        self.col = 0;
    }

    fn backspace(&mut self) {
        self.ensure_line();
        if self.col > 0 {
            let line = &mut self.lines[self.row];
            let at = Self::byte_at(line, self.col - 1);
            line.remove(at);
            self.col -= 1;
        } else if self.row > 0 {
            let line = self.lines.remove(self.row);
            self.row -= 1;
            self.col = self.line_len(self.row);
            self.lines[self.row].push_str(&line);
        }
    }

    fn delete(&mut self) {
        self.ensure_line();
        if self.col < self.line_len(self.row) {
            let line = &mut self.lines[self.row];
            let at = Self::byte_at(line, self.col);
            line.remove(at);
        } else if self.row + 1 < self.lines.len() {
            let next = self.lines.remove(self.row + 1);
            self.lines[self.row].push_str(&next);
        }
    }

    pub fn clear(&mut self) {
        self.lines.clear();
        self.row = 0;
        self.col = 0;
        self.browsing = None;
    }

    /// Puts back a message that was not sent, to send again or change (it stays in the
    /// history).
    pub fn restore(&mut self, text: &str) {
        self.browsing = None;
        self.set_text(text);
    }

    fn set_text(&mut self, text: &str) {
        self.lines = text.split('\n').map(str::to_owned).collect();
        self.row = self.lines.len() - 1;
        self.col = self.line_len(self.row);
    }

    fn history_back(&mut self) {
        let index = match &self.browsing {
            Some((0, _)) => return,
            Some((index, _)) => index - 1,
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len(), self.text()));
                self.history.len() - 1
            }
        };
        let text = self.history[index].clone();
        self.set_text(&text);
        if let Some((at, _)) = &mut self.browsing {
            *at = index;
        }
    }

    fn history_forward(&mut self) {
        let Some((index, draft)) = self.browsing.take() else {
            return;
        };
        if index + 1 >= self.history.len() {
            self.set_text(&draft);
        } else {
            let text = self.history[index + 1].clone();
            self.set_text(&text);
            self.browsing = Some((index + 1, draft));
        }
    }

    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
    pub fn key(&mut self, key: KeyEvent) -> Outcome {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Enter if shift || alt => self.newline(),
            KeyCode::Char('j') if ctrl => self.newline(),
            KeyCode::Enter => {
                if self.is_empty() {
                    return Outcome::Ignored;
                }
                let text = self.text();
                if self.history.last() != Some(&text) {
                    self.history.push(text.clone());
                }
                self.clear();
                return Outcome::Submit(text);
            }
            KeyCode::Char('a') if ctrl => self.col = 0,
            KeyCode::Char('e') if ctrl => self.col = self.line_len(self.row),
            KeyCode::Char('u') if ctrl => {
                self.ensure_line();
                let line = &mut self.lines[self.row];
                let at = Self::byte_at(line, self.col);
                line.replace_range(..at, "");
                self.col = 0;
            }
            KeyCode::Char(c) if !ctrl => self.insert(&c.to_string()),
            KeyCode::Tab if !self.is_empty() => self.insert("    "),
            KeyCode::Backspace => self.backspace(),
            KeyCode::Delete => self.delete(),
            KeyCode::Left if self.col > 0 => self.col -= 1,
            KeyCode::Left if self.row > 0 => {
                self.row -= 1;
                self.col = self.line_len(self.row);
            }
            KeyCode::Right if self.col < self.line_len(self.row) => self.col += 1,
            KeyCode::Right if self.row + 1 < self.lines.len() => {
                self.row += 1;
                self.col = 0;
            }
            KeyCode::Home => self.col = 0,
            KeyCode::End => self.col = self.line_len(self.row),
            KeyCode::Up if self.row > 0 => {
                self.row -= 1;
                self.col = self.col.min(self.line_len(self.row));
            }
            KeyCode::Up => self.history_back(),
            KeyCode::Down if self.row + 1 < self.lines.len() => {
                self.row += 1;
                self.col = self.col.min(self.line_len(self.row));
            }
            KeyCode::Down => self.history_forward(),
            _ => return Outcome::Ignored,
        }
        Outcome::Edited
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(composer: &mut Composer, code: KeyCode, modifiers: KeyModifiers) -> Outcome {
        composer.key(KeyEvent::new(code, modifiers))
    }

    fn typed(composer: &mut Composer, text: &str) {
        for c in text.chars() {
            press(composer, KeyCode::Char(c), KeyModifiers::NONE);
        }
    }

    #[test]
    fn multi_line_messages_history_and_pastes() {
        let mut composer = Composer::default();
        typed(&mut composer, "first");
        press(&mut composer, KeyCode::Enter, KeyModifiers::SHIFT);
        typed(&mut composer, "line");
        assert_eq!(composer.text(), "first\nline");
        assert_eq!(
            press(&mut composer, KeyCode::Enter, KeyModifiers::NONE),
            Outcome::Submit("first\nline".into())
        );
        assert!(composer.is_empty());

        // A paste with newlines is text, not a send.
        composer.paste("a\r\nb\x07c");
        assert_eq!(composer.text(), "a\nbc");

        // Up from the first line walks the history; Down comes back to the draft.
        press(&mut composer, KeyCode::Up, KeyModifiers::NONE);
        assert_eq!(composer.cursor(), (0, 1));
        press(&mut composer, KeyCode::Up, KeyModifiers::NONE);
        assert_eq!(composer.text(), "first\nline");
        press(&mut composer, KeyCode::Down, KeyModifiers::NONE);
        press(&mut composer, KeyCode::Down, KeyModifiers::NONE);
        assert_eq!(composer.text(), "a\nbc");

        // Editing across lines.
        press(&mut composer, KeyCode::Home, KeyModifiers::NONE);
        press(&mut composer, KeyCode::Backspace, KeyModifiers::NONE);
        assert_eq!(composer.text(), "abc");
        assert_eq!(
            press(&mut composer, KeyCode::Enter, KeyModifiers::NONE),
            Outcome::Submit("abc".into())
        );
        assert_eq!(
            press(&mut composer, KeyCode::Enter, KeyModifiers::NONE),
            Outcome::Ignored
        );
    }
}
