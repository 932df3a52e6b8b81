//! The TUI's state and how every event on the bus changes it. `App::handle` never does I/O:
//! it returns [`Effect`]s (network calls) for the runtime to carry out, whose results come back
//! as events. The app knows nothing of drawing: the view draws from this state, and owns the
//! transcript's viewport, which the app moves only by asking ([`Scroll`]).

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use centaur_protocol::api::{HarnessInfo, HarnessList, ThreadList, ThreadSummary};
use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::{Decision, ErrorCode, Event, Harness, ThreadKey};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEvent, MouseEventKind,
};
use uuid::Uuid;

use super::composer::{Composer, Outcome};
use super::reader::{self, Mode, Reading};
use super::transcript::{PendingApproval, Transcript};
use centaur_client::api::{Connection, Failure};
use centaur_client::render::{self, thread_status};

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
    InterruptFailed(Failure),
    /// A message sent while a turn ran was refused; it comes back to the composer.
    SteerRefused {
        key: ThreadKey,
        text: String,
        error: Failure,
    },
    HighlighterReady,
    /// A second went by (elapsed times, periodic refreshes).
    Tick,
    /// Where a copy ([`Effect::Copy`]) went: the file written, or why none was.
    Copied(Result<PathBuf, String>),
    /// The time [`App::wake_at`] asked for came (an approval's keys count from now).
    Wake,
}

#[derive(Debug)]
pub enum StreamError {
    /// The thread does not exist yet: its first message creates it.
    NotFound,
    Other(Failure),
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
    /// Choosing the harness of a new thread; `selected` is one of [`App::offered_harnesses`].
    HarnessPicker {
        selected: Harness,
    },
}

/// What the server said about the harnesses it offers.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Harnesses {
    #[default]
    Loading,
    Loaded(HarnessList),
    /// The list could not be had (an older server, say): every harness is offered.
    Unknown(String),
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
    /// The thread's title as the thread list gave it (`None`: untitled, or not listed yet).
    pub title: Option<String>,
    /// The approval the overlay asks about, and since when its keys count down to arming:
    /// `None` until a frame showed it, then from that frame or the last key it swallowed.
    asked: Option<(Uuid, Option<Instant>)>,
    /// Messages that start a turn, sent and not yet answered, oldest first: a refused one
    /// comes back to the composer.
    sending: VecDeque<String>,
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
            title: None,
            asked: None,
            sending: VecDeque::new(),
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
    /// Only threads that live in Slack (Ctrl-S).
    pub slack_only: bool,
    pub selected: usize,
    pub loaded: bool,
    pub error: Option<String>,
}

