//! The TUI's state and how every event on the bus changes it. `App::handle` never does I/O:
//! it returns [`Effect`]s (network calls) for the runtime to carry out, whose results come back
//! as events. The app knows nothing of drawing: the view draws from this state, and owns the
//! transcript's viewport, which the app moves only by asking ([`Scroll`]).

use std::collections::HashSet;

use centaur_protocol::api::{HarnessList, ThreadList, ThreadSummary};
use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::{Decision, Event, Harness, ThreadKey};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};
use uuid::Uuid;

use super::composer::{Composer, Outcome};
use super::reader::{self, Reading};
use super::transcript::{PendingApproval, Transcript};
use centaur_client::api::{Connection, Failure};
use centaur_client::render::thread_status;

/// Everything that can happen to the TUI: input, the server's events, answers to requests.
#[derive(Debug)]
pub enum AppEvent {
    Key(KeyEvent),
    Paste(String),
    Mouse(MouseEvent),
    Resize,
    /// An event of a followed thread.
    Server(Box<Event>),
    Connection {
        key: ThreadKey,
        state: Connection,
    },
    /// Following a thread stopped for good.
    StreamEnded {
        key: ThreadKey,
        error: Option<StreamError>,
    },
    Threads(Result<ThreadList, Failure>),
    /// The harnesses the server offers and which can run.
    Harnesses(Result<HarnessList, Failure>),
    Executed {
        key: ThreadKey,
        result: Result<Uuid, Failure>,
    },
    DecisionFailed {
        approval_id: Uuid,
        error: Failure,
    },
    ActionFailed {
        action: Action,
        error: Failure,
    },
    HighlighterReady,
    /// A second went by (elapsed times, periodic refreshes).
    Tick,
}

#[derive(Debug)]
pub enum StreamError {
    /// The thread does not exist yet: its first message creates it.
    NotFound,
    Other(Failure),
}

/// A request whose failure is told in the notice line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Interrupt,
    /// A message sent while a turn ran.
    Steer,
}

/// Work for the runtime; each answers with an [`AppEvent`].
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    LoadThreads,
    LoadHarnesses,
    Follow(ThreadKey),
    Execute {
        key: ThreadKey,
        harness: Option<Harness>,
        /// The thread's approval policy, when the person chose one.
        approval_policy: Option<ApprovalPolicy>,
        text: String,
    },
    /// A message while a turn runs: the harness takes it as steering.
    Steer {
        key: ThreadKey,
        text: String,
    },
    Interrupt(ThreadKey),
    Decide {
        key: ThreadKey,
        approval_id: Uuid,
        decision: Decision,
    },
    /// Put text on the person's clipboard (and in a file, where a terminal cannot).
    Copy(String),
}

/// A move of the transcript's viewport, asked of the view, which knows the lines and the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scroll {
    /// Lines towards the start of the thread.
    Up(usize),
    /// Lines towards its end.
    Down(usize),
    PageUp,
    PageDown,
    /// Back to the end, following new output.
    Bottom,
    /// To the thread's first line.
    Top,
    /// Keep this block in view from the next frame on (`None`: no block to keep).
    Reveal(Option<usize>),
}

/// The moves asked of one thread's viewport since the view last took them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scrolls {
    /// The [`ThreadView::serial`] of the thread they move.
    pub thread: u64,
    pub moves: Vec<Scroll>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    Threads,
    Thread,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    Help,
    HarnessPicker { selected: usize },
}

/// How the followed stream is doing, as the status line says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    Connecting,
    Live,
    Reconnecting,
    /// A thread that does not exist yet.
    New,
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Focus {
    Composer,
    /// Moving between foldable blocks.
    Transcript,
}

