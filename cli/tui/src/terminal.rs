//! The person's terminal: taken over while the TUI runs (raw mode, the alternate screen,
//! pastes as one event, the mouse wheel) and given back however it ends, and its input read on
//! a thread of its own.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{
    self as term_event, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste,
    EnableMouseCapture, Event as TermEvent,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use tokio::sync::mpsc::UnboundedSender;

use crate::app::AppEvent;

pub type Screen = Terminal<CrosstermBackend<std::io::BufWriter<std::io::Stdout>>>;

/// Set when anything panicked (a task, say): the terminal was given back, so the TUI stops.
static PANICKED: AtomicBool = AtomicBool::new(false);

/// Whether anything panicked since the terminal was taken over.
pub fn panicked() -> bool {
    PANICKED.load(Ordering::SeqCst)
}

/// Takes over the terminal. A panic puts the terminal back before its message prints.
pub fn enter() -> std::io::Result<Screen> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        leave();
        hook(info);
    }));
    let entered = (|| {
        enable_raw_mode()?;
        let mut stdout = std::io::stdout();
        execute!(
            stdout,
            EnterAlternateScreen,
            EnableBracketedPaste,
            EnableMouseCapture
        )?;
        Terminal::new(CrosstermBackend::new(std::io::BufWriter::new(stdout)))
    })();
    if entered.is_err() {
        leave();
    }
    entered
}

/// Gives the terminal back as it was.
pub fn leave() {
    let mut stdout = std::io::stdout();
    let _ = execute!(
        stdout,
        DisableMouseCapture,
        DisableBracketedPaste,
        LeaveAlternateScreen,
        ratatui::crossterm::cursor::Show
    );
    let _ = disable_raw_mode();
    let _ = stdout.flush();
}

/// Reads the terminal on its own thread, so input never waits behind drawing or the network.
pub fn read_input(bus: UnboundedSender<AppEvent>) {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                let event = match term_event::read() {
                    Ok(TermEvent::Key(key)) => AppEvent::Key(key),
                    Ok(TermEvent::Paste(text)) => AppEvent::Paste(text),
                    Ok(TermEvent::Mouse(mouse)) => AppEvent::Mouse(mouse),
                    Ok(TermEvent::Resize(..)) => AppEvent::Resize,
                    Ok(TermEvent::FocusGained | TermEvent::FocusLost) => continue,
                    Err(_) => return,
                };
                if bus.send(event).is_err() {
                    return;
                }
            }
        })
        .expect("a thread");
}
