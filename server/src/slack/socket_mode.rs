//! Socket Mode: the server dials Slack (`apps.connections.open` with the app token), keeps
//! `CENTAUR_SLACK_SOCKET_CONNECTIONS` WebSockets open, stores each envelope in the inbox and
//! then acknowledges it, and on `disconnect` opens the replacement before the old one closes.
//!
//! An envelope that could not be stored is not acknowledged: Slack sends it again (on this or
//! another connection). A connection that fails is dialled again with a growing pause; one that
//! goes quiet (no frame, not even a pong, for [`SILENCE`]) is dropped and dialled again.
//! `link_disabled` (Socket Mode switched off for the app) stops the bridge's connections.

use std::sync::Arc;
use std::time::Duration;

use centaur_protocol::slack::events::{
    DisconnectReason, Envelope, Event, EventsRequest, Interaction, SocketAck, SocketFrame,
};
use centaur_protocol::slack::web::ConnectionsOpen;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Slack;
use super::inbox::{self, Incoming};
use super::web::WebError;
use crate::app::AppState;

/// Our own pings, so a dead connection is noticed.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A connection with no frame for this long is dropped and dialled again.
const SILENCE: Duration = Duration::from_secs(60);
/// After `disconnect`, how long the old connection is still read (Slack closes it, ~10 s).
const DISCONNECT_GRACE: Duration = Duration::from_secs(30);
/// Pauses between failed dials: 1 s doubling up to this.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
pub enum SocketModeError {
    #[error("apps.connections.open failed: {0}")]
    Open(#[from] WebError),
    #[error("cannot connect to Slack's Socket Mode URL: {0}")]
    Connect(#[source] tokio_tungstenite::tungstenite::Error),
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// Slack asked for a new connection; the replacement is dialled already.
    Replaced,
    /// Socket Mode is off for the app: stop.
    LinkDisabled,
    /// Closed, failed or went quiet: dial again.
    Lost,
    Shutdown,
}

/// Keeps the connections open until shutdown.
pub fn spawn(state: AppState) {
    let Some(slack) = state.slack.clone() else {
        return;
    };
    for slot in 0..slack.settings.socket_connections {
        spawn_slot(state.clone(), slack.clone(), slot);
    }
}

fn spawn_slot(state: AppState, slack: Arc<Slack>, slot: u32) {
    tokio::spawn(keep_open(state, slack, slot));
}

/// One connection slot: dial, serve, dial again, until replaced, disabled or shut down.
async fn keep_open(state: AppState, slack: Arc<Slack>, slot: u32) {
    let mut failures: u32 = 0;
    loop {
        if state.shutdown.is_cancelled() {
            return;
        }
        match dial(&slack).await {
            Ok(socket) => {
                failures = 0;
                match serve(&state, &slack, socket, slot).await {
                    Ended::Replaced | Ended::LinkDisabled | Ended::Shutdown => return,
                    Ended::Lost => {
                        tracing::info!(slot, "Socket Mode connection lost; dialling again");
                    }
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                tracing::warn!(slot, %error, failures, "cannot open a Socket Mode connection; will retry");
            }
        }
        let pause = backoff(failures);
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::from_millis(100);
    }
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(5)).min(MAX_BACKOFF)
}

async fn dial(slack: &Slack) -> Result<Socket, SocketModeError> {
    let opened = slack.web.call(&ConnectionsOpen {}).await?;
    let (socket, _) = tokio_tungstenite::connect_async(opened.url.as_str())
        .await
        .map_err(SocketModeError::Connect)?;
    Ok(socket)
}

/// Reads one connection's frames until it ends.
async fn serve(state: &AppState, slack: &Arc<Slack>, mut socket: Socket, slot: u32) -> Ended {
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.reset();
    let mut quiet_since = tokio::time::Instant::now();
    // Set once Slack said `disconnect`: read on until it closes, or this passes.
    let mut replaced_at: Option<tokio::time::Instant> = None;
    loop {
        let deadline = match replaced_at {
            Some(at) => at + DISCONNECT_GRACE,
            None => quiet_since + SILENCE,
        };
        let frame = tokio::select! {
            frame = socket.next() => frame,
            _ = ping.tick() => {
                if let Err(error) = socket.send(Message::Ping(Default::default())).await {
                    tracing::debug!(slot, %error, "Socket Mode ping failed");
                    return lost_or_replaced(replaced_at);
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {
                if replaced_at.is_none() {
                    tracing::warn!(slot, "Socket Mode connection silent for a minute; dropping it");
                }
                let _ = socket.close(None).await;
                return lost_or_replaced(replaced_at);
            }
            _ = state.shutdown.cancelled() => {
                let _ = socket.close(None).await;
                return Ended::Shutdown;
            }
        };
        quiet_since = tokio::time::Instant::now();
        let text = match frame {
            None => return lost_or_replaced(replaced_at),
            Some(Err(error)) => {
                tracing::debug!(slot, %error, "Socket Mode connection failed");
                return lost_or_replaced(replaced_at);
            }
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) => return lost_or_replaced(replaced_at),
            // Pings are answered by the WebSocket layer; pongs only show it is alive.
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_),
            )) => {
                continue;
            }
        };
        let frame: SocketFrame = match serde_json::from_str(text.as_str()) {
            Ok(frame) => frame,
            Err(error) => {
                // Acknowledged all the same when it has an envelope: unacknowledged, Slack
                // would send it again and again, and it would not read any better.
                let envelope_id = envelope_id_of(text.as_str());
                tracing::warn!(slot, %error, envelope_id = envelope_id.as_deref().unwrap_or_default(), "a Socket Mode frame the bridge does not read; acknowledged");
                if let Some(envelope_id) = envelope_id
                    && !ack(&mut socket, &envelope_id, slot).await
                {
                    return lost_or_replaced(replaced_at);
                }
                continue;
            }
        };
        match frame {
            SocketFrame::Hello {
                num_connections, ..
            } => {
                tracing::info!(slot, num_connections, "Socket Mode connected");
            }
            SocketFrame::Disconnect {
                reason: DisconnectReason::LinkDisabled,
                ..
            } => {
                tracing::error!(
                    "Slack disabled this app's Socket Mode (link_disabled): turn Socket Mode on in the Slack app's settings (Socket Mode page), or set CENTAUR_SLACK_MODE=webhook; then restart the server"
                );
                let _ = socket.close(None).await;
                return Ended::LinkDisabled;
            }
            SocketFrame::Disconnect { reason, .. } => {
                if replaced_at.is_none() {
                    tracing::info!(
                        slot,
                        ?reason,
                        "Slack will close a Socket Mode connection; opening its replacement"
                    );
                    spawn_slot(state.clone(), slack.clone(), slot);
                    replaced_at = Some(tokio::time::Instant::now());
                }
            }
            SocketFrame::EventsApi(envelope) => {
                let incoming = match &envelope.payload {
                    EventsRequest::EventCallback(callback) => match callback.event {
                        Event::AppMention(_) | Event::Message(_) => {
                            Some(Incoming::Event(callback.clone()))
                        }
                        Event::Other => None,
                    },
                    EventsRequest::AppRateLimited { team_id, .. } => {
                        tracing::warn!(
                            team_id = team_id.as_deref().unwrap_or_default(),
                            "Slack is holding back this workspace's events (over 30,000 an hour)"
                        );
                        None
                    }
                    EventsRequest::UrlVerification { .. } => None,
                };
                if !store_then_ack(state, &mut socket, &envelope, incoming, slot).await {
                    return lost_or_replaced(replaced_at);
                }
            }
            SocketFrame::Interactive(envelope) => {
                let incoming = match &envelope.payload {
                    Interaction::BlockActions(actions) => {
                        Some(Incoming::Interaction(actions.clone()))
                    }
                    Interaction::Other => None,
                };
                if !store_then_ack(state, &mut socket, &envelope, incoming, slot).await {
                    return lost_or_replaced(replaced_at);
                }
            }
            SocketFrame::SlashCommands(envelope) => {
                // The app has no slash commands; acknowledged so Slack does not resend it.
                if !ack(&mut socket, &envelope.envelope_id, slot).await {
                    return lost_or_replaced(replaced_at);
                }
            }
        }
    }
}