pub struct ThreadView {
    /// Which opening of a thread this is: a thread opened again starts afresh, in the view too.
    pub serial: u64,
    pub key: ThreadKey,
    /// The harness for the thread's first turn (a new thread).
    pub harness: Option<Harness>,
    pub transcript: Transcript,
    pub link: Link,
    pub composer: Composer,
    /// Blocks shown the other way from their default (folded ones open, open ones folded).
    pub toggled: HashSet<usize>,
    pub expand_all: bool,
    pub focus: Focus,
    pub selected: Option<usize>,
    /// Approvals whose decision is on its way to the server.
    pub deciding: HashSet<Uuid>,
    /// The approval policy chosen for this thread's next turns (`None`: the server's).
    pub approval_policy: Option<ApprovalPolicy>,
    /// Searching and how output is shown (see [`reader`]).
    pub reading: Reading,
    /// Moves of the viewport not yet taken by the view.
    scrolls: Vec<Scroll>,
}

impl ThreadView {
    fn new(serial: u64, key: ThreadKey, harness: Option<Harness>, link: Link) -> ThreadView {
        ThreadView {
            serial,
            key,
            harness,
            transcript: Transcript::default(),
            link,
            composer: Composer::default(),
            toggled: HashSet::new(),
            expand_all: false,
            focus: Focus::Composer,
            selected: None,
            deciding: HashSet::new(),
            approval_policy: None,
            reading: Reading::default(),
            scrolls: Vec::new(),
        }
    }

    /// Whether block `index` is drawn open.
    pub fn is_open(&self, index: usize) -> bool {
        self.expand_all != self.toggled.contains(&index)
    }

    pub fn foldable(&self) -> Vec<usize> {
        self.transcript
            .blocks()
            .iter()
            .enumerate()
            .filter(|(_, block)| block.foldable())
            .map(|(i, _)| i)
            .collect()
    }

    /// The approval the overlay asks about: the oldest not being decided.
    pub fn asking(&self) -> Option<&PendingApproval> {
        self.transcript
            .pending
            .iter()
            .find(|p| !self.deciding.contains(&p.approval_id))
    }

    pub fn scroll(&mut self, scroll: Scroll) {
        self.scrolls.push(scroll);
    }
}

#[derive(Default)]
pub struct ThreadsList {
    pub threads: Vec<ThreadSummary>,
    pub filter: String,
    pub selected: usize,
    pub loaded: bool,
    pub error: Option<String>,
}

impl ThreadsList {
    /// The threads matching the filter (every word, in key, platform, harness or status).
    pub fn visible(&self) -> Vec<&ThreadSummary> {
        let words: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        self.threads
            .iter()
            .filter(|t| {
                let haystack = format!(
                    "{} {} {} {}",
                    t.thread_key,
                    t.platform,
                    t.harness.as_str(),
                    thread_status(t.status)
                )
                .to_lowercase();
                words.iter().all(|w| haystack.contains(w.as_str()))
            })
            .collect()
    }

    /// Takes a fresh list, keeping the chosen thread chosen.
    fn replace(&mut self, list: ThreadList) {
        let chosen = self
            .visible()
            .get(self.selected)
            .map(|t| t.thread_key.clone());
        self.threads = list.threads;
        if let Some(at) =
            chosen.and_then(|key| self.visible().iter().position(|t| t.thread_key == key))
        {
            self.selected = at;
        }
        self.loaded = true;
        self.error = None;
        let visible = self.visible().len();
        self.selected = self.selected.min(visible.saturating_sub(1));
    }

    fn move_selection(&mut self, up: bool) {
        let len = self.visible().len();
        if up {
            self.selected = self.selected.saturating_sub(1);
        } else if self.selected + 1 < len {
            self.selected += 1;
        }
    }
}

pub struct App {
    pub server: String,
    pub screen: Screen,
    pub threads: ThreadsList,
    pub thread: Option<ThreadView>,
    pub overlay: Option<Overlay>,
    /// A one-line message for the person (an error, or what a key will do).
    pub notice: Option<String>,
    /// The harness a new thread gets without asking (`--harness`).
    pub default_harness: Option<Harness>,
    quit_armed: bool,
    pub should_quit: bool,
    /// Something changed since the last frame.
    pub dirty: bool,
    /// `dirty` before the event being handled: an event that changes nothing keeps it.
    dirty_before: bool,
    ticks: u64,
    /// How many threads were opened: the next one's serial.
    opened: u64,
}

