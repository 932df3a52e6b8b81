//! Slack's message text made plain for a harness: mentions as names, links as text, entities
//! unescaped.

use std::collections::HashMap;

use crate::slack::Slack;
use crate::slack::identity::BotIdentity;

/// The user ids mentioned in Slack text (`<@U123>`, `<@U123|ann>`).
pub fn mentioned_users(text: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<@") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('>') else { break };
        let id = after[..end].split('|').next().unwrap_or_default();
        if !id.is_empty() && !ids.iter().any(|known| known == id) {
            ids.push(id.to_owned());
        }
        rest = &after[end..];
    }
    ids
}

/// Slack's message text as plain text for a harness: the bot's own mention removed, people as
/// `@Name` (from `names`, else the id), channels as `#name`, links as `label (url)` (or the
/// url), `&amp;` `&lt;` `&gt;` unescaped.
pub fn plain_text(text: &str, bot_user_id: &str, names: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&unescape(&rest[..start]));
        let after = &rest[start + 1..];
        let Some(end) = after.find('>') else {
            out.push_str(&unescape(&rest[start..]));
            rest = "";
            break;
        };
        let inner = &after[..end];
        let (target, label) = match inner.split_once('|') {
            Some((target, label)) => (target, Some(label)),
            None => (inner, None),
        };
        let mut next = &after[end + 1..];
        if let Some(user) = target.strip_prefix('@') {
            if user == bot_user_id {
                // The mention goes, with one space after it.
                next = next.strip_prefix(' ').unwrap_or(next);
            } else {
                let name = names
                    .get(user)
                    .map(String::as_str)
                    .or(label)
                    .unwrap_or(user);
                out.push('@');
                out.push_str(&unescape(name));
            }
        } else if let Some(channel) = target.strip_prefix('#') {
            out.push('#');
            out.push_str(&unescape(label.unwrap_or(channel)));
        } else if let Some(special) = target.strip_prefix('!') {
            // <!here>, <!channel>, <!subteam^S1|@team>, <!date^…|fallback>
            match label {
                Some(label) => out.push_str(&unescape(label)),
                None => {
                    out.push('@');
                    out.push_str(special);
                }
            }
        } else {
            let url = unescape(target);
            match label {
                Some(label) if unescape(label) != url => {
                    out.push_str(&unescape(label));
                    out.push_str(" (");
                    out.push_str(&url);
                    out.push(')');
                }
                Some(_) | None => out.push_str(&url),
            }
        }
        rest = next;
    }
    out.push_str(&unescape(rest));
    out.trim().to_owned()
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Slack text made readable, with people's names looked up.
pub(super) async fn readable(slack: &Slack, bot: &BotIdentity, text: &str) -> String {
    let mut names = HashMap::new();
    for id in mentioned_users(text) {
        if id == bot.user_id {
            continue;
        }
        let user = slack.names.user(slack, &id).await;
        if let Some(name) = user.name {
            names.insert(id, name);
        }
    }
    plain_text(text, &bot.user_id, &names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_becomes_plain_text() {
        let names = HashMap::from([("U2".to_owned(), "Bob".to_owned())]);
        assert_eq!(
            plain_text(
                "<@U0BOT>  ask <@U2> about <#C9|deploys> &amp; see <https://x.io/a?b=1&amp;c=2|the doc> or <https://y.io> &lt;now&gt; <!here>",
                "U0BOT",
                &names
            ),
            "ask @Bob about #deploys & see the doc (https://x.io/a?b=1&c=2) or https://y.io <now> @here"
        );
        assert_eq!(plain_text("<@U0BOT>", "U0BOT", &names), "");
        assert_eq!(
            plain_text("<@U3|carol> hi\n<@U0BOT> line two", "U0BOT", &names),
            "@carol hi\nline two"
        );
        assert_eq!(
            mentioned_users("<@U0BOT> <@U2> <@U2|b> <@U3>"),
            ["U0BOT", "U2", "U3"]
        );
    }
}