/// The `envelope_id` of a frame that does not otherwise parse.
fn envelope_id_of(text: &str) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_str(text).ok()?;
    frame
        .get("envelope_id")?
        .as_str()
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

fn lost_or_replaced(replaced_at: Option<tokio::time::Instant>) -> Ended {
    match replaced_at {
        Some(_) => Ended::Replaced,
        None => Ended::Lost,
    }
}

/// Stores what the envelope carries (if the bridge acts on it), then acknowledges it; what
/// could not be stored is left unacknowledged for Slack to send again. `false` when the
/// connection failed.
async fn store_then_ack<T>(
    state: &AppState,
    socket: &mut Socket,
    envelope: &Envelope<T>,
    incoming: Option<Incoming>,
    slot: u32,
) -> bool {
    if let Some(incoming) = incoming
        && let Err(error) = inbox::store(state, &incoming).await
    {
        tracing::warn!(slot, envelope_id = %envelope.envelope_id, %error, "cannot store a Socket Mode envelope; leaving it for Slack to send again");
        return true;
    }
    ack(socket, &envelope.envelope_id, slot).await
}

async fn ack(socket: &mut Socket, envelope_id: &str, slot: u32) -> bool {
    let ack = SocketAck {
        envelope_id: envelope_id.to_owned(),
        payload: None,
    };
    let text = match serde_json::to_string(&ack) {
        Ok(text) => text,
        Err(error) => {
            tracing::warn!(%error, "cannot encode a Socket Mode acknowledgement");
            return true;
        }
    };
    match socket.send(Message::text(text)).await {
        Ok(()) => true,
        Err(error) => {
            tracing::debug!(slot, %error, "cannot acknowledge a Socket Mode envelope");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_that_does_not_parse_still_has_its_envelope_read() {
        let frame = r#"{"type":"events_api","envelope_id":"e-1","payload":{"type":"event_callback","event":42},"accepts_response_payload":false}"#;
        assert!(serde_json::from_str::<SocketFrame>(frame).is_err());
        assert_eq!(envelope_id_of(frame).as_deref(), Some("e-1"));
        assert_eq!(envelope_id_of("{\"type\":\"hello\"}"), None);
        assert_eq!(envelope_id_of("not json"), None);
    }

    #[test]
    fn dialling_again_backs_off_to_thirty_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(50), MAX_BACKOFF);
    }
}