/// How the TUI starts.
#[derive(Clone, Debug, Default)]
pub struct Start {
    pub thread_key: Option<ThreadKey>,
    pub harness: Option<Harness>,
    /// Open a new thread right away (with `harness`).
    pub new_thread: bool,
    /// A first line for the person (how to add a model key, say).
    pub notice: Option<String>,
    /// The thread list, when the caller fetched it already.
    pub threads: Option<ThreadList>,
}

const SCROLL_STEP: usize = 3;

impl App {
    pub fn new(server: String, start: &Start) -> (App, Vec<Effect>) {
        let mut app = App {
            server,
            screen: Screen::Threads,
            threads: ThreadsList::default(),
            thread: None,
            overlay: None,
            notice: start.notice.clone(),
            default_harness: start.harness,
            quit_armed: false,
            should_quit: false,
            dirty: true,
            dirty_before: true,
            ticks: 0,
            opened: 0,
        };
        // The list the caller already has is shown as is; otherwise it is fetched.
        let mut effects = match &start.threads {
            Some(list) => {
                app.handle(AppEvent::Threads(Ok(list.clone())));
                Vec::new()
            }
            None => vec![Effect::LoadThreads],
        };
        if let Some(key) = &start.thread_key {
            effects.extend(app.open(key.clone()));
        } else if start.new_thread {
            app.new_thread(start.harness);
        }
        (app, effects)
    }

    /// The moves of the shown thread's viewport asked for since the last call.
    pub fn take_scrolls(&mut self) -> Option<Scrolls> {
        let thread = self.thread.as_mut()?;
        Some(Scrolls {
            thread: thread.serial,
            moves: std::mem::take(&mut thread.scrolls),
        })
    }

    fn show(&mut self, key: ThreadKey, harness: Option<Harness>, link: Link) {
        self.opened += 1;
        self.thread = Some(ThreadView::new(self.opened, key, harness, link));
        self.screen = Screen::Thread;
    }

    fn open(&mut self, key: ThreadKey) -> Vec<Effect> {
        self.show(key.clone(), self.default_harness, Link::Connecting);
        vec![Effect::Follow(key)]
    }

    fn new_thread(&mut self, harness: Option<Harness>) {
        let key = ThreadKey::parse(&format!("cli:{}", Uuid::now_v7())).expect("a valid key");
        self.show(key, harness, Link::New);
    }

    pub fn handle(&mut self, event: AppEvent) -> Vec<Effect> {
        self.dirty_before = self.dirty;
        self.dirty = true;
        match event {
            AppEvent::Key(key) if key.kind != KeyEventKind::Release => return self.key(key),
            AppEvent::Key(_) => self.unchanged(),
            AppEvent::Paste(text) => self.paste(&text),
            AppEvent::Mouse(mouse) => self.mouse(mouse),
            AppEvent::Resize | AppEvent::HighlighterReady => {}
            AppEvent::Server(event) => self.server_event(&event),
            AppEvent::Connection { key, state } => {
                if let Some(thread) = self.current(&key) {
                    thread.link = match state {
                        Connection::Live => Link::Live,
                        Connection::Reconnecting => Link::Reconnecting,
                    };
                }
            }
            AppEvent::StreamEnded { key, error } => {
                if let Some(thread) = self.current(&key) {
                    thread.link = match error {
                        Some(StreamError::NotFound) => Link::New,
                        Some(StreamError::Other(error)) => Link::Failed(error.to_string()),
                        None => Link::Failed("the stream ended".into()),
                    };
                }
            }
            AppEvent::Threads(Ok(list)) => self.threads.replace(list),
            AppEvent::Threads(Err(error)) => self.threads.error = Some(error.to_string()),
            AppEvent::Harnesses(_) => {}
            AppEvent::Executed { key, result } => return self.executed(&key, result),
            AppEvent::DecisionFailed { approval_id, error } => {
                if let Some(thread) = &mut self.thread {
                    thread.deciding.remove(&approval_id);
                }
                self.notice = Some(format!("the decision was not taken: {error}"));
            }
            AppEvent::ActionFailed { action, error } => {
                self.notice = Some(match action {
                    Action::Interrupt => format!("the interrupt failed: {error}"),
                    Action::Steer => format!("not sent: {error}"),
                });
            }
            AppEvent::Tick => return self.tick(),
        }
        Vec::new()
    }

