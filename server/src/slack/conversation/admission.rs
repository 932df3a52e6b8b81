//! Which Slack messages count, and who may ask: the allow-lists.

use centaur_protocol::slack::events::MessageEvent;

use crate::slack::identity::BotIdentity;
use crate::slack::settings::SlackSettings;

/// Whether a message of `app_mention` or `message` type arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    Mention,
    Message,
}

/// What becomes of a Slack message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A turn (or a message for the running one).
    Take,
    /// Not for the bot (its own, another bot's, an edit, chatter): nothing happens.
    Ignore(&'static str),
    /// For the bot, from someone or somewhere not allowed: logged, answered with one line.
    Refuse(Refusal),
}

/// Why a message or a click is not acted on: the allow-lists said no.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another workspace (not in `CENTAUR_SLACK_ALLOWED_TEAMS`, or not the bot's own).
    Team(String),
    /// A channel not in `CENTAUR_SLACK_ALLOWED_CHANNELS`.
    Channel(String),
    /// Not an allowed user (a message, Stop) or not an approver (an approval button).
    User(String),
}

impl Refusal {
    /// The one line a refused message is answered with in its Slack thread, if any.
    pub(super) fn explanation(&self) -> Option<&'static str> {
        match self {
            // Another workspace in a shared channel: stay quiet.
            Refusal::Team(_) => None,
            Refusal::Channel(_) => Some(
                "Centaur does not take requests in this channel (CENTAUR_SLACK_ALLOWED_CHANNELS).",
            ),
            Refusal::User(_) => Some(
                "Centaur does not take requests from you (CENTAUR_SLACK_ALLOWED_USERS); ask its operator.",
            ),
        }
    }
}

/// Who may ask, from the settings and the bot's own workspace.
pub struct Allowed<'a> {
    pub settings: &'a SlackSettings,
    pub bot: &'a BotIdentity,
}

impl Allowed<'_> {
    /// The workspace is allowed: listed, or (no list) the bot's own.
    pub fn team(&self, team: &str) -> bool {
        if self.settings.allowed_teams.is_empty() {
            team == self.bot.team_id
        } else {
            self.settings.allowed_teams.iter().any(|t| t == team)
        }
    }

    pub fn channel(&self, channel: &str) -> bool {
        self.settings.allowed_channels.is_empty()
            || self.settings.allowed_channels.iter().any(|c| c == channel)
    }

    pub fn user(&self, user: &str) -> bool {
        self.settings.allowed_users.is_empty()
            || self.settings.allowed_users.iter().any(|u| u == user)
    }

    /// May decide approvals: `CENTAUR_SLACK_APPROVERS`, else the allowed users, else anyone (in
    /// an allowed workspace, checked apart).
    pub fn approver(&self, user: &str) -> bool {
        if self.settings.approvers.is_empty() {
            self.user(user)
        } else {
            self.settings.approvers.iter().any(|u| u == user)
        }
    }

    fn bot_allowed(&self, bot_id: &str) -> bool {
        self.settings.allowed_bots.iter().any(|b| b == bot_id)
    }

    /// Whether an earlier message of a Slack thread may be shown to a turn as context: written
    /// by this bot, by an allow-listed bot, or by an allowed user. Anything else could say what
    /// the allow-lists would refuse to hear.
    pub fn author(&self, user: Option<&str>, bot_id: Option<&str>) -> bool {
        if self.bot.wrote(user, bot_id) {
            return true;
        }
        match (user, bot_id) {
            (_, Some(bot_id)) => self.bot_allowed(bot_id),
            (Some(user), None) => self.user(user),
            (None, None) => false,
        }
    }
}

/// Decides what becomes of `message`. `known_thread` says whether its Slack thread already has a
/// Centaur thread (asked only for replies that need it).
pub fn classify(
    allowed: &Allowed<'_>,
    team: &str,
    arrival: Arrival,
    message: &MessageEvent,
    known_thread: bool,
) -> Verdict {
    let bot = allowed.bot;
    if bot.wrote(message.user.as_deref(), message.bot_id.as_deref()) {
        return Verdict::Ignore("the bot's own message");
    }
    let from_bot = message.bot_id.as_deref();
    if let Some(bot_id) = from_bot
        && !allowed.bot_allowed(bot_id)
    {
        return Verdict::Ignore("another bot (not in CENTAUR_SLACK_ALLOWED_BOTS)");
    }
    match message.subtype.as_deref() {
        None | Some("file_share" | "thread_broadcast") => {}
        Some("bot_message") if from_bot.is_some() => {}
        Some(_) => return Verdict::Ignore("a subtype the bridge does not take"),
    }
    let mentioned = message.text.contains(&format!("<@{}>", bot.user_id));
    let wanted = match arrival {
        Arrival::Mention => true,
        // Its app_mention carries it (Slack sends both for one post).
        Arrival::Message if mentioned && !message.is_direct() => false,
        Arrival::Message => message.is_direct() || (message.thread_ts.is_some() && known_thread),
    };
    if !wanted {
        return Verdict::Ignore("not addressed to the bot");
    }
    if !allowed.team(team) {
        return Verdict::Refuse(Refusal::Team(team.to_owned()));
    }
    if !allowed.channel(&message.channel) {
        return Verdict::Refuse(Refusal::Channel(message.channel.clone()));
    }
    let who = message.user.as_deref().or(from_bot).unwrap_or_default();
    // An allow-listed bot is allowed by that list.
    if from_bot.is_none() && !allowed.user(who) {
        return Verdict::Refuse(Refusal::User(who.to_owned()));
    }
    Verdict::Take
}

