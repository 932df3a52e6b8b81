//! The TUI in tests: an app already following a scripted thread, and the app with the view
//! that draws it, driven by keys and read back as the screen's text.

use centaur_client::api::Connection;
use centaur_protocol::Event;
use centaur_tui::app::{App, AppEvent, Effect, Start};
use centaur_tui::{View, highlight};
use chrono::{DateTime, Utc};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// An app showing the thread of `events`, connected, with every event applied.
pub fn app_following(events: &[Event]) -> App {
    let key = events[0].thread_key.clone();
    let (mut app, _) = App::new(
        "http://127.0.0.1:8080".into(),
        &Start {
            thread_key: Some(key.clone()),
            ..Start::default()
        },
    );
    app.handle(AppEvent::Connection {
        key,
        state: Connection::Live,
    });
    for event in events {
        app.handle(AppEvent::Server(Box::new(event.clone())));
    }
    app
}

/// The app and the view that draws it, as the TUI's event loop keeps them.
pub struct Tui {
    pub app: App,
    pub view: View,
}

impl From<App> for Tui {
    fn from(app: App) -> Tui {
        Tui {
            app,
            view: View::default(),
        }
    }
}

impl std::ops::Deref for Tui {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl std::ops::DerefMut for Tui {
    fn deref_mut(&mut self) -> &mut App {
        &mut self.app
    }
}

impl Tui {
    /// Showing `events`' thread, connected, with code highlighted.
    pub fn following(events: &[Event]) -> Tui {
        highlight::load_now();
        Tui::from(app_following(events))
    }

    /// One frame at `width` x `height`, as it would be drawn at `now`.
    pub fn draw(&mut self, width: u16, height: u16, now: DateTime<Utc>) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
        self.view.scroll(self.app.take_scrolls());
        terminal
            .draw(|frame| self.view.draw(frame, &self.app, now))
            .expect("a test terminal draws");
        terminal.backend().buffer().clone()
    }

    /// The frame's text, one line a row, trailing spaces cut.
    pub fn screen(&mut self, width: u16, height: u16, now: DateTime<Utc>) -> String {
        screen_text(&self.draw(width, height, now))
    }

    /// A key with `modifiers`.
    pub fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> Vec<Effect> {
        self.app
            .handle(AppEvent::Key(KeyEvent::new(code, modifiers)))
    }

    /// A key as typed: an upper-case letter with Shift.
    pub fn press(&mut self, code: KeyCode) -> Vec<Effect> {
        let modifiers = match code {
            KeyCode::Char(c) if c.is_uppercase() => KeyModifiers::SHIFT,
            KeyCode::Char(_)
            | KeyCode::Backspace
            | KeyCode::Enter
            | KeyCode::Left
            | KeyCode::Right
            | KeyCode::Up
            | KeyCode::Down
            | KeyCode::Home
            | KeyCode::End
            | KeyCode::PageUp
            | KeyCode::PageDown
            | KeyCode::Tab
            | KeyCode::BackTab
            | KeyCode::Delete
            | KeyCode::Insert
            | KeyCode::F(_)
            | KeyCode::Null
            | KeyCode::Esc
            | KeyCode::CapsLock
            | KeyCode::ScrollLock
            | KeyCode::NumLock
            | KeyCode::PrintScreen
            | KeyCode::Pause
            | KeyCode::Menu
            | KeyCode::KeypadBegin
            | KeyCode::Media(_)
            | KeyCode::Modifier(_) => KeyModifiers::NONE,
        };
        self.key(code, modifiers)
    }

    /// Ctrl and a letter.
    pub fn ctrl(&mut self, c: char) -> Vec<Effect> {
        self.key(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    /// Each character of `text` as a key.
    pub fn typed(&mut self, text: &str) {
        for c in text.chars() {
            self.press(KeyCode::Char(c));
        }
    }
}

/// A buffer's text, one line a row, trailing spaces cut.
pub fn screen_text(buffer: &Buffer) -> String {
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let mut row = String::new();
        for x in 0..buffer.area.width {
            row.push_str(buffer[(x, y)].symbol());
        }
        text.push_str(row.trim_end());
        text.push('\n');
    }
    text
}
