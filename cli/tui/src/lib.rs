//! `centaur-tui`: the terminal interface (thread list, live transcript, composer and
//! approvals).
//!
//! One event bus carries everything that happens (keys, the server's events, answers to
//! requests) to [`App::handle`], which changes the state and asks for network work as
//! [`Effect`]s; the [`Runtime`] carries those out on tasks that answer on the bus. Input is read
//! on its own thread. After draining what is on the bus, the loop draws once, so bursts of
//! events cost one frame.
//!
//! - [`app`]: the state, as a function of the server's events and the keys.
//! - [`clipboard`]: copying a block's text out of the terminal.
//! - [`composer`]: the message being written, with its history.
//! - [`highlight`]: code highlighting, loaded in the background.
//! - [`markdown`]: the agent's Markdown as styled lines.
//! - [`marks`]: a search's matches, marked in the lines as they are laid out.
//! - [`reader`]: reading a transcript: moving between blocks, searching, copying.
//! - [`runtime`]: carrying out the app's effects on tasks that answer on the bus.
//! - [`terminal`]: taking over the terminal and giving it back, and reading its input.
//! - [`transcript`]: a thread's events reduced to the blocks the screen shows.
//! - [`view`]: drawing the state, and the transcript's viewport.
//! - [`wrap`]: wrapping styled lines to a width.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

pub mod app;
pub mod clipboard;
pub mod composer;
pub mod highlight;
pub mod markdown;
pub mod marks;
pub mod reader;
pub mod runtime;
pub mod terminal;
pub mod transcript;
pub mod view;
pub mod wrap;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::Utc;
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

pub use app::{App, AppEvent, Effect, Start, StreamError};
pub use runtime::Runtime;
pub use view::View;

use centaur_client::api::{Client, Failure};

/// Why the TUI stopped other than by the person quitting.
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// The server could not be reached or refused before the TUI took the terminal.
    #[error(transparent)]
    Server(#[from] Failure),
    #[error("cannot use the terminal: {0}")]
    Enter(#[source] std::io::Error),
    #[error("the terminal failed: {0}")]
    Terminal(#[source] std::io::Error),
}

impl TuiError {
    /// The server's exit code (see [`Failure::exit_code`]); 1 for the terminal.
    pub fn exit_code(&self) -> u8 {
        match self {
            TuiError::Server(failure) => failure.exit_code(),
            TuiError::Enter(_) | TuiError::Terminal(_) => 1,
        }
    }
}

/// At most this long is spent taking events off the bus before a frame is drawn.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// Runs the TUI until the person quits.
pub async fn run(client: Client, start: Start) -> Result<ExitCode, TuiError> {
    // Reach the server before taking over the terminal, so a wrong URL or token is one line.
    let threads = client.threads().await?;
    let (bus, mut inbox) = unbounded_channel();
    {
        let bus = bus.clone();
        highlight::load_in_background(move || {
            let _ = bus.send(AppEvent::HighlighterReady);
        });
    }
    let mut screen = terminal::enter().map_err(TuiError::Enter)?;
    terminal::read_input(bus.clone());
    let start = Start {
        threads: Some(threads),
        ..start
    };
    let (mut app, effects) = App::new(client.url().to_owned(), &start);
    let mut runtime = Runtime::new(client, bus);
    for effect in effects {
        runtime.run(effect);
    }
    let outcome = event_loop(&mut screen, &mut app, &mut runtime, &mut inbox, |_| {}).await;
    terminal::leave();
    outcome.map_err(TuiError::Terminal)?;
    Ok(ExitCode::SUCCESS)
}

/// Takes events off the bus, hands them to the app, carries out its effects, and draws after
/// each batch. `drawn` sees every frame (benchmarks and tests).
pub async fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    runtime: &mut Runtime,
    inbox: &mut UnboundedReceiver<AppEvent>,
    mut drawn: impl FnMut(&Terminal<B>),
) -> Result<(), B::Error> {
    let mut view = View::default();
    draw(terminal, app, &mut view)?;
    drawn(terminal);
    app.dirty = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        let wake = app.wake_at();
        let first = tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
            _ = tick.tick() => AppEvent::Tick,
            _ = sleep_until(wake), if wake.is_some() => AppEvent::Wake,
        };
        let started = Instant::now();
        let mut effects = app.handle(first);
        while started.elapsed() < DRAIN_BUDGET {
            let Ok(event) = inbox.try_recv() else { break };
            effects.extend(app.handle(event));
        }
        for effect in effects {
            runtime.run(effect);
        }
        if app.should_quit || terminal::panicked() {
            return Ok(());
        }
        if std::mem::take(&mut app.dirty) {
            draw(terminal, app, &mut view)?;
            drawn(terminal);
        }
    }
}

/// Waits until `at` (forever without one).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// One frame: the viewport moved as the app asked, then the state drawn as it is now (and
/// the app told so: an approval's keys count from the frame that shows it).
fn draw<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    view: &mut View,
) -> Result<(), B::Error> {
    view.scroll(app.take_scrolls());
    terminal.draw(|frame| view.draw(frame, app, Utc::now()))?;
    app.drawn();
    Ok(())
}
