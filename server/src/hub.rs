//! Live delivery of events to the streams of this replica.
//!
//! The table is the truth; the hub only carries hints and, where it can, the events themselves:
//! - an append on this replica is broadcast to local subscribers straight after its commit;
//! - a background notifier coalesces those appends into `NOTIFY`s (one statement for many
//!   threads, off the append's transaction) so other replicas learn of them;
//! - on a notification for a thread with local subscribers, one catch-up task per thread reads
//!   the new events once and broadcasts them, however many subscribers there are;
//! - a periodic check against `threads.last_event_id` covers lost notifications (a replica that
//!   crashed between commit and notify, a dropped listener connection).
//!
//! Subscribers skip ids they have seen and read the table themselves when they see a gap, so a
//! late, doubled or lost hint never loses or doubles an event.
//!
//! Each subscriber has its own inbox, bounded in bytes: a subscriber that does not keep up (its
//! client reads slowly, or not at all) is dropped from the live path once its inbox is full,
//! and reads the table from where it was when it next asks for events. A slow reader therefore
//! holds at most [`INBOX_BYTES`] of live events, however much the thread produces.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::crypto::random_hex;
use crate::events::{StoredEvent, read_page};
use crate::sse::StreamSlots;

const CHANNEL: &str = "centaur_events";
/// Bytes of live events (their frames) that may wait for one subscriber. Past it the subscriber
/// is dropped from the live path and re-reads from the table.
pub const INBOX_BYTES: usize = 1024 * 1024;
const CATCH_UP_PAGE: i64 = 2000;
/// At most this many bytes of events per catch-up read (one event alone may be larger).
const CATCH_UP_BYTES: usize = 256 * 1024;
const REFRESH_EVERY: Duration = Duration::from_secs(2);

pub type EventBatchRef = Arc<[StoredEvent]>;

#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    replica: String,
    feeds: Mutex<HashMap<i64, Arc<Feed>>>,
    notify_tx: mpsc::Sender<(i64, i64)>,
    shutdown: CancellationToken,
    streams: Arc<StreamSlots>,
}

/// The live events of one thread on this replica.
struct Feed {
    /// The inboxes of this thread's subscribers; a dropped subscription leaves a dead entry,
    /// pruned on the next delivery.
    inboxes: Mutex<Vec<Weak<Inbox>>>,
    /// Highest event id delivered so far.
    last: AtomicI64,
    wake: Notify,
    stop: CancellationToken,
}

impl Feed {
    /// Hands a batch to every live subscriber.
    fn deliver(&self, events: Vec<StoredEvent>) {
        let bytes = events.iter().map(|e| e.frame.len()).sum();
        let batch: EventBatchRef = events.into();
        self.inboxes
            .lock()
            .expect("hub lock")
            .retain(|inbox| match inbox.upgrade() {
                Some(inbox) => {
                    inbox.push(&batch, bytes);
                    true
                }
                None => false,
            });
    }

    /// Whether anyone still subscribes (and forgets those who left).
    fn has_subscribers(&self) -> bool {
        let mut inboxes = self.inboxes.lock().expect("hub lock");
        inboxes.retain(|inbox| inbox.strong_count() > 0);
        !inboxes.is_empty()
    }
}

/// Live batches waiting for one subscriber, at most [`INBOX_BYTES`] of them.
#[derive(Default)]
struct Inbox {
    state: Mutex<InboxState>,
    ready: Notify,
}

#[derive(Default)]
struct InboxState {
    /// Each batch with its size in bytes.
    batches: VecDeque<(EventBatchRef, usize)>,
    bytes: usize,
    /// Batches were dropped since the subscriber last looked: it must read the table.
    lagged: bool,
}