    fn unchanged(&mut self) {
        self.dirty = self.dirty_before;
    }

    fn current(&mut self, key: &ThreadKey) -> Option<&mut ThreadView> {
        self.thread.as_mut().filter(|t| &t.key == key)
    }

    fn paste(&mut self, text: &str) {
        match (self.screen, &mut self.thread) {
            (Screen::Thread, Some(thread)) => thread.composer.paste(text),
            _ => self
                .threads
                .filter
                .push_str(text.lines().next().unwrap_or("")),
        }
    }

    fn server_event(&mut self, event: &Event) {
        let Some(thread) = self.current(&event.thread_key) else {
            self.unchanged();
            return;
        };
        thread.transcript.apply(event);
        if !matches!(thread.link, Link::Reconnecting) {
            thread.link = Link::Live;
        }
        let pending: HashSet<Uuid> = thread
            .transcript
            .pending
            .iter()
            .map(|p| p.approval_id)
            .collect();
        thread.deciding.retain(|id| pending.contains(id));
    }

    /// A turn was accepted (or refused); a new thread now exists and is followed.
    fn executed(&mut self, key: &ThreadKey, result: Result<Uuid, Failure>) -> Vec<Effect> {
        let Some(thread) = self.current(key) else {
            return Vec::new();
        };
        match result {
            Ok(_) if thread.link == Link::New => {
                thread.link = Link::Connecting;
                vec![Effect::Follow(key.clone()), Effect::LoadThreads]
            }
            Ok(_) => Vec::new(),
            Err(error) => {
                self.notice = Some(format!("not sent: {error}"));
                Vec::new()
            }
        }
    }

    fn tick(&mut self) -> Vec<Effect> {
        self.ticks += 1;
        // Redraw for elapsed times; refresh the list now and then while it shows.
        let running = self
            .thread
            .as_ref()
            .is_some_and(|t| t.transcript.running.is_some() || t.link != Link::Live);
        self.dirty = self.dirty_before || running || self.screen == Screen::Threads;
        let mut effects = Vec::new();
        if self.screen == Screen::Threads && self.ticks.is_multiple_of(5) {
            effects.push(Effect::LoadThreads);
        }
        // A stream that failed (the server refused or was away at first) is tried again.
        if self.ticks.is_multiple_of(5)
            && let Some(thread) = &mut self.thread
            && matches!(thread.link, Link::Failed(_))
        {
            thread.link = Link::Connecting;
            effects.push(Effect::Follow(thread.key.clone()));
        }
        effects
    }

    fn mouse(&mut self, mouse: MouseEvent) {
        let up = match mouse.kind {
            MouseEventKind::ScrollUp => true,
            MouseEventKind::ScrollDown => false,
            MouseEventKind::Down(_)
            | MouseEventKind::Up(_)
            | MouseEventKind::Drag(_)
            | MouseEventKind::Moved
            | MouseEventKind::ScrollLeft
            | MouseEventKind::ScrollRight => {
                self.unchanged();
                return;
            }
        };
        match (self.screen, &mut self.thread) {
            (Screen::Thread, Some(thread)) => thread.scroll(if up {
                Scroll::Up(SCROLL_STEP)
            } else {
                Scroll::Down(SCROLL_STEP)
            }),
            _ => self.threads.move_selection(up),
        }
    }