/// Whether the text (mention removed) is the word `stop`.
pub fn is_stop(text: &str) -> bool {
    let word = text.trim().trim_end_matches(['.', '!', '?']).trim();
    word.eq_ignore_ascii_case("stop")
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is the test's answer.
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            team_id: "T1".into(),
            user_id: "U0BOT".into(),
            bot_id: Some("B0BOT".into()),
            url: None,
        }
    }

    fn settings() -> SlackSettings {
        SlackSettings::defaults()
    }

    fn message(text: &str) -> MessageEvent {
        MessageEvent {
            channel: "C1".into(),
            channel_type: Some("channel".into()),
            user: Some("U1".into()),
            text: text.into(),
            ts: "1700000000.000200".into(),
            ..MessageEvent::default()
        }
    }

    #[test]
    fn mentions_dms_and_known_thread_replies_are_taken_and_the_rest_ignored() {
        let settings = settings();
        let bot = bot();
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        let mention = message("<@U0BOT> hi");
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &mention, false),
            Verdict::Take
        );
        // The same post as a `message`: left to the app_mention.
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &mention, false),
            Verdict::Ignore(_)
        ));
        // Top-level chatter.
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &message("lunch?"), false),
            Verdict::Ignore(_)
        ));
        // A reply in a thread the bot is part of, and one in a thread it is not.
        let mut reply = message("and the tests?");
        reply.thread_ts = Some("1700000000.000100".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &reply, true),
            Verdict::Take
        );
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &reply, false),
            Verdict::Ignore(_)
        ));
        // A DM, with or without a mention.
        let mut dm = message("hello");
        dm.channel_type = Some("im".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &dm, false),
            Verdict::Take
        );
        // The bot's own message, by user or by bot id; another bot; an edit.
        let mut own = message("<@U0BOT> echo");
        own.user = Some("U0BOT".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Mention, &own, false),
            Verdict::Ignore(_)
        ));
        let mut own_by_bot_id = reply.clone();
        own_by_bot_id.user = None;
        own_by_bot_id.bot_id = Some("B0BOT".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &own_by_bot_id, true),
            Verdict::Ignore(_)
        ));
        let mut other_bot = mention.clone();
        other_bot.bot_id = Some("B9".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Mention, &other_bot, false),
            Verdict::Ignore(_)
        ));
        let mut edit = reply.clone();
        edit.subtype = Some("message_changed".into());
        assert!(matches!(
            classify(&allowed, "T1", Arrival::Message, &edit, true),
            Verdict::Ignore(_)
        ));
        let mut file = reply.clone();
        file.subtype = Some("file_share".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Message, &file, true),
            Verdict::Take
        );
    }

    #[test]
    fn allow_lists_refuse_teams_channels_and_users_and_admit_listed_bots() {
        let mut settings = settings();
        let bot = bot();
        {
            let allowed = Allowed {
                settings: &settings,
                bot: &bot,
            };
            // No team list: only the bot's own workspace.
            assert_eq!(
                classify(
                    &allowed,
                    "T2",
                    Arrival::Mention,
                    &message("<@U0BOT> x"),
                    false
                ),
                Verdict::Refuse(Refusal::Team("T2".into()))
            );
        }
        settings.allowed_teams = vec!["T1".into(), "T2".into()];
        settings.allowed_channels = vec!["C1".into()];
        settings.allowed_users = vec!["U1".into()];
        settings.allowed_bots = vec!["B7".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert_eq!(
            classify(
                &allowed,
                "T2",
                Arrival::Mention,
                &message("<@U0BOT> x"),
                false
            ),
            Verdict::Take
        );
        let mut elsewhere = message("<@U0BOT> x");
        elsewhere.channel = "C2".into();
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &elsewhere, false),
            Verdict::Refuse(Refusal::Channel("C2".into()))
        );
        let mut bob = message("<@U0BOT> x");
        bob.user = Some("U2".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &bob, false),
            Verdict::Refuse(Refusal::User("U2".into()))
        );
        let mut listed_bot = message("<@U0BOT> deploy");
        listed_bot.user = None;
        listed_bot.bot_id = Some("B7".into());
        listed_bot.subtype = Some("bot_message".into());
        assert_eq!(
            classify(&allowed, "T1", Arrival::Mention, &listed_bot, false),
            Verdict::Take
        );
        assert!(allowed.approver("U1"));
        assert!(!allowed.approver("U2"));
        settings.approvers = vec!["U2".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert!(allowed.approver("U2"));
        assert!(!allowed.approver("U1"));
    }

    #[test]
    fn stop_is_the_word_alone() {
        for text in ["stop", "Stop", "STOP!", " stop. ", "stop?"] {
            assert!(is_stop(text), "{text}");
        }
        for text in ["stop the build", "don't stop", "", "stopped"] {
            assert!(!is_stop(text), "{text}");
        }
    }

    #[test]
    fn context_authors_are_this_bot_listed_bots_and_allowed_users() {
        let mut settings = settings();
        let bot = bot();
        {
            let allowed = Allowed {
                settings: &settings,
                bot: &bot,
            };
            // No user list: any person; bots only when listed, and this bot.
            assert!(allowed.author(Some("U9"), None));
            assert!(allowed.author(Some("U0BOT"), None));
            assert!(allowed.author(None, Some("B0BOT")));
            assert!(!allowed.author(None, Some("B9")));
            assert!(!allowed.author(Some("U8"), Some("B9")));
            assert!(!allowed.author(None, None));
        }
        settings.allowed_users = vec!["U1".into()];
        settings.allowed_bots = vec!["B7".into()];
        let allowed = Allowed {
            settings: &settings,
            bot: &bot,
        };
        assert!(allowed.author(Some("U1"), None));
        assert!(!allowed.author(Some("U2"), None));
        assert!(allowed.author(None, Some("B7")));
        assert!(allowed.author(Some("U0BOT"), Some("B0BOT")));
    }
}