impl Inbox {
    /// Queues a batch, or, if that would pass the byte limit, empties the inbox and marks the
    /// subscriber as lagged (nothing more is queued until it has noticed).
    fn push(&self, batch: &EventBatchRef, bytes: usize) {
        {
            let mut state = self.state.lock().expect("inbox lock");
            if state.lagged {
                return;
            }
            if state.bytes + bytes > INBOX_BYTES {
                state.batches.clear();
                state.bytes = 0;
                state.lagged = true;
            } else {
                state.batches.push_back((batch.clone(), bytes));
                state.bytes += bytes;
            }
        }
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Live> {
        let mut state = self.state.lock().expect("inbox lock");
        if state.lagged {
            state.lagged = false;
            return Some(Live::Lagged);
        }
        let (batch, bytes) = state.batches.pop_front()?;
        state.bytes -= bytes;
        Some(Live::Batch(batch))
    }
}

/// What a subscription receives.
pub enum Live {
    /// Events, in order; they may repeat ids the subscriber has seen, or skip some.
    Batch(EventBatchRef),
    /// The subscriber fell too far behind and events were dropped: read the table.
    Lagged,
}

/// A live subscription to one thread's events.
pub struct Subscription {
    pub rx: LiveReceiver,
}

/// The receiving end of a subscription's inbox.
pub struct LiveReceiver {
    inbox: Arc<Inbox>,
}

impl LiveReceiver {
    /// The next batch, or word that some were dropped. Cancel-safe.
    pub async fn recv(&mut self) -> Live {
        loop {
            if let Some(live) = self.inbox.take() {
                return live;
            }
            self.inbox.ready.notified().await;
        }
    }
}

impl Hub {
    /// Starts the hub's background work (notifier, listener, refresher) until `shutdown`.
    pub fn start(pool: PgPool, shutdown: CancellationToken) -> Hub {
        let (notify_tx, notify_rx) = mpsc::channel(4096);
        let hub = Hub {
            inner: Arc::new(Inner {
                pool,
                replica: random_hex(8),
                feeds: Mutex::new(HashMap::new()),
                notify_tx,
                shutdown,
                streams: Arc::new(StreamSlots::default()),
            }),
        };
        tokio::spawn(hub.clone().run_notifier(notify_rx));
        tokio::spawn(hub.clone().run_listener());
        tokio::spawn(hub.clone().run_refresher());
        hub
    }

    /// Subscribes to a thread. `known_last` is the thread's newest event id as the caller read
    /// it before subscribing: a new feed catches up from there, so nothing committed since is
    /// missed. Subscribe before reading history, so nothing falls in between.
    pub fn subscribe(&self, thread_id: i64, known_last: i64) -> Subscription {
        let mut feeds = self.inner.feeds.lock().expect("hub lock");
        let feed = feeds
            .entry(thread_id)
            .or_insert_with(|| self.new_feed(thread_id, known_last));
        let inbox = Arc::new(Inbox::default());
        feed.inboxes
            .lock()
            .expect("hub lock")
            .push(Arc::downgrade(&inbox));
        Subscription {
            rx: LiveReceiver { inbox },
        }
    }

    /// The count of open event streams on this replica, against which new ones are admitted.
    pub fn stream_slots(&self) -> &Arc<StreamSlots> {
        &self.inner.streams
    }

    /// Hands freshly committed events to local subscribers and tells the other replicas.
    pub fn publish(&self, thread_id: i64, events: Vec<StoredEvent>) {
        let Some(last) = events.last().map(|e| e.event_id) else {
            return;
        };
        let feed = self.feed(thread_id);
        if let Some(feed) = feed {
            feed.last.fetch_max(last, Ordering::AcqRel);
            feed.deliver(events);
        }
        // Full queue: the other replicas' periodic refresh picks the events up.
        let _ = self.inner.notify_tx.try_send((thread_id, last));
    }

    fn feed(&self, thread_id: i64) -> Option<Arc<Feed>> {
        self.inner
            .feeds
            .lock()
            .expect("hub lock")
            .get(&thread_id)
            .cloned()
    }

    fn new_feed(&self, thread_id: i64, known_last: i64) -> Arc<Feed> {
        let feed = Arc::new(Feed {
            inboxes: Mutex::new(Vec::new()),
            last: AtomicI64::new(known_last),
            wake: Notify::new(),
            stop: self.inner.shutdown.child_token(),
        });
        tokio::spawn(self.clone().run_catch_up(thread_id, feed.clone()));
        feed
    }

