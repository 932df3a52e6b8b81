//! Delivery: each Slack thread's events, from the cursor `slack_threads.delivered_event_id`,
//! rendered into Slack by one replica at a time (a lease): the working status, progress streamed
//! (`chat.startStream`/`appendStream`/`stopStream`, or `chat.postMessage` + `chat.update` where
//! streaming is unavailable), approval messages, the final answer (exactly once across restarts),
//! a check mark or a cross.

use crate::app::AppState;

/// This replica's scheduler: takes Slack threads with undelivered events, until shutdown.
pub fn spawn_scheduler(state: AppState) {
    let _ = state;
}
