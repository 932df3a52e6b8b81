//! Who the bot is (`auth.test`: its user id, bot id and workspace), and the names of people and
//! channels, each looked up once and cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use centaur_protocol::slack::SlackUser;
use centaur_protocol::slack::web::{AuthTest, ConnectionsOpen, ConversationsInfo, UsersInfo};
use tokio::sync::watch;

use super::Slack;
use super::settings::SlackMode;
use super::web::WebError;
use crate::app::AppState;

/// How often `auth.test` is tried again while Slack is out of reach.
const RETRY_EVERY: Duration = Duration::from_secs(5);
/// Names are looked up again after this long (people rename themselves).
const NAMES_LAST: Duration = Duration::from_secs(3600);
/// Names kept at most, of users and of channels each: past it, those looked up longest ago
/// are forgotten (they are looked up again when next needed).
const NAMES_KEPT: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotIdentity {
    /// `T…`
    pub team_id: String,
    /// `U…`: mentions of the bot are `<@U…>`.
    pub user_id: String,
    /// `B…`: the bot's own messages carry it.
    pub bot_id: Option<String>,
    /// `https://acme.slack.com/`
    pub url: Option<String>,
}

impl BotIdentity {
    /// Whether a message was written by this bot.
    pub fn wrote(&self, user: Option<&str>, bot_id: Option<&str>) -> bool {
        user == Some(self.user_id.as_str())
            || (bot_id.is_some() && bot_id == self.bot_id.as_deref())
    }
}

/// A token Slack refused, or a start that cannot go on; each message names its fix.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "SLACK_BOT_TOKEN was refused by Slack ({0}): copy the Bot User OAuth Token (xoxb-…) from your Slack app's OAuth & Permissions page (after installing the app to the workspace); `centaur dev slack` stores it"
    )]
    BotToken(String),
    #[error(
        "SLACK_APP_TOKEN was refused by Slack ({0}): create an app-level token with the connections:write scope (Basic Information → App-Level Tokens, xapp-…) and turn Socket Mode on; `centaur dev slack` stores it"
    )]
    AppToken(String),
}

/// Filled once; waiters wake when it is.
#[derive(Debug)]
pub struct IdentityCell(watch::Sender<Option<BotIdentity>>);

impl Default for IdentityCell {
    fn default() -> Self {
        IdentityCell(watch::channel(None).0)
    }
}

impl IdentityCell {
    pub fn get(&self) -> Option<BotIdentity> {
        self.0.borrow().clone()
    }

    pub fn set(&self, identity: BotIdentity) {
        self.0.send_replace(Some(identity));
    }