impl ThreadsList {
    /// The threads matching the filter (every word, in title, key, platform, harness,
    /// status, or a Slack thread's channel and who started it: `slack`, `#general`, `dm`,
    /// `ann`), and only Slack's with [`ThreadsList::slack_only`].
    pub fn visible(&self) -> Vec<&ThreadSummary> {
        let words: Vec<String> = self
            .filter
            .split_whitespace()
            .map(str::to_lowercase)
            .collect();
        self.threads
            .iter()
            .filter(|t| !self.slack_only || t.slack.is_some())
            .filter(|t| {
                let haystack = format!(
                    "{} {} {} {} {} {}",
                    t.title.as_deref().unwrap_or(""),
                    t.thread_key,
                    t.platform,
                    t.harness.as_str(),
                    thread_status(t.status),
                    t.slack
                        .as_ref()
                        .map(render::slack_origin)
                        .unwrap_or_default(),
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

    /// The listed title of thread `key`.
    fn title(&self, key: &ThreadKey) -> Option<String> {
        self.threads
            .iter()
            .find(|t| &t.thread_key == key)
            .and_then(|t| t.title.clone())
    }

    /// Clears the filter (the list is left), keeping `key` chosen if it is listed.
    fn leave(&mut self, key: Option<&ThreadKey>) {
        self.filter.clear();
        if let Some(at) = key.and_then(|key| self.threads.iter().position(|t| &t.thread_key == key))
        {
            self.selected = at;
        }
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

/// How long an approval is on screen, taking keys, with no key pressed, before a key decides
/// it: a key pressed for something else as it appears (a search's `n`, a copy's `y`, a
/// message being typed) is not a decision, and each one swallowed starts the wait again.
pub const ARM_DELAY: Duration = Duration::from_millis(400);

/// The time the app goes by: the system's, or one a test sets. Reading it is the app's only
/// look outside its events.
#[derive(Clone, Copy, Debug, Default)]
pub struct Clock {
    set: Option<Instant>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        self.set.unwrap_or_else(Instant::now)
    }

    /// From now on the time is `now`, until set or advanced again.
    pub fn set(&mut self, now: Instant) {
        self.set = Some(now);
    }

    /// Moves the time on by `by` (from the system's time, the first time).
    pub fn advance(&mut self, by: Duration) {
        self.set = Some(self.now() + by);
    }
}

pub struct App {
    pub server: String,
    /// The time approvals are armed by.
    pub clock: Clock,
    pub screen: Screen,
    pub threads: ThreadsList,
    pub thread: Option<ThreadView>,
    pub overlay: Option<Overlay>,
    /// A one-line message for the person (an error, or what a key will do).
    pub notice: Option<String>,
    /// The harness a new thread gets without asking (`--harness`).
    pub default_harness: Option<Harness>,
    /// Which harnesses the server offers and can run.
    pub harnesses: Harnesses,
    quit_armed: bool,
    /// The notice says a turn is being interrupted: it goes when the turn ends.
    interrupting: bool,
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
            clock: Clock::default(),
            screen: Screen::Threads,
            threads: ThreadsList::default(),
            thread: None,
            overlay: None,
            notice: start.notice.clone(),
            default_harness: start.harness,
            harnesses: Harnesses::Loading,
            quit_armed: false,
            interrupting: false,
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
        effects.push(Effect::LoadHarnesses);
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
        let mut thread = ThreadView::new(self.opened, key, harness, link);
        thread.title = self.threads.title(&thread.key);
        self.thread = Some(thread);
        self.screen = Screen::Thread;
    }

    /// The harnesses the picker offers, in order: the server's list, or every harness (as
    /// available) when the server could not say.
    pub fn offered_harnesses(&self) -> Vec<HarnessInfo> {
        match &self.harnesses {
            Harnesses::Loaded(list) if !list.harnesses.is_empty() => list.harnesses.clone(),
            Harnesses::Loaded(_) | Harnesses::Loading | Harnesses::Unknown(_) => Harness::ALL
                .iter()
                .map(|harness| HarnessInfo {
                    harness: *harness,
                    available: true,
                    unavailable_reason: None,
                })
                .collect(),
        }
    }

    /// The harness the picker starts on: `--harness`, else the server's default, else the
    /// first offered; one that can run before one that cannot.
    fn preselected(&self) -> Harness {
        let offered = self.offered_harnesses();
        let server_default = match &self.harnesses {
            Harnesses::Loaded(list) => Some(list.default),
            Harnesses::Loading | Harnesses::Unknown(_) => None,
        };
        self.default_harness
            .or(server_default)
            .filter(|wanted| offered.iter().any(|i| i.harness == *wanted && i.available))
            .or_else(|| offered.iter().find(|i| i.available).map(|i| i.harness))
            .or_else(|| offered.first().map(|i| i.harness))
            .unwrap_or(Harness::ALL[0])
    }

    fn harnesses_loaded(&mut self, result: Result<HarnessList, Failure>) {
        match result {
            Ok(list) => self.harnesses = Harnesses::Loaded(list),
            // A list had before is better than none.
            Err(_) if matches!(self.harnesses, Harnesses::Loaded(_)) => {}
            Err(error) => self.harnesses = Harnesses::Unknown(error.to_string()),
        }
        // A picker already open keeps its choice if it is still offered.
        if let Some(Overlay::HarnessPicker { selected }) = self.overlay
            && !self
                .offered_harnesses()
                .iter()
                .any(|i| i.harness == selected)
        {
            self.overlay = Some(Overlay::HarnessPicker {
                selected: self.preselected(),
            });
        }
    }

    fn open(&mut self, key: ThreadKey) -> Vec<Effect> {
        self.show(key.clone(), self.default_harness, Link::Connecting);
        vec![Effect::Follow(key)]
    }

    /// A new thread with `harness`. A new thread left before anything was sent (its first
    /// message refused, say) gives its message and approval policy to this one.
    fn new_thread(&mut self, harness: Option<Harness>) {
        let key = ThreadKey::parse(&format!("cli:{}", Uuid::now_v7())).expect("a valid key");
        let unsent = self.thread.take().filter(|t| {
            t.link == Link::New && t.transcript.events_seen == 0 && t.sending.is_empty()
        });
        self.show(key, harness, Link::New);
        if let (Some(unsent), Some(thread)) = (unsent, &mut self.thread) {
            thread.composer = unsent.composer;
            thread.approval_policy = unsent.approval_policy;
        }
    }

    pub fn handle(&mut self, event: AppEvent) -> Vec<Effect> {
        let effects = self.handle_event(event);
        self.watch_approval();
        effects
    }

    /// Whether the approval asked about takes decisions: it has been on screen, taking keys,
    /// for [`ARM_DELAY`] since it was first drawn and since the last key it swallowed.
    pub fn approval_armed(&self) -> bool {
        self.asked_since()
            .is_some_and(|since| self.clock.now().saturating_duration_since(since) >= ARM_DELAY)
    }

    /// When the app wants an [`AppEvent::Wake`]: when the approval asked about becomes armed.
    pub fn wake_at(&self) -> Option<Instant> {
        let since = self.asked_since()?;
        (!self.approval_armed()).then_some(since + ARM_DELAY)
    }

    /// The event loop drew a frame of the app as it is: an approval asked about that no frame
    /// showed yet is on screen from now.
    pub fn drawn(&mut self) {
        let now = self.clock.now();
        if let Some(thread) = &mut self.thread
            && let Some((_, since @ None)) = &mut thread.asked
        {
            *since = Some(now);
        }
    }

    fn asked_since(&self) -> Option<Instant> {
        let thread = self.thread.as_ref()?;
        let (_, since) = thread.asked?;
        since
    }

    /// Notes when the approval asked about starts taking keys: on screen, with no overlay
    /// over it and no search query being typed. Another approval asked, or one shown again,
    /// starts afresh, from the next frame drawn (which the change asks for).
    fn watch_approval(&mut self) {
        let on_screen = self.screen == Screen::Thread && self.overlay.is_none();
        let Some(thread) = &mut self.thread else {
            return;
        };
        let asking = if on_screen && !reader::typing_search(thread) {
            thread.asking().map(|p| p.approval_id)
        } else {
            None
        };
        let asked = match (asking, thread.asked) {
            (Some(id), Some((was, since))) if id == was => Some((was, since)),
            (Some(id), _) => Some((id, None)),
            (None, _) => None,
        };
        if asked.map(|(id, _)| id) != thread.asked.map(|(id, _)| id) {
            self.dirty = true;
        }
        thread.asked = asked;
    }

    fn handle_event(&mut self, event: AppEvent) -> Vec<Effect> {
        self.dirty_before = self.dirty;
        self.dirty = true;
        match event {
            AppEvent::Key(key) if key.kind != KeyEventKind::Release => return self.key(key),
            AppEvent::Key(_) => self.unchanged(),
            AppEvent::Paste(text) => self.paste(&text),
            AppEvent::Mouse(mouse) => self.mouse(mouse),
            AppEvent::Resize | AppEvent::HighlighterReady | AppEvent::Wake => {}
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
            AppEvent::Threads(Ok(list)) => {
                self.threads.replace(list);
                if let Some(thread) = &mut self.thread {
                    thread.title = self.threads.title(&thread.key);
                }
            }
            AppEvent::Threads(Err(error)) => self.threads.error = Some(error.to_string()),
            AppEvent::Harnesses(result) => self.harnesses_loaded(result),
            AppEvent::Executed { key, result } => return self.executed(&key, result),
            AppEvent::DecisionFailed { approval_id, error } => {
                if let Some(thread) = &mut self.thread {
                    thread.deciding.remove(&approval_id);
                }
                self.notice = Some(format!("the decision was not taken: {error}"));
            }
            AppEvent::InterruptFailed(error) => {
                self.notice = Some(format!("the interrupt failed: {error}"));
            }
            AppEvent::SteerRefused { key, text, error } => {
                if let Some(thread) = self.current(&key)
                    && thread.composer.is_empty()
                {
                    thread.composer.restore(&text);
                }
                self.notice = Some(format!("not sent: {error}"));
            }
            AppEvent::Copied(outcome) => self.copied(outcome),
            AppEvent::Tick => return self.tick(),
        }
        Vec::new()
    }

    /// Tells where a copy went: in the reader's line, or the notice once the message has the
    /// focus again.
    fn copied(&mut self, outcome: Result<PathBuf, String>) {
        let Some(thread) = &mut self.thread else {
            return;
        };
        let Some(told) = reader::copied(thread, outcome) else {
            return self.unchanged();
        };
        match thread.focus {
            Focus::Transcript => thread.reading.told = Some(told),
            Focus::Composer => self.notice = Some(told),
        }
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
        let was_running = thread.transcript.running.is_some();
        thread.transcript.apply(event);
        let turn_ended = was_running && thread.transcript.running.is_none();
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
        // "interrupting…" is over once the turn is (and Ctrl-C no longer quits at once).
        if turn_ended && self.interrupting {
            self.interrupting = false;
            self.notice = None;
            self.quit_armed = false;
        }
    }

    /// A turn was accepted (or refused); a new thread now exists and is followed.
    /// A refused message comes back to an empty composer; a thread refused its harness stays
    /// new, so another can be picked.
    fn executed(&mut self, key: &ThreadKey, result: Result<Uuid, Failure>) -> Vec<Effect> {
        let Some(thread) = self.thread.as_mut().filter(|t| &t.key == key) else {
            return Vec::new();
        };
        let text = thread.sending.pop_front();
        match result {
            Ok(_) if thread.link == Link::New => {
                thread.link = Link::Connecting;
                vec![Effect::Follow(key.clone()), Effect::LoadThreads]
            }
            Ok(_) => Vec::new(),
            Err(error) => {
                if let Some(text) = text
                    && thread.composer.is_empty()
                {
                    thread.composer.restore(&text);
                }
                self.notice = Some(match &error {
                    Failure::Api { message, .. } if error.is_api(ErrorCode::HarnessUnavailable) => {
                        format!("{message} · Ctrl-N picks another harness")
                    }
                    Failure::Unreachable { .. }
                    | Failure::DatabaseUnavailable { .. }
                    | Failure::Unauthorized(_)
                    | Failure::NotLoggedIn(_)
                    | Failure::Api { .. }
                    | Failure::Unreadable { .. }
                    | Failure::Credentials(_)
                    | Failure::ThreadNeverAppeared { .. } => format!("not sent: {error}"),
                });
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
        self.interrupting = false;
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
                self.interrupting = true;
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
            Overlay::HarnessPicker { selected } => {
                let offered = self.offered_harnesses();
                let at = offered
                    .iter()
                    .position(|i| i.harness == selected)
                    .unwrap_or(0);
                let pick = |at: usize| Overlay::HarnessPicker {
                    selected: offered.get(at).map_or(selected, |i| i.harness),
                };
                match key.code {
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.overlay = Some(pick(at.saturating_sub(1)))
                    }
                    KeyCode::Down | KeyCode::Char('j') => self.overlay = Some(pick(at + 1)),
                    KeyCode::Enter => match offered.iter().find(|i| i.harness == selected) {
                        // Not a thread that cannot run: the reason, and the picker stays.
                        Some(info) if !info.available => {
                            self.notice = Some(format!(
                                "{}: {}",
                                info.harness.as_str(),
                                info.unavailable_reason
                                    .as_deref()
                                    .unwrap_or("the server cannot run it")
                            ));
                        }
                        Some(_) | None => {
                            self.overlay = None;
                            self.new_thread(Some(selected));
                        }
                    },
                    KeyCode::Esc => self.overlay = None,
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        self.overlay = None
                    }
                    _ => {}
                }
            }
        }
        Vec::new()
    }

    /// Opens the harness picker (leaving the thread list) and asks the server again which
    /// harnesses can run.
    fn pick_harness(&mut self) -> Vec<Effect> {
        self.threads.leave(None);
        self.overlay = Some(Overlay::HarnessPicker {
            selected: self.preselected(),
        });
        vec![Effect::LoadHarnesses]
    }

    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here does nothing
    fn threads_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('n') if ctrl => return self.pick_harness(),
            KeyCode::Char('r') if ctrl => return vec![Effect::LoadThreads],
            KeyCode::Char('s') if ctrl => {
                self.threads.slack_only = !self.threads.slack_only;
                self.threads.selected = 0;
            }
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
    /// The filter goes with the list.
    fn open_chosen(&mut self) -> Vec<Effect> {
        let Some(key) = self
            .threads
            .visible()
            .get(self.threads.selected)
            .map(|t| t.thread_key.clone())
        else {
            if !self.threads.filter.is_empty() {
                self.notice = Some(format!("no thread matches `{}`", self.threads.filter));
            }
            return Vec::new();
        };
        self.threads.leave(Some(&key));
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
        // The approval overlay takes its keys first, except from a search query being typed.
        let armed = self.approval_armed();
        let Some(thread) = &mut self.thread else {
            self.screen = Screen::Threads;
            return Vec::new();
        };
        if !reader::typing_search(thread) {
            match approval_key(thread, key, armed) {
                Modal::Decided(effects) => return effects,
                Modal::Blocked => {
                    // Until armed, a swallowed key starts the delay again: a decision
                    // counts only after a pause (not in the middle of typing, nor held).
                    if !armed && let Some((_, Some(since))) = &mut thread.asked {
                        *since = self.clock.now();
                    }
                    self.unchanged();
                    return Vec::new();
                }
                Modal::Passes => {}
            }
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
        if thread.composer.is_empty()
            && let Some(effects) = self.empty_composer_key(key)
        {
            return effects;
        }
        self.composer_key(key)
    }

    /// With nothing written, Tab picks blocks, `?` is the help and Home/End go to either end of
    /// the thread: not characters or moves in the message (`/` is typed: a message may start
    /// with a path or a slash command). `None`: the composer's key.
    #[allow(clippy::wildcard_enum_match_arm)] // a key not bound here is the composer's
    fn empty_composer_key(&mut self, key: KeyEvent) -> Option<Vec<Effect>> {
        if key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
        {
            return None;
        }
        let thread = self.thread.as_mut()?;
        match key.code {
            KeyCode::Tab => {
                thread.focus = Focus::Transcript;
                thread.selected = thread.foldable().last().copied();
            }
            KeyCode::Char('?') => self.overlay = Some(Overlay::Help),
            KeyCode::Home => thread.scroll(Scroll::Top),
            KeyCode::End => thread.scroll(Scroll::Bottom),
            _ => return None,
        }
        Some(Vec::new())
    }

    /// Ctrl-P: the thread's next approval policy (the server's default, then each of
    /// [`ApprovalPolicy::ALL`]), and a notice of when it applies.
    fn cycle_approval_policy(&mut self) {
        let Some(thread) = &mut self.thread else {
            return;
        };
        let next = match thread.approval_policy {
            None => 0,
            Some(policy) => ApprovalPolicy::ALL
                .iter()
                .position(|p| *p == policy)
                .map_or(0, |at| at + 1),
        };
        thread.approval_policy = ApprovalPolicy::ALL.get(next).copied();
        // The server applies the thread's policy to each turn, in a running sandbox too.
        self.notice = Some(match thread.approval_policy {
            None => "approvals: as the thread had them, else the server's default (Ctrl-P changes)"
                .to_owned(),
            Some(policy) => format!("approvals: {} from the next turn", policy.as_str()),
        });
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
            KeyCode::Char('n') if ctrl => return Some(self.pick_harness()),
            KeyCode::Char('p') if ctrl => self.cycle_approval_policy(),
            // Ctrl-F searches from the message too (where `/` is typed).
            KeyCode::Char('f') if ctrl => {
                if !reader::typing_search(thread) {
                    reader::start_search(thread);
                }
            }
            KeyCode::Char('o') if ctrl => {
                thread.expand_all = !thread.expand_all;
                thread.toggled.clear();
            }
            KeyCode::PageUp => thread.scroll(Scroll::PageUp),
            KeyCode::PageDown => thread.scroll(Scroll::PageDown),
            KeyCode::Up if shift => thread.scroll(Scroll::Up(1)),
            KeyCode::Down if shift => thread.scroll(Scroll::Down(1)),
            // A search takes its own Esc.
            KeyCode::Esc
                if thread.focus == Focus::Transcript && reader::mode(thread) != Mode::Search =>
            {
                thread.focus = Focus::Composer;
                thread.selected = None;
            }
            KeyCode::Esc
                if thread.focus == Focus::Composer && thread.transcript.running.is_some() =>
            {
                self.interrupting = true;
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
                    thread.sending.push_back(text.clone());
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

/// While an approval is asked: y, a, n or d pressed (not repeated by a held key) decide it
/// once it is `armed` (before, they do nothing); only scrolling, folding, searching, leaving
/// and interrupting pass.
fn approval_key(thread: &mut ThreadView, key: KeyEvent, armed: bool) -> Modal {
    let Some(asking) = thread.asking() else {
        return Modal::Passes;
    };
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let shift = key.modifiers.contains(KeyModifiers::SHIFT);
    let plain = !ctrl && !key.modifiers.contains(KeyModifiers::ALT);
    let decision = if let KeyCode::Char(letter) = key.code
        && plain
        && key.kind == KeyEventKind::Press
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
    if let Some(decision) = decision
        && armed
    {
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
        || (ctrl
            && matches!(
                key.code,
                KeyCode::Char('t') | KeyCode::Char('o') | KeyCode::Char('f')
            ));
    if passes {
        Modal::Passes
    } else {
        Modal::Blocked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::SandboxState;
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
        assert_eq!(
            effects,
            [
                Effect::LoadThreads,
                Effect::LoadHarnesses,
                Effect::Follow(key)
            ]
        );
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
        // Refused (the server was away): the text comes back to write again, and says why.
        app.handle(AppEvent::SteerRefused {
            key: script.events()[0].thread_key.clone(),
            text: "use British spelling".into(),
            error: Failure::Unreachable {
                url: "http://server".into(),
                reason: "the server is away".into(),
            },
        });
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(thread.composer.text(), "use British spelling");
        assert!(
            app.notice.as_deref().unwrap().starts_with("not sent:"),
            "{:?}",
            app.notice
        );
    }

    #[test]
    fn approval_keys_decide_the_oldest_and_typing_waits() {
        let mut script = Script::new();
        script.user("build");
        let first = script.approval("run `make`");
        let second = script.approval("run `make install`");
        let mut app = showing(&script);
        app.drawn();
        let thread_key = script.events()[0].thread_key.clone();
        // Letters other than the decisions do not reach the composer while asked.
        typed(&mut app, "x");
        assert!(app.thread.as_ref().unwrap().composer.is_empty());
        app.clock.advance(ARM_DELAY);
        assert_eq!(
            key(&mut app, KeyCode::Char('a'), KeyModifiers::NONE),
            [Effect::Decide {
                key: thread_key.clone(),
                approval_id: first,
                decision: Decision::ApproveForSession
            }]
        );
        // While that decision travels, the next one is asked, and a key pressed twice does
        // not decide it at once.
        assert_eq!(
            app.thread.as_ref().unwrap().asking().unwrap().approval_id,
            second
        );
        assert!(!decided(&key(
            &mut app,
            KeyCode::Char('a'),
            KeyModifiers::NONE
        )));
        app.clock.advance(ARM_DELAY);
        assert!(
            !app.approval_armed(),
            "armed only from the frame that shows it"
        );
        app.drawn();
        app.clock.advance(ARM_DELAY);
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
        assert_eq!(effects, [Effect::LoadHarnesses]);
        assert!(app.threads.loaded);
    }

    fn summary(key: &str, title: Option<&str>) -> ThreadSummary {
        ThreadSummary {
            thread_key: ThreadKey::parse(key).unwrap(),
            platform: "api".into(),
            harness: Harness::Echo,
            persona: None,
            status: centaur_protocol::api::ThreadStatus::Idle,
            title: title.map(str::to_owned),
            waiting_approvals: 0,
            slack: None,
            created_at: chrono::Utc::now(),
            last_activity_at: chrono::Utc::now(),
            last_event_id: 1,
        }
    }

    fn listing(threads: Vec<ThreadSummary>) -> App {
        let (mut app, _) = App::new("http://server".into(), &Start::default());
        app.handle(AppEvent::Threads(Ok(ThreadList {
            threads,
            next_before: None,
        })));
        app
    }

    #[test]
    fn the_thread_list_opens_the_chosen_thread() {
        let mut app = listing(vec![summary("api:alpha", None), summary("api:beta", None)]);
        typed(&mut app, "bet");
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(
            effects,
            [Effect::Follow(ThreadKey::parse("api:beta").unwrap())]
        );
        assert_eq!(app.screen, Screen::Thread);
    }

    /// The filter matches titles, goes when the list is left (the opened thread stays
    /// chosen), and Enter on no match says so.
    #[test]
    fn the_filter_matches_titles_and_goes_with_the_list() {
        let mut app = listing(vec![
            summary("api:alpha", Some("Fix the flaky login test")),
            summary("api:beta", Some("Write the release notes")),
        ]);
        typed(&mut app, "release");
        assert_eq!(app.threads.visible().len(), 1);
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(thread.key.as_ref(), "api:beta");
        assert_eq!(thread.title.as_deref(), Some("Write the release notes"));
        key(&mut app, KeyCode::Char('t'), KeyModifiers::CONTROL);
        assert_eq!(app.screen, Screen::Threads);
        assert_eq!(app.threads.filter, "");
        assert_eq!(
            app.threads.visible()[app.threads.selected]
                .thread_key
                .as_ref(),
            "api:beta"
        );

        typed(&mut app, "zzz");
        assert_eq!(key(&mut app, KeyCode::Enter, KeyModifiers::NONE), []);
        assert_eq!(app.notice.as_deref(), Some("no thread matches `zzz`"));
        assert_eq!(app.screen, Screen::Threads);

        // Ctrl-N leaves the list too.
        key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
        assert_eq!(app.threads.filter, "");
    }

    fn harness_list() -> HarnessList {
        HarnessList {
            harnesses: vec![
                HarnessInfo {
                    harness: Harness::Codex,
                    available: false,
                    unavailable_reason: Some("needs an OpenAI key (`centaur dev keys`)".into()),
                },
                HarnessInfo {
                    harness: Harness::Shell,
                    available: true,
                    unavailable_reason: None,
                },
                HarnessInfo {
                    harness: Harness::Echo,
                    available: true,
                    unavailable_reason: None,
                },
            ],
            default: Harness::Shell,
        }
    }

    fn picking(app: &App) -> Option<Harness> {
        match app.overlay {
            Some(Overlay::HarnessPicker { selected }) => Some(selected),
            Some(Overlay::Help) | None => None,
        }
    }

    /// Ctrl-N asks which harnesses can run and starts on the server's default; Enter on one
    /// that cannot run says why and opens nothing.
    #[test]
    fn the_picker_offers_what_can_run_and_says_why_not() {
        let mut app = listing(Vec::new());
        app.handle(AppEvent::Harnesses(Ok(harness_list())));
        assert_eq!(
            key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL),
            [Effect::LoadHarnesses]
        );
        assert_eq!(picking(&app), Some(Harness::Shell));
        key(&mut app, KeyCode::Up, KeyModifiers::NONE);
        assert_eq!(picking(&app), Some(Harness::Codex));
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert!(app.thread.is_none());
        assert_eq!(picking(&app), Some(Harness::Codex), "the picker stays");
        assert_eq!(
            app.notice.as_deref(),
            Some("codex: needs an OpenAI key (`centaur dev keys`)")
        );
        key(&mut app, KeyCode::Down, KeyModifiers::NONE);
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(app.overlay, None);
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(
            (thread.harness, &thread.link),
            (Some(Harness::Shell), &Link::New)
        );

        // `--harness` wins over the server's default.
        let (mut app, _) = App::new(
            "http://server".into(),
            &Start {
                harness: Some(Harness::Echo),
                ..Start::default()
            },
        );
        app.handle(AppEvent::Harnesses(Ok(harness_list())));
        key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
        assert_eq!(picking(&app), Some(Harness::Echo));
    }

    /// When the server cannot say which harnesses run, every one is offered and Enter opens
    /// a thread.
    #[test]
    fn the_picker_offers_every_harness_when_the_list_fails() {
        let mut app = listing(Vec::new());
        app.handle(AppEvent::Harnesses(Err(Failure::Unreachable {
            url: "http://server".into(),
            reason: "refused".into(),
        })));
        key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
        assert_eq!(app.offered_harnesses().len(), Harness::ALL.len());
        assert!(app.offered_harnesses().iter().all(|h| h.available));
        assert_eq!(picking(&app), Some(Harness::ALL[0]));
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert_eq!(app.thread.as_ref().unwrap().harness, Some(Harness::ALL[0]));
    }

    /// A turn the server refuses for its harness: the server's sentence, the thread still
    /// new, the message back in the composer; a harness picked then keeps the message.
    #[test]
    fn a_refused_harness_leaves_the_thread_new_for_another() {
        let (mut app, _) = App::new(
            "http://server".into(),
            &Start {
                harness: Some(Harness::Codex),
                new_thread: true,
                ..Start::default()
            },
        );
        typed(&mut app, "fix the tests");
        key(&mut app, KeyCode::Char('p'), KeyModifiers::CONTROL);
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let thread_key = app.thread.as_ref().unwrap().key.clone();
        let effects = app.handle(AppEvent::Executed {
            key: thread_key,
            result: Err(Failure::Api {
                code: centaur_client::api::Code::Known(ErrorCode::HarnessUnavailable),
                message: "codex needs an OpenAI key (`centaur dev keys`)".into(),
            }),
        });
        assert_eq!(effects, []);
        assert_eq!(
            app.notice.as_deref(),
            Some("codex needs an OpenAI key (`centaur dev keys`) · Ctrl-N picks another harness")
        );
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(thread.link, Link::New);
        assert_eq!(thread.composer.text(), "fix the tests");

        app.handle(AppEvent::Harnesses(Ok(harness_list())));
        key(&mut app, KeyCode::Char('n'), KeyModifiers::CONTROL);
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(
            effects,
            [Effect::Execute {
                key: thread.key.clone(),
                harness: Some(Harness::Shell),
                approval_policy: Some(ApprovalPolicy::Never),
                text: "fix the tests".into(),
            }]
        );
    }

    /// Ctrl-P cycles the thread's approval policy, which goes with every turn it starts; the
    /// notice says from when it applies.
    #[test]
    fn ctrl_p_cycles_the_approval_policy_sent_with_the_next_turn() {
        let mut script = Script::new();
        script.user("hi");
        script.completed("hello");
        let mut app = showing(&script);
        let policy = |app: &mut App| {
            key(app, KeyCode::Char('p'), KeyModifiers::CONTROL);
            app.thread.as_ref().unwrap().approval_policy
        };
        assert_eq!(policy(&mut app), Some(ApprovalPolicy::Never));
        // The thread's sandbox runs: the policy applies to it from the next turn all the same.
        assert!(matches!(
            app.thread.as_ref().unwrap().transcript.sandbox,
            SandboxState::Assigned { .. }
        ));
        assert_eq!(
            app.notice.as_deref(),
            Some("approvals: never from the next turn")
        );
        assert_eq!(policy(&mut app), Some(ApprovalPolicy::OnRequest));
        assert_eq!(policy(&mut app), Some(ApprovalPolicy::Always));
        typed(&mut app, "again");
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert!(
            matches!(
                &effects[..],
                [Effect::Execute {
                    approval_policy: Some(ApprovalPolicy::Always),
                    ..
                }]
            ),
            "{effects:?}"
        );
        assert_eq!(policy(&mut app), None);
        assert!(app.notice.as_deref().unwrap().contains("server's default"));

        // No sandbox yet: from the next turn.
        let (mut app, _) = App::new(
            "http://server".into(),
            &Start {
                new_thread: true,
                ..Start::default()
            },
        );
        assert_eq!(policy(&mut app), Some(ApprovalPolicy::Never));
        assert_eq!(
            app.notice.as_deref(),
            Some("approvals: never from the next turn")
        );
    }

    /// "interrupting…" goes when the turn ends, and Ctrl-C asks again before quitting.
    #[test]
    fn the_interrupting_notice_goes_when_the_turn_ends() {
        let mut script = Script::new();
        script.user("sleep 30");
        let mut app = showing(&script);
        key(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(
            app.notice.as_deref(),
            Some("interrupting… (Ctrl-C again quits)")
        );
        script.cancelled("interrupted");
        app.handle(AppEvent::Server(Box::new(
            script.events().last().unwrap().clone(),
        )));
        assert_eq!(app.notice, None);
        key(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert!(!app.should_quit);

        let mut script = Script::new();
        script.user("sleep 30");
        let mut app = showing(&script);
        key(&mut app, KeyCode::Esc, KeyModifiers::NONE);
        assert_eq!(app.notice.as_deref(), Some("interrupting…"));
        script.completed("done anyway");
        app.handle(AppEvent::Server(Box::new(
            script.events().last().unwrap().clone(),
        )));
        assert_eq!(app.notice, None);
    }

    /// With nothing written, Home and End go to either end of the thread; with a message, they
    /// edit it. `/` is typed: a message can start with a path or a slash command.
    #[test]
    fn home_end_and_slash_with_an_empty_composer() {
        let mut script = Script::new();
        script.user("hi");
        script.completed("hello");
        let mut app = showing(&script);
        app.take_scrolls();
        key(&mut app, KeyCode::Home, KeyModifiers::NONE);
        key(&mut app, KeyCode::End, KeyModifiers::NONE);
        assert_eq!(
            app.take_scrolls().unwrap().moves,
            [Scroll::Top, Scroll::Bottom]
        );
        typed(&mut app, "/usr/bin/env python3 x.py");
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(
            reader::mode(thread),
            Mode::Compose {
                output_as_markdown: false
            }
        );
        assert_eq!(thread.composer.text(), "/usr/bin/env python3 x.py");
        app.take_scrolls();
        key(&mut app, KeyCode::Home, KeyModifiers::NONE);
        assert_eq!(app.take_scrolls().unwrap().moves, []);
        assert_eq!(app.thread.as_ref().unwrap().composer.cursor(), (0, 0));
        let effects = key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        assert!(
            matches!(&effects[..], [Effect::Execute { text, .. }] if text == "/usr/bin/env python3 x.py"),
            "{effects:?}"
        );
    }

    /// Ctrl-F searches from the message (what is written stays); `/` searches from the
    /// transcript.
    #[test]
    fn ctrl_f_searches_from_anywhere_and_slash_from_the_transcript() {
        let mut script = Script::new();
        script.user("hi");
        script.completed("hello");
        let mut app = showing(&script);
        typed(&mut app, "draft");
        key(&mut app, KeyCode::Char('f'), KeyModifiers::CONTROL);
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(reader::mode(thread), Mode::Search);
        assert_eq!(thread.composer.text(), "draft");
        // Esc leaves the search, not the thread's turn.
        assert_eq!(key(&mut app, KeyCode::Esc, KeyModifiers::NONE), []);
        assert_eq!(
            reader::mode(app.thread.as_ref().unwrap()),
            Mode::Compose {
                output_as_markdown: false
            }
        );

        let mut app = showing(&script);
        key(&mut app, KeyCode::Tab, KeyModifiers::NONE);
        key(&mut app, KeyCode::Char('/'), KeyModifiers::NONE);
        assert_eq!(reader::mode(app.thread.as_ref().unwrap()), Mode::Search);
    }

    /// The app at a time of the test's choosing, showing a thread that has answered once.
    fn clocked() -> (Script, App) {
        let mut script = Script::new();
        script.user("build");
        script.completed("done");
        let mut app = showing(&script);
        app.clock.set(Instant::now());
        (script, app)
    }

    fn arrives(app: &mut App, script: &mut Script, summary: &str) -> Uuid {
        let id = script.approval(summary);
        app.handle(AppEvent::Server(Box::new(
            script.events().last().unwrap().clone(),
        )));
        id
    }

    fn decided(effects: &[Effect]) -> bool {
        effects.iter().any(|e| matches!(e, Effect::Decide { .. }))
    }

    /// An approval that arrives while a search query is typed leaves the keys to the query:
    /// typing "any" decides nothing. Once the query is confirmed, the overlay takes the keys,
    /// after its delay.
    #[test]
    fn typing_a_search_while_an_approval_arrives_decides_nothing() {
        let (mut script, mut app) = clocked();
        key(&mut app, KeyCode::Char('f'), KeyModifiers::CONTROL);
        typed(&mut app, "a");
        let id = arrives(&mut app, &mut script, "run `make`");
        app.clock.advance(ARM_DELAY * 2);
        for c in "ny".chars() {
            let effects = key(&mut app, KeyCode::Char(c), KeyModifiers::NONE);
            assert!(!decided(&effects), "{c}: {effects:?}");
        }
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(thread.reading.search.as_ref().unwrap().query, "any");
        assert_eq!(thread.asking().unwrap().approval_id, id);
        assert!(!app.approval_armed(), "not armed while the query is typed");

        // Confirmed: the overlay has the keys, and `n` at once still does nothing.
        key(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        app.drawn();
        assert!(!decided(&key(
            &mut app,
            KeyCode::Char('n'),
            KeyModifiers::NONE
        )));
        assert_eq!(
            app.wake_at(),
            Some(app.clock.now() + ARM_DELAY),
            "the loop wakes to show the keys armed"
        );
        app.clock.advance(ARM_DELAY);
        assert!(app.approval_armed());
        assert_eq!(app.wake_at(), None);
        assert_eq!(
            key(&mut app, KeyCode::Char('y'), KeyModifiers::NONE),
            [Effect::Decide {
                key: script.events()[0].thread_key.clone(),
                approval_id: id,
                decision: Decision::Approve
            }]
        );
    }

    /// A reading key pressed just as an approval appears (`n` for the next match, `y` to
    /// copy) decides nothing, and starts the delay again; after a pause, `y` approves.
    #[test]
    fn a_key_as_an_approval_appears_decides_nothing() {
        let (mut script, mut app) = clocked();
        key(&mut app, KeyCode::Tab, KeyModifiers::NONE);
        let id = arrives(&mut app, &mut script, "run `make`");
        app.drawn();
        app.clock.advance(ARM_DELAY / 2);
        for c in ['n', 'y', 'a', 'd'] {
            let effects = key(&mut app, KeyCode::Char(c), KeyModifiers::NONE);
            assert!(!decided(&effects), "{c}: {effects:?}");
        }
        assert_eq!(
            app.thread.as_ref().unwrap().asking().unwrap().approval_id,
            id
        );
        app.clock.advance(ARM_DELAY / 2);
        assert!(!decided(&key(
            &mut app,
            KeyCode::Char('y'),
            KeyModifiers::NONE
        )));
        app.clock.advance(ARM_DELAY);
        assert_eq!(
            key(&mut app, KeyCode::Char('y'), KeyModifiers::NONE),
            [Effect::Decide {
                key: script.events()[0].thread_key.clone(),
                approval_id: id,
                decision: Decision::Approve
            }]
        );
    }

    /// Someone typing a message as an approval appears: a key every 100 ms for 2 s decides
    /// nothing (each swallowed key starts the delay again); after a 400 ms pause, `y`
    /// approves.
    #[test]
    fn typing_through_an_approval_decides_nothing_until_a_pause() {
        let (mut script, mut app) = clocked();
        typed(&mut app, "please ");
        let id = arrives(&mut app, &mut script, "run `make`");
        app.drawn();
        for (at, c) in "yes and also deny nothing"
            .chars()
            .cycle()
            .take(20)
            .enumerate()
        {
            app.clock.advance(Duration::from_millis(100));
            let effects = key(&mut app, KeyCode::Char(c), KeyModifiers::NONE);
            assert!(!decided(&effects), "key {at} ({c:?}): {effects:?}");
            assert!(!app.approval_armed(), "armed mid-typing at key {at}");
        }
        assert_eq!(
            app.thread.as_ref().unwrap().asking().unwrap().approval_id,
            id
        );
        app.clock.advance(ARM_DELAY);
        assert_eq!(
            key(&mut app, KeyCode::Char('y'), KeyModifiers::NONE),
            [Effect::Decide {
                key: script.events()[0].thread_key.clone(),
                approval_id: id,
                decision: Decision::Approve
            }]
        );
    }

    /// A held `n` (the terminal's repeats) never denies: repeats are not presses, and each
    /// one swallowed starts the delay again.
    #[test]
    fn a_held_key_never_decides() {
        let (mut script, mut app) = clocked();
        arrives(&mut app, &mut script, "run `make`");
        app.drawn();
        app.clock.advance(ARM_DELAY);
        for _ in 0..20 {
            let effects = app.handle(AppEvent::Key(KeyEvent::new_with_kind(
                KeyCode::Char('n'),
                KeyModifiers::NONE,
                KeyEventKind::Repeat,
            )));
            assert!(!decided(&effects), "{effects:?}");
            app.clock.advance(ARM_DELAY);
        }
        assert!(app.thread.as_ref().unwrap().deciding.is_empty());
    }

    /// Ctrl-F searches while an approval waits (the query's keys are then the query's).
    #[test]
    fn ctrl_f_searches_while_an_approval_waits() {
        let (mut script, mut app) = clocked();
        arrives(&mut app, &mut script, "run `make`");
        app.drawn();
        key(&mut app, KeyCode::Char('f'), KeyModifiers::CONTROL);
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(reader::mode(thread), Mode::Search);
        typed(&mut app, "done");
        let thread = app.thread.as_ref().unwrap();
        assert_eq!(thread.reading.search.as_ref().unwrap().query, "done");
        assert!(thread.deciding.is_empty());
    }
}