    fn key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let quit_was_armed = std::mem::take(&mut self.quit_armed);
        self.notice = None;
        if let Some(overlay) = self.overlay.clone() {
            return self.overlay_key(overlay, key);
        }
        if ctrl && key.code == KeyCode::Char('c') {
            return self.ctrl_c(quit_was_armed);
        }
        if key.code == KeyCode::F(1) {
            self.overlay = Some(Overlay::Help);
            return Vec::new();
        }
        match self.screen {
            Screen::Threads => self.threads_key(key),
            Screen::Thread => self.thread_key(key),
        }
    }

    fn ctrl_c(&mut self, armed: bool) -> Vec<Effect> {
        if armed {
            self.should_quit = true;
            return Vec::new();
        }
        if self.screen == Screen::Thread
            && let Some(thread) = &mut self.thread
        {
            if thread.transcript.running.is_some() {
                self.quit_armed = true;
                self.notice = Some("interrupting… (Ctrl-C again quits)".into());
                return vec![Effect::Interrupt(thread.key.clone())];
            }
            if !thread.composer.is_empty() {
                thread.composer.clear();
                return Vec::new();
            }
        }
        self.quit_armed = true;
        self.notice = Some("press Ctrl-C again to quit".into());
        Vec::new()
    }

    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
    fn overlay_key(&mut self, overlay: Overlay, key: KeyEvent) -> Vec<Effect> {
        match overlay {
            Overlay::Help => self.overlay = None,
            Overlay::HarnessPicker { selected } => match key.code {
                KeyCode::Up | KeyCode::Char('k') => {
                    self.overlay = Some(Overlay::HarnessPicker {
                        selected: selected.saturating_sub(1),
                    })
                }
                KeyCode::Down | KeyCode::Char('j') => {
                    self.overlay = Some(Overlay::HarnessPicker {
                        selected: (selected + 1).min(Harness::ALL.len() - 1),
                    })
                }
                KeyCode::Enter => {
                    self.overlay = None;
                    self.new_thread(Some(Harness::ALL[selected]));
                }
                KeyCode::Esc => self.overlay = None,
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    self.overlay = None
                }
                _ => {}
            },
        }
        Vec::new()
    }

    fn pick_harness(&mut self) {
        let selected = self
            .default_harness
            .and_then(|h| Harness::ALL.iter().position(|x| *x == h))
            .unwrap_or(0);
        self.overlay = Some(Overlay::HarnessPicker { selected });
    }

    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
    fn threads_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('n') if ctrl => self.pick_harness(),
            KeyCode::Char('r') if ctrl => return vec![Effect::LoadThreads],
            KeyCode::F(5) => return vec![Effect::LoadThreads],
            KeyCode::Up => self.threads.move_selection(true),
            KeyCode::Down => self.threads.move_selection(false),
            KeyCode::PageUp => {
                self.threads.selected = self.threads.selected.saturating_sub(10);
            }
            KeyCode::PageDown => {
                let len = self.threads.visible().len();
                self.threads.selected = (self.threads.selected + 10).min(len.saturating_sub(1));
            }
            KeyCode::Enter => return self.open_chosen(),
            KeyCode::Esc if !self.threads.filter.is_empty() => self.threads.filter.clear(),
            KeyCode::Esc if self.thread.is_some() => self.screen = Screen::Thread,
            KeyCode::Backspace => {
                self.threads.filter.pop();
                self.threads.selected = 0;
            }
            KeyCode::Char('?') if self.threads.filter.is_empty() => {
                self.overlay = Some(Overlay::Help)
            }
            KeyCode::Char(c) if !ctrl => {
                self.threads.filter.push(c);
                self.threads.selected = 0;
            }
            _ => self.unchanged(),
        }
        Vec::new()
    }

    /// Enter on the thread list: the chosen thread, followed again if its stream had failed.
    fn open_chosen(&mut self) -> Vec<Effect> {
        let Some(key) = self
            .threads
            .visible()
            .get(self.threads.selected)
            .map(|t| t.thread_key.clone())
        else {
            return Vec::new();
        };
        let Some(thread) = self.thread.as_mut().filter(|t| t.key == key) else {
            return self.open(key);
        };
        self.screen = Screen::Thread;
        if matches!(thread.link, Link::Failed(_)) {
            thread.link = Link::Connecting;
            return vec![Effect::Follow(key)];
        }
        Vec::new()
    }

    fn thread_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(thread) = &mut self.thread else {
            self.screen = Screen::Threads;
            return Vec::new();
        };
        // The approval overlay takes its keys first.
        match approval_key(thread, key) {
            Modal::Decided(effects) => return effects,
            Modal::Blocked => {
                self.unchanged();
                return Vec::new();
            }
            Modal::Passes => {}
        }
        if let Some(effects) = self.thread_wide_key(key) {
            return effects;
        }
        let Some(thread) = &mut self.thread else {
            return Vec::new();
        };
        if thread.focus == Focus::Transcript {
            return reader::key(thread, key);
        }
        // With nothing written, Tab picks blocks and `?` is the help, not a character.
        if thread.composer.is_empty() && key.code == KeyCode::Tab {
            thread.focus = Focus::Transcript;
            thread.selected = thread.foldable().last().copied();
            return Vec::new();
        }
        if thread.composer.is_empty() && key.code == KeyCode::Char('?') {
            self.overlay = Some(Overlay::Help);
            return Vec::new();
        }
        self.composer_key(key)
    }

    /// The thread screen's keys that work whatever has the focus; `None` for the others.
    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
    fn thread_wide_key(&mut self, key: KeyEvent) -> Option<Vec<Effect>> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        let thread = self.thread.as_mut()?;
        match key.code {
            KeyCode::Char('t') if ctrl => {
                self.screen = Screen::Threads;
                return Some(vec![Effect::LoadThreads]);
            }
            KeyCode::Char('n') if ctrl => self.pick_harness(),
            KeyCode::Char('o') if ctrl => {
                thread.expand_all = !thread.expand_all;
                thread.toggled.clear();
            }
            KeyCode::PageUp => thread.scroll(Scroll::PageUp),
            KeyCode::PageDown => thread.scroll(Scroll::PageDown),
            KeyCode::Up if shift => thread.scroll(Scroll::Up(1)),
            KeyCode::Down if shift => thread.scroll(Scroll::Down(1)),
            KeyCode::Esc if thread.focus == Focus::Transcript => {
                thread.focus = Focus::Composer;
                thread.selected = None;
            }
            KeyCode::Esc if thread.transcript.running.is_some() => {
                self.notice = Some("interrupting…".into());
                return Some(vec![Effect::Interrupt(thread.key.clone())]);
            }
            _ => return None,
        }
        Some(Vec::new())
    }

    /// A key for the message being written; Enter sends it (as steering while a turn runs).
    fn composer_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let Some(thread) = &mut self.thread else {
            return Vec::new();
        };
        match thread.composer.key(key) {
            Outcome::Submit(text) => {
                thread.scroll(Scroll::Bottom);
                if thread.transcript.running.is_some() {
                    vec![Effect::Steer {
                        key: thread.key.clone(),
                        text,
                    }]
                } else {
                    vec![Effect::Execute {
                        key: thread.key.clone(),
                        harness: thread.harness.filter(|_| thread.link == Link::New),
                        approval_policy: thread.approval_policy,
                        text,
                    }]
                }
            }
            Outcome::Edited => Vec::new(),
            Outcome::Ignored => {
                self.unchanged();
                Vec::new()
            }
        }
    }
}