    pub async fn wait(&self) -> BotIdentity {
        let mut receiver = self.0.subscribe();
        loop {
            if let Some(identity) = receiver.borrow_and_update().clone() {
                return identity;
            }
            if receiver.changed().await.is_err() {
                // The sender lives as long as `self`: unreachable while borrowed.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// `auth.test` (and in Socket Mode `apps.connections.open`, whose URL is thrown away): a
/// refused token is an error; Slack out of reach is logged and left to the background.
pub async fn check_tokens(slack: &Slack) -> Result<(), IdentityError> {
    match slack.web.call(&AuthTest {}).await {
        Ok(answer) => slack.identity.set(BotIdentity {
            team_id: answer.team_id,
            user_id: answer.user_id,
            bot_id: answer.bot_id,
            url: answer.url,
        }),
        Err(error) if error.is_auth() || matches!(error, WebError::Api { .. }) => {
            return Err(IdentityError::BotToken(
                error.code().unwrap_or_default().to_owned(),
            ));
        }
        Err(error) => {
            tracing::warn!(%error, "cannot reach Slack to check SLACK_BOT_TOKEN; will keep trying");
        }
    }
    if slack.settings.mode == SlackMode::Socket {
        match slack.web.call(&ConnectionsOpen {}).await {
            Ok(_) => {}
            Err(error) if matches!(error, WebError::Api { .. } | WebError::NoAppToken { .. }) => {
                return Err(IdentityError::AppToken(
                    error.code().unwrap_or("not set").to_owned(),
                ));
            }
            Err(error) => {
                tracing::warn!(%error, "cannot reach Slack to check SLACK_APP_TOKEN; will keep trying");
            }
        }
    }
    Ok(())
}

/// Asks `auth.test` until it answers, if the start could not.
pub fn spawn_until_known(state: AppState, slack: std::sync::Arc<Slack>) {
    if slack.identity.get().is_some() {
        return;
    }
    tokio::spawn(async move {
        loop {
            match slack.web.call(&AuthTest {}).await {
                Ok(answer) => {
                    slack.identity.set(BotIdentity {
                        team_id: answer.team_id,
                        user_id: answer.user_id,
                        bot_id: answer.bot_id,
                        url: answer.url,
                    });
                    tracing::info!("Slack answered auth.test; the bridge is on");
                    return;
                }
                Err(error) => tracing::warn!(%error, "Slack's auth.test failed; will retry"),
            }
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
        }
    });
}

/// People's and channels' names, looked up on first use and kept for an hour. A lookup that
/// fails gives no name (the id stands in) and is not cached.
#[derive(Default)]
pub struct Names {
    users: Mutex<HashMap<String, (Option<String>, tokio::time::Instant)>>,
    channels: Mutex<HashMap<String, (Option<String>, tokio::time::Instant)>>,
}

impl Names {
    /// The user with their display name, when Slack gives one.
    pub async fn user(&self, slack: &Slack, id: &str) -> SlackUser {
        if let Some(name) = cached(&self.users, id) {
            return SlackUser {
                id: id.to_owned(),
                name,
            };
        }
        let looked_up = slack
            .web
            .call(&UsersInfo {
                user: id.to_owned(),
            })
            .await;
        let name = match looked_up {
            Ok(answer) => {
                let name = answer.user.display_name().map(str::to_owned);
                remember(&self.users, id, name.clone());
                name
            }
            Err(error) => {
                tracing::debug!(%error, user = id, "users.info failed; showing the id");
                None
            }
        };
        SlackUser {
            id: id.to_owned(),
            name,
        }
    }

    /// The channel's name (`general`), or `None` for a direct message or when Slack says nothing.
    pub async fn channel(&self, slack: &Slack, id: &str) -> Option<String> {
        if let Some(name) = cached(&self.channels, id) {
            return name;
        }
        match slack
            .web
            .call(&ConversationsInfo {
                channel: id.to_owned(),
            })
            .await
        {
            Ok(answer) => {
                let name = (!answer.channel.is_im)
                    .then_some(answer.channel.name)
                    .flatten();
                remember(&self.channels, id, name.clone());
                name
            }
            Err(error) => {
                tracing::debug!(%error, channel = id, "conversations.info failed; showing the id");
                None
            }
        }
    }
}

type NameMap = Mutex<HashMap<String, (Option<String>, tokio::time::Instant)>>;

fn cached(map: &NameMap, id: &str) -> Option<Option<String>> {
    cached_at(map, id, tokio::time::Instant::now())
}

fn cached_at(map: &NameMap, id: &str, now: tokio::time::Instant) -> Option<Option<String>> {
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(id)
        .filter(|(_, at)| now.duration_since(*at) < NAMES_LAST)
        .map(|(name, _)| name.clone())
}

/// Keeps `name` for `id`. A full map first forgets what expired, then what was looked up
/// longest ago, so it never holds more than [`NAMES_KEPT`] names.
fn remember(map: &NameMap, id: &str, name: Option<String>) {
    remember_at(map, id, name, tokio::time::Instant::now());
}

fn remember_at(map: &NameMap, id: &str, name: Option<String>, now: tokio::time::Instant) {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() >= NAMES_KEPT && !map.contains_key(id) {
        map.retain(|_, (_, at)| now.duration_since(*at) < NAMES_LAST);
        while map.len() >= NAMES_KEPT {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
    }
    map.insert(id.to_owned(), (name, now));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    /// The names kept are bounded: expired ones go first, then the oldest.
    #[test]
    fn names_kept_are_bounded_expired_first_then_oldest() {
        let start = tokio::time::Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        let map = NameMap::default();
        remember_at(&map, "U-old", Some("Old".into()), start);
        let later = NAMES_LAST.as_millis() as u64;
        for n in 1..NAMES_KEPT {
            remember_at(&map, &format!("U{n}"), None, at(later + n as u64));
        }
        let now = at(later + 10_000);
        assert_eq!(cached_at(&map, "U-old", now), None, "expired");
        // Full: the expired name makes room.
        remember_at(&map, "U-new", Some("New".into()), now);
        assert_eq!(map.lock().unwrap().len(), NAMES_KEPT);
        assert!(!map.lock().unwrap().contains_key("U-old"));
        // Full of fresh names: the oldest goes.
        remember_at(&map, "U-newer", None, now);
        assert_eq!(map.lock().unwrap().len(), NAMES_KEPT);
        assert!(!map.lock().unwrap().contains_key("U1"));
        assert!(map.lock().unwrap().contains_key("U2"));
        assert_eq!(cached_at(&map, "U-new", now), Some(Some("New".into())));
        // Remembering a name kept already evicts nothing.
        remember_at(&map, "U2", Some("Two".into()), now);
        assert_eq!(map.lock().unwrap().len(), NAMES_KEPT);
        assert!(map.lock().unwrap().contains_key("U3"));
    }
}
