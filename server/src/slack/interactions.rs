//! Button clicks from Slack: an approval decided (by an allowed approver), Stop.
//!
//! The buttons are the bridge's own ([`CentaurAction`]), each carrying the thread (and the
//! approval) in its value. A click from someone not allowed, on an approval already decided, or
//! on a thread that is gone is logged and changes nothing; the approval message itself is
//! updated by delivery from the `approval.resolved` event, whichever side decided.

use centaur_protocol::slack::SlackUser;
use centaur_protocol::slack::blocks::{ActionValue, CentaurAction};
use centaur_protocol::slack::events::{Action, BlockActions};
use centaur_protocol::{Author, ErrorCode};

use super::Slack;
use super::conversation::{self, Allowed, ConversationError, Refusal};
use crate::app::AppState;
use crate::approvals;
use crate::error::ApiError;
use crate::threads;

/// Whether `user` (of `team`, in `channel`) may press `action`.
pub fn may_press(
    allowed: &Allowed<'_>,
    action: CentaurAction,
    user: &str,
    team: Option<&str>,
    channel: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(team) = team
        && !allowed.team(team)
    {
        return Err(Refusal::Team(team.to_owned()));
    }
    if let Some(channel) = channel
        && !allowed.channel(channel)
    {
        return Err(Refusal::Channel(channel.to_owned()));
    }
    let permitted = match action {
        CentaurAction::Approve | CentaurAction::ApproveForSession | CentaurAction::Deny => {
            allowed.approver(user)
        }
        CentaurAction::Stop => allowed.user(user),
    };
    if permitted {
        Ok(())
    } else {
        Err(Refusal::User(user.to_owned()))
    }
}

/// Handles a `block_actions` payload from the inbox.
pub async fn handle(
    state: &AppState,
    slack: &Slack,
    actions: &BlockActions,
) -> Result<(), ConversationError> {
    let bot = slack.bot().await;
    let allowed = Allowed {
        settings: &slack.settings,
        bot: &bot,
    };
    let team = actions
        .user
        .team_id
        .as_deref()
        .or(actions.team.as_ref().map(|t| t.id.as_str()));
    let channel = actions.channel.as_ref().map(|c| c.id.as_str()).or(actions
        .container
        .as_ref()
        .and_then(|c| c.channel_id.as_deref()));
    for action in &actions.actions {
        let Some(which) = CentaurAction::from_action_id(&action.action_id) else {
            tracing::debug!(action_id = %action.action_id, "a click on something not Centaur's");
            continue;
        };
        if let Err(refusal) = may_press(&allowed, which, &actions.user.id, team, channel) {
            tracing::info!(user = %actions.user.id, action = %action.action_id, ?refusal, "Slack click refused by the allow-lists");
            continue;
        }
        let user = slack.names.user(slack, &actions.user.id).await;
        act(state, which, action, user).await?;
    }
    Ok(())
}

async fn act(
    state: &AppState,
    which: CentaurAction,
    action: &Action,
    user: SlackUser,
) -> Result<(), ConversationError> {
    let Some(value) = action.value.as_deref().and_then(ActionValue::decode) else {
        tracing::warn!(action_id = %action.action_id, "a Centaur button without a readable value");
        return Ok(());
    };
    let Some(thread) = threads::find_optional(state, &value.thread_key).await? else {
        tracing::info!(thread_key = %value.thread_key, "a click on a thread that is gone");
        return Ok(());
    };
    match (which.decision(), value.approval_id) {
        (Some(decision), Some(approval_id)) => {
            let decided_by = Author::Slack(user).decided_by();
            match approvals::decide_as(
                state,
                decided_by.clone(),
                &thread,
                approval_id,
                decision,
                None,
            )
            .await
            {
                Ok(()) => {
                    tracing::info!(thread_key = %thread.thread_key, %approval_id, ?decision, %decided_by, "approval decided in Slack");
                    Ok(())
                }
                Err(error) if already_settled(&error) => {
                    tracing::info!(thread_key = %thread.thread_key, %approval_id, %error, "a click on an approval already settled");
                    Ok(())
                }
                Err(error) => Err(error.into()),
            }
        }
        (Some(_), None) => {
            tracing::warn!(action_id = %action.action_id, "an approval button without an approval id");
            Ok(())
        }
        (None, _) => conversation::stop(state, &thread, &user).await,
    }
}

/// The approval was decided already (elsewhere, or by a double click), or its turn ended.
fn already_settled(error: &ApiError) -> bool {
    matches!(
        error.code(),
        ErrorCode::ApprovalNotFound
            | ErrorCode::ApprovalAlreadyDecided
            | ErrorCode::ApprovalExpired
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slack::identity::BotIdentity;
    use crate::slack::settings::SlackSettings;

    fn settings() -> SlackSettings {
        SlackSettings::defaults()
    }

    #[test]
    fn approvers_users_teams_and_channels_decide_who_may_press() {
        let bot = BotIdentity {
            team_id: "T1".into(),
            user_id: "U0BOT".into(),
            bot_id: None,
            url: None,
        };
        let mut settings = settings();
        {
            let anyone = Allowed {
                settings: &settings,
                bot: &bot,
            };
            assert_eq!(
                may_press(
                    &anyone,
                    CentaurAction::Approve,
                    "U9",
                    Some("T1"),
                    Some("C1")
                ),
                Ok(())
            );
            assert_eq!(
                may_press(
                    &anyone,
                    CentaurAction::Approve,
                    "U9",
                    Some("T2"),
                    Some("C1")
                ),
                Err(Refusal::Team("T2".into()))
            );
        }
        settings.allowed_users = vec!["U1".into(), "U2".into()];
        settings.approvers = vec!["U1".into()];
        settings.allowed_channels = vec!["C1".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert_eq!(
            may_press(&allowed, CentaurAction::Deny, "U1", Some("T1"), Some("C1")),
            Ok(())
        );
        assert_eq!(
            may_press(
                &allowed,
                CentaurAction::ApproveForSession,
                "U2",
                Some("T1"),
                Some("C1")
            ),
            Err(Refusal::User("U2".into()))
        );
        // Stop is for the allowed users, approvers or not.
        assert_eq!(
            may_press(&allowed, CentaurAction::Stop, "U2", Some("T1"), Some("C1")),
            Ok(())
        );
        assert_eq!(
            may_press(&allowed, CentaurAction::Stop, "U3", Some("T1"), Some("C1")),
            Err(Refusal::User("U3".into()))
        );
        assert_eq!(
            may_press(
                &allowed,
                CentaurAction::Approve,
                "U1",
                Some("T1"),
                Some("C2")
            ),
            Err(Refusal::Channel("C2".into()))
        );
    }
}
