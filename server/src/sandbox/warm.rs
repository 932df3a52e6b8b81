//! The warm pool: ready sandboxes per harness, so a new thread's spawn only hands one its
//! thread instead of starting a sandbox. A warm sandbox is registered with the egress proxy
//! under an empty policy (it can reach nothing); claiming it pushes the thread's policy and
//! placeholders ([`crate::assignment`]), and a background task starts a replacement.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use centaur_protocol::Harness;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::app::AppState;
use crate::{assignment, egress};

pub struct WarmPool {
    size: usize,
    harnesses: Vec<Harness>,
    ready: Mutex<HashMap<Harness, VecDeque<Uuid>>>,
    /// Taken from the pool but not yet recorded for their thread.
    claiming: Mutex<HashSet<Uuid>>,
    wake: Notify,
}

impl WarmPool {
    pub fn new(size: usize, harnesses: Vec<Harness>) -> WarmPool {
        WarmPool {
            size,
            harnesses,
            ready: Mutex::new(HashMap::new()),
            claiming: Mutex::new(HashSet::new()),
            wake: Notify::new(),
        }
    }

    /// A ready sandbox for `harness`, if there is one.
    pub fn take(&self, harness: Harness) -> Option<Uuid> {
        let id = self
            .ready
            .lock()
            .expect("pool lock")
            .get_mut(&harness)?
            .pop_front();
        if let Some(id) = id {
            self.claiming.lock().expect("pool lock").insert(id);
            self.wake.notify_one();
        }
        id
    }

    /// The claim of `id` is over (recorded for its thread, or given up).
    pub fn claimed(&self, id: Uuid) {
        self.claiming.lock().expect("pool lock").remove(&id);
    }

    /// Every warm sandbox (the reaper leaves them alone).
    pub fn ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self
            .ready
            .lock()
            .expect("pool lock")
            .values()
            .flatten()
            .copied()
            .collect();
        ids.extend(self.claiming.lock().expect("pool lock").iter().copied());
        ids
    }

    /// How many are ready per harness.
    pub fn counts(&self) -> Vec<(Harness, usize)> {
        let ready = self.ready.lock().expect("pool lock");
        self.harnesses
            .iter()
            .map(|h| (*h, ready.get(h).map_or(0, VecDeque::len)))
            .collect()
    }

    fn missing(&self) -> Option<Harness> {
        let ready = self.ready.lock().expect("pool lock");
        self.harnesses
            .iter()
            .copied()
            .find(|h| ready.get(h).map_or(0, VecDeque::len) < self.size)
    }
}

/// Keeps the pool full until shutdown, and keeps its egress rows fresh.
pub fn spawn_filler(state: AppState) {
    let Some(pool) = state.warm.clone() else {
        return;
    };
    tokio::spawn(async move {
        let mut failing = false;
        let mut last_heartbeat = tokio::time::Instant::now();
        loop {
            if state.shutdown.is_cancelled() {
                return;
            }
            if last_heartbeat.elapsed() > Duration::from_secs(20) {
                egress::policy::heartbeat(&state, &pool.ids()).await;
                last_heartbeat = tokio::time::Instant::now();
            }
            let Some(harness) = pool.missing().filter(|_| state.readiness.is_migrated()) else {
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = pool.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            };
            match assignment::start_warm(&state, harness).await {
                Ok(id) => {
                    if failing {
                        tracing::info!("warm sandboxes start again");
                        failing = false;
                    }
                    pool.ready
                        .lock()
                        .expect("pool lock")
                        .entry(harness)
                        .or_default()
                        .push_back(id);
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, %harness, "cannot start a warm sandbox; retrying");
                        failing = true;
                    }
                    tokio::select! {
                        _ = state.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    }
                }
            }
        }
    });
}
