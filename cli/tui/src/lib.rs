//! The terminal interface: thread list, live transcript, composer and approvals.
//!
//! One event bus carries everything that happens (keys, the server's events, answers to
//! requests) to [`App::handle`], which changes the state and asks for network work as
//! [`Effect`]s; the [`Runtime`] carries those out on tasks that answer on the bus. Input is read
//! on its own thread. After draining what is on the bus, the loop draws once, so bursts of
//! events cost one frame.
#![cfg_attr(test, allow(clippy::unwrap_used))] // tests stop at the first surprise

pub mod app;
pub mod composer;
pub mod highlight;
pub mod markdown;
pub mod transcript;
pub mod view;
pub mod wrap;

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use centaur_protocol::ThreadKey;
use chrono::Utc;
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{
    self as term_event, DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste,
    EnableMouseCapture, Event as TermEvent,
};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;

pub use app::{App, AppEvent, Effect, Start, StreamError};

use centaur_client::api::{Client, Failure};

/// At most this long is spent taking events off the bus before a frame is drawn.
const DRAIN_BUDGET: Duration = Duration::from_millis(8);

/// Runs the TUI until the person quits.
pub async fn run(client: Client, start: Start) -> Result<ExitCode, Failure> {
    // Reach the server before taking over the terminal, so a wrong URL or token is one line.
    let threads = client.thread_list().await?;
    let (bus, mut inbox) = unbounded_channel();
    {
        let bus = bus.clone();
        highlight::load_in_background(move || {
            let _ = bus.send(AppEvent::HighlighterReady);
        });
    }
    let mut terminal =
        enter().map_err(|e| Failure::Local(format!("cannot use the terminal: {e}")))?;
    read_input(bus.clone());
    let start = Start {
        threads: Some(threads),
        ..start
    };
    let (mut app, effects) = App::new(client.url().to_owned(), &start);
    let mut runtime = Runtime::new(client, bus);
    for effect in effects {
        runtime.run(effect);
    }
    let outcome = event_loop(&mut terminal, &mut app, &mut runtime, &mut inbox, |_| {}).await;
    leave();
    outcome.map_err(|e| Failure::Local(format!("the terminal failed: {e}")))?;
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
    terminal.draw(|frame| view::draw(frame, app, Utc::now()))?;
    drawn(terminal);
    app.dirty = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tick.tick().await;
    loop {
        let first = tokio::select! {
            event = inbox.recv() => match event {
                Some(event) => event,
                None => return Ok(()),
            },
            _ = tick.tick() => AppEvent::Tick,
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
        if app.should_quit || PANICKED.load(Ordering::SeqCst) {
            return Ok(());
        }
        if std::mem::take(&mut app.dirty) {
            terminal.draw(|frame| view::draw(frame, app, Utc::now()))?;
            drawn(terminal);
        }
    }
}

/// Carries out effects on tasks that answer on the bus.
pub struct Runtime {
    client: Client,
    bus: UnboundedSender<AppEvent>,
    follow: Option<JoinHandle<()>>,
    /// Messages go out one at a time, in the order they were typed.
    outbox: UnboundedSender<Effect>,
}

impl Runtime {
    pub fn new(client: Client, bus: UnboundedSender<AppEvent>) -> Runtime {
        let (outbox, mut queue) = unbounded_channel::<Effect>();
        let (sender, answers) = (client.clone(), bus.clone());
        tokio::spawn(async move {
            while let Some(effect) = queue.recv().await {
                send_message(&sender, &answers, effect).await;
            }
        });
        Runtime {
            client,
            bus,
            follow: None,
            outbox,
        }
    }

    pub fn run(&mut self, effect: Effect) {
        let client = self.client.clone();
        let bus = self.bus.clone();
        match effect {
            Effect::LoadThreads => {
                tokio::spawn(async move {
                    let list = client.thread_list().await.map_err(|e| e.to_string());
                    let _ = bus.send(AppEvent::Threads(list));
                });
            }
            Effect::Follow(key) => {
                if let Some(previous) = self.follow.take() {
                    previous.abort();
                }
                self.follow = Some(tokio::spawn(follow(client, bus, key)));
            }
            effect @ (Effect::Execute { .. } | Effect::Steer { .. }) => {
                let _ = self.outbox.send(effect);
            }
            Effect::Interrupt(key) => {
                tokio::spawn(async move {
                    if let Err(error) = client.interrupt(&key).await {
                        let _ = bus.send(AppEvent::ActionFailed(format!(
                            "the interrupt failed: {error}"
                        )));
                    }
                });
            }
            Effect::Decide {
                key,
                approval_id,
                decision,
            } => {
                tokio::spawn(async move {
                    match client.approve(&key, approval_id, decision.as_str()).await {
                        Ok(()) => {}
                        // Decided elsewhere first: its `approval.resolved` is on its way.
                        Err(Failure::Api { code, .. })
                            if code == "approval_already_decided" || code == "approval_expired" => {
                        }
                        Err(error) => {
                            let _ = bus.send(AppEvent::DecisionFailed {
                                approval_id,
                                error: error.to_string(),
                            });
                        }
                    }
                });
            }
        }
    }
}

async fn send_message(client: &Client, bus: &UnboundedSender<AppEvent>, effect: Effect) {
    match effect {
        Effect::Execute { key, harness, text } => {
            let result = client
                .execute(&key, harness.map(|h| h.as_str()), &text, None)
                .await
                .map_err(|e| e.to_string());
            let _ = bus.send(AppEvent::Executed { key, result });
        }
        Effect::Steer { key, text } => {
            if let Err(error) = client.message(&key, &text).await {
                let _ = bus.send(AppEvent::ActionFailed(format!("not sent: {error}")));
            }
        }
        _ => {}
    }
}

async fn follow(client: Client, bus: UnboundedSender<AppEvent>, key: ThreadKey) {
    let states = bus.clone();
    let state_key = key.clone();
    let result = client
        .follow_with(
            &key,
            0,
            None,
            |state| {
                let _ = states.send(AppEvent::Connection {
                    key: state_key.clone(),
                    state,
                });
            },
            |event| bus.send(AppEvent::Server(Box::new(event.clone()))).is_ok(),
        )
        .await;
    let error = match result {
        // The bus closed: the TUI is quitting.
        Ok(()) => return,
        Err(Failure::Api { code, .. }) if code == "thread_not_found" => StreamError::NotFound,
        Err(error) => StreamError::Other(error.to_string()),
    };
    let _ = bus.send(AppEvent::StreamEnded {
        key,
        error: Some(error),
    });
}

type Screen = Terminal<CrosstermBackend<std::io::BufWriter<std::io::Stdout>>>;

/// Takes over the terminal: raw mode, the alternate screen, pastes as one event, the mouse
/// wheel. A panic puts the terminal back before its message prints.
fn enter() -> std::io::Result<Screen> {
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

/// Set when anything panicked (a task, say): the terminal was given back, so the TUI stops.
static PANICKED: AtomicBool = AtomicBool::new(false);

fn leave() {
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
fn read_input(bus: UnboundedSender<AppEvent>) {
    std::thread::Builder::new()
        .name("input".into())
        .spawn(move || {
            loop {
                let event = match term_event::read() {
                    Ok(TermEvent::Key(key)) => AppEvent::Key(key),
                    Ok(TermEvent::Paste(text)) => AppEvent::Paste(text),
                    Ok(TermEvent::Mouse(mouse)) => AppEvent::Mouse(mouse),
                    Ok(TermEvent::Resize(..)) => AppEvent::Resize,
                    Ok(_) => continue,
                    Err(_) => return,
                };
                if bus.send(event).is_err() {
                    return;
                }
            }
        })
        .expect("a thread");
}
