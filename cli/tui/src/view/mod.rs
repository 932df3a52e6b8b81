//! Drawing the TUI from the app's state, which it only reads. The one state of its own is the
//! transcript's [`Viewport`]: where it is scrolled to, and each block's lines laid out at the
//! current width.
//!
//! - [`approval`]: the approval asked about, over the transcript.
//! - [`blocks`]: each kind of transcript block as lines.
//! - [`overlays`]: the help and the harness picker.
//! - [`status`]: the thread screen's status line.
//! - [`text`]: fitting and formatting text (durations, counts, shortened names).
//! - [`thread`]: the thread screen (transcript, notice, composer, status line).
//! - [`threads`]: the thread list.
//! - [`viewport`]: the transcript's scroll and its cache of laid-out lines.

mod approval;
mod blocks;
mod overlays;
mod status;
mod text;
mod thread;
mod threads;
mod viewport;

use chrono::{DateTime, Utc};
use ratatui::Frame;
use ratatui::style::{Color, Style};

use text::clip;
pub use viewport::Viewport;

use super::app::{App, Overlay, Screen, Scrolls};

const DIM: Style = Style::new().fg(Color::DarkGray);
const OUTPUT: Style = Style::new().fg(Color::Gray);

/// What the view keeps between frames.
#[derive(Default)]
pub struct View {
    transcript: Viewport,
}

impl View {
    /// Moves the transcript as the app asked (see [`App::take_scrolls`]); before each frame.
    pub fn scroll(&mut self, scrolls: Option<Scrolls>) {
        if let Some(scrolls) = scrolls {
            self.transcript.apply(scrolls);
        }
    }

    /// Lines the transcript is scrolled up from its end.
    pub fn scrolled(&self) -> usize {
        self.transcript.scrolled()
    }

    /// One frame of `app`'s state as it is at `now`.
    pub fn draw(&mut self, frame: &mut Frame, app: &App, now: DateTime<Utc>) {
        let area = frame.area();
        match (app.screen, &app.thread) {
            (Screen::Thread, Some(thread)) => {
                thread::draw(frame, app, thread, &mut self.transcript, area, now)
            }
            _ => threads::draw(frame, app, area, now),
        }
        match app.overlay {
            Some(Overlay::Help) => overlays::help(frame, area),
            Some(Overlay::HarnessPicker { selected }) => {
                overlays::picker(frame, area, app, selected)
            }
            None => {}
        }
    }
}