/// What the approval overlay made of a key.
enum Modal {
    /// No approval is asked, or the key is one the overlay lets through.
    Passes,
    /// The key decided the approval asked about.
    Decided(Vec<Effect>),
    /// The overlay is modal: the key does nothing.
    Blocked,
}

/// While an approval is asked: y, a, n or d decide it; only scrolling, folding, leaving and
/// interrupting pass.
fn approval_key(thread: &mut ThreadView, key: KeyEvent) -> Modal {
    let Some(asking) = thread.asking() else {
        return Modal::Passes;
    };
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    let plain = !ctrl && !key.modifiers.contains(KeyModifiers::ALT);
    let decision = if let KeyCode::Char(letter) = key.code
        && plain
    {
        match letter {
            'y' => Some(Decision::Approve),
            'a' => Some(Decision::ApproveForSession),
            'n' | 'd' => Some(Decision::Deny),
            _ => None,
        }
    } else {
        None
    };
    if let Some(decision) = decision {
        let approval_id = asking.approval_id;
        thread.deciding.insert(approval_id);
        return Modal::Decided(vec![Effect::Decide {
            key: thread.key.clone(),
            approval_id,
            decision,
        }]);
    }
    let passes = matches!(key.code, KeyCode::PageUp | KeyCode::PageDown | KeyCode::Esc)
        || (shift && matches!(key.code, KeyCode::Up | KeyCode::Down))
        || (ctrl && matches!(key.code, KeyCode::Char('t') | KeyCode::Char('o')));
    if passes {
        Modal::Passes
    } else {
        Modal::Blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centaur_test_support::script::Script;

    fn key(app: &mut App, code: KeyCode, modifiers: KeyModifiers) -> Vec<Effect> {
        app.handle(AppEvent::Key(KeyEvent::new(code, modifiers)))
    }

    fn typed(app: &mut App, text: &str) {
        for c in text.chars() {
            key(app, KeyCode::Char(c), KeyModifiers::NONE);
        }
    }

    fn showing(script: &Script) -> App {
        let key = script.events()[0].thread_key.clone();
        let (mut app, effects) = App::new(
            "http://server".into(),
            &Start {
                thread_key: Some(key.clone()),
                ..Start::default()
            },
        );
        assert_eq!(effects, [Effect::LoadThreads, Effect::Follow(key)]);
        for event in script.events() {
            app.handle(AppEvent::Server(Box::new(event.clone())));
        }
        app
    }

    #[test]
    fn a_new_thread_sends_with_its_harness_then_follows() {
        let (mut app, _) = App::new(
            "http://server".into(),
            &Start {
                harness: Some(Harness::Shell),
                new_thread: true,
                ..Start::default()
            },
        );
        typed(&mut app, "echo hi");
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let thread_key = app.thread.as_ref().unwrap().key.clone();
        assert!(thread_key.as_ref().starts_with("cli:"));
        assert_eq!(
            effects,
            [Effect::Execute {
                key: thread_key.clone(),
                harness: Some(Harness::Shell),
                approval_policy: None,
                text: "echo hi".into()
            }]
        );
        let effects = app.handle(AppEvent::Executed {
            key: thread_key.clone(),
            result: Ok(Uuid::nil()),
        });
        assert_eq!(effects, [Effect::Follow(thread_key), Effect::LoadThreads]);
    }

    #[test]
    fn ctrl_c_interrupts_a_running_turn_and_a_second_quits() {
        let mut script = Script::new();
        script.user("sleep 30");
        let mut app = showing(&script);
        let thread_key = script.events()[0].thread_key.clone();
        assert_eq!(
            key(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL),
            [Effect::Interrupt(thread_key.clone())]
        );
        assert!(!app.should_quit);
        key(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert!(app.should_quit);

        // Esc interrupts too; with no turn running, Ctrl-C first clears the message.
        let mut app = showing(&script);
        assert_eq!(
            key(&mut app, KeyCode::Esc, KeyModifiers::NONE),
            [Effect::Interrupt(thread_key)]
        );
        script.cancelled("interrupted");
        let mut app = showing(&script);
        typed(&mut app, "draft");
        key(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert!(app.thread.as_ref().unwrap().composer.is_empty());
        assert!(!app.should_quit);
    }

    #[test]
    fn a_message_during_a_turn_steers_it() {
        let mut script = Script::new();
        script.user("write the report");
        let mut app = showing(&script);
        typed(&mut app, "use British spelling");
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(
            effects,
            [Effect::Steer {
                key: script.events()[0].thread_key.clone(),
                text: "use British spelling".into()
            }]
        );
    }

    #[test]
    fn approval_keys_decide_the_oldest_and_typing_waits() {
        let mut script = Script::new();
        script.user("build");
        let first = script.approval("run `make`");
        let second = script.approval("run `make install`");
        let mut app = showing(&script);
        let thread_key = script.events()[0].thread_key.clone();
        // Letters other than the decisions do not reach the composer while asked.
        typed(&mut app, "x");
        assert!(app.thread.as_ref().unwrap().composer.is_empty());
        assert_eq!(
            key(&mut app, KeyCode::Char('a'), KeyModifiers::NONE),
            [Effect::Decide {
                key: thread_key.clone(),
                approval_id: first,
                decision: Decision::ApproveForSession
            }]
        );
        // While that decision travels, the next one is asked.
        assert_eq!(
            app.thread.as_ref().unwrap().asking().unwrap().approval_id,
            second
        );
        assert_eq!(
            key(&mut app, KeyCode::Char('n'), KeyModifiers::NONE),
            [Effect::Decide {
                key: thread_key,
                approval_id: second,
                decision: Decision::Deny
            }]
        );
        // A refused decision comes back to be asked again.
        app.handle(AppEvent::DecisionFailed {
            approval_id: second,
            error: Failure::Unreachable {
                url: "http://server".into(),
                reason: "the server is away".into(),
            },
        });
        assert_eq!(
            app.thread.as_ref().unwrap().asking().unwrap().approval_id,
            second
        );
    }

    /// An event that changes nothing (a mouse move) does not cancel the redraw an earlier
    /// event in the same batch asked for.
    #[test]
    fn a_batch_redraws_when_any_event_in_it_changed_something() {
        let mut script = Script::new();
        script.user("hi");
        let mut app = showing(&script);
        app.dirty = false;
        script.completed("done");
        app.handle(AppEvent::Server(Box::new(
            script.events().last().unwrap().clone(),
        )));
        app.handle(AppEvent::Mouse(MouseEvent {
            kind: MouseEventKind::Moved,
            column: 3,
            row: 4,
            modifiers: KeyModifiers::NONE,
        }));
        assert!(app.dirty);
    }

    /// Scrolling keys and sending are asked of the view, in order, for the thread they were
    /// pressed in; a thread opened anew is another viewport.
    #[test]
    fn scrolling_is_asked_of_the_view_in_order() {
        let mut script = Script::new();
        script.user("hi");
        let mut app = showing(&script);
        let serial = app.thread.as_ref().unwrap().serial;
        key(&mut app, KeyCode::PageUp, KeyModifiers::NONE);
        key(&mut app, KeyCode::Up, KeyModifiers::SHIFT);
        typed(&mut app, "more");
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(
            app.take_scrolls(),
            Some(Scrolls {
                thread: serial,
                moves: vec![Scroll::PageUp, Scroll::Up(1), Scroll::Bottom],
            })
        );
        assert_eq!(app.take_scrolls().unwrap().moves, []);
        key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_ne!(app.take_scrolls().unwrap().thread, serial);
    }

    /// Keys with Ctrl (Ctrl-N, Ctrl-A, Ctrl-D) are not decisions.
    #[test]
    fn control_keys_do_not_decide_an_approval() {
        let mut script = Script::new();
        script.user("build");
        script.approval("run `make`");
        let mut app = showing(&script);
        for c in ['n', 'a', 'd'] {
            let effects = key(&mut app, KeyCode::Char(c), KeyModifiers::CONTROL);
            assert!(
                !effects.iter().any(|e| matches!(e, Effect::Decide { .. })),
                "Ctrl-{c}: {effects:?}"
            );
        }
    }

    /// A list fetched before the TUI started is shown, not fetched again.
    #[test]
    fn a_list_given_at_start_is_not_fetched_again() {
        let (app, effects) = App::new(
            "http://server".into(),
            &Start {
                threads: Some(ThreadList {
                    threads: Vec::new(),
                    next_before: None,
                }),
                ..Start::default()
            },
        );
        assert!(effects.is_empty(), "{effects:?}");
        assert!(app.threads.loaded);
    }

    #[test]
    fn the_thread_list_opens_the_chosen_thread() {
        let (mut app, _) = App::new("http://server".into(), &Start::default());
        let summary = |key: &str| ThreadSummary {
            thread_key: ThreadKey::parse(key).unwrap(),
            platform: "api".into(),
            harness: Harness::Echo,
            persona: None,
            status: centaur_protocol::api::ThreadStatus::Idle,
            title: None,
            waiting_approvals: 0,
            created_at: chrono::Utc::now(),
            last_activity_at: chrono::Utc::now(),
            last_event_id: 1,
        };
        app.handle(AppEvent::Threads(Ok(ThreadList {
            threads: vec![summary("api:alpha"), summary("api:beta")],
            next_before: None,
        })));
        typed(&mut app, "bet");
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(
            effects,
            [Effect::Follow(ThreadKey::parse("api:beta").unwrap())]
        );
        assert_eq!(app.screen, Screen::Thread);
    }
}