    /// One task per subscribed thread: reads what other replicas appended, once for all
    /// local subscribers.
    async fn run_catch_up(self, thread_id: i64, feed: Arc<Feed>) {
        loop {
            tokio::select! {
                _ = feed.stop.cancelled() => return,
                _ = feed.wake.notified() => {}
            }
            loop {
                let after = feed.last.load(Ordering::Acquire);
                let page = read_page(
                    &self.inner.pool,
                    thread_id,
                    after,
                    CATCH_UP_PAGE,
                    CATCH_UP_BYTES,
                )
                .await;
                match page {
                    Ok(page) => {
                        let Some(last) = page.events.last().map(|e| e.event_id) else {
                            break;
                        };
                        feed.last.fetch_max(last, Ordering::AcqRel);
                        feed.deliver(page.events);
                        if !page.more {
                            break;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, thread_id, "hub catch-up failed; will retry");
                        break;
                    }
                }
            }
        }
    }

    /// Sends coalesced `NOTIFY`s for local appends, outside the appends' transactions.
    async fn run_notifier(self, mut rx: mpsc::Receiver<(i64, i64)>) {
        let mut pending: HashMap<i64, i64> = HashMap::new();
        loop {
            let first = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                next = rx.recv() => match next { Some(n) => n, None => return },
            };
            pending.insert(first.0, first.1);
            while let Ok((thread, last)) = rx.try_recv() {
                let entry = pending.entry(thread).or_insert(last);
                *entry = (*entry).max(last);
            }
            let payloads: Vec<String> = pending
                .drain()
                .map(|(thread, last)| format!("{}:{thread}:{last}", self.inner.replica))
                .collect();
            if let Err(error) = sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS p")
                .bind(CHANNEL)
                .bind(&payloads)
                .execute(&self.inner.pool)
                .await
            {
                tracing::debug!(%error, "could not notify other replicas; their refresh will catch up");
            }
        }
    }

    /// Listens for other replicas' appends; reconnects with backoff.
    async fn run_listener(self) {
        let mut delay = Duration::from_millis(100);
        loop {
            match self.listen_once().await {
                Ok(()) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "event listener lost its connection");
                }
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    async fn listen_once(&self) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.inner.pool).await?;
        listener.ignore_pool_close_event(true);
        listener.listen(CHANNEL).await?;
        // Anything appended while we were not listening.
        self.wake_all();
        loop {
            let next = tokio::select! {
                _ = self.inner.shutdown.cancelled() => return Ok(()),
                next = listener.try_recv() => next?,
            };
            match next {
                Some(notification) => self.on_notification(notification.payload()),
                // The connection dropped and was re-established: we may have missed some.
                None => self.wake_all(),
            }
        }
    }

    fn on_notification(&self, payload: &str) {
        let mut parts = payload.splitn(3, ':');
        let (Some(replica), Some(thread), Some(last)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if replica == self.inner.replica {
            return;
        }
        let (Ok(thread_id), Ok(last)) = (thread.parse::<i64>(), last.parse::<i64>()) else {
            return;
        };
        if let Some(feed) = self.feed(thread_id)
            && feed.last.load(Ordering::Acquire) < last
        {
            feed.wake.notify_one();
        }
    }

    fn wake_all(&self) {
        for feed in self.inner.feeds.lock().expect("hub lock").values() {
            feed.wake.notify_one();
        }
    }

    /// Drops feeds nobody listens to and wakes feeds that fell behind the table.
    async fn run_refresher(self) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let watched: Vec<(i64, Arc<Feed>)> = {
                let mut feeds = self.inner.feeds.lock().expect("hub lock");
                feeds.retain(|_, feed| {
                    let keep = feed.has_subscribers();
                    if !keep {
                        feed.stop.cancel();
                    }
                    keep
                });
                feeds.iter().map(|(id, f)| (*id, f.clone())).collect()
            };
            if watched.is_empty() {
                continue;
            }
            let ids: Vec<i64> = watched.iter().map(|(id, _)| *id).collect();
            let Ok(rows) = sqlx::query_as::<_, (i64, i64)>(
                "SELECT id, last_event_id FROM threads WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&self.inner.pool)
            .await
            else {
                continue;
            };
            let latest: HashMap<i64, i64> = rows.into_iter().collect();
            for (id, feed) in watched {
                if latest
                    .get(&id)
                    .is_some_and(|&l| l > feed.last.load(Ordering::Acquire))
                {
                    feed.wake.notify_one();
                }
            }
        }
    }
}
