//! Slack message links: `https://<team>.slack.com/archives/<channel>/p<digits>`, optionally with
//! `?thread_ts=<ts>&cid=<channel>` (a reply's link). `p1358546515000008` is the message's `ts`
//! `1358546515.000008` without its dot.

use crate::ThreadKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlackLink {
    /// The workspace's subdomain (`acme` in `acme.slack.com`), when the host names one.
    pub team_domain: Option<String>,
    pub channel_id: String,
    /// The linked message's `ts`.
    pub message_ts: String,
    /// The thread the message is a reply in, when the link says so.
    pub thread_ts: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlackLinkError {
    #[error(
        "not a Slack message link: it must look like https://<team>.slack.com/archives/<channel>/p<digits>"
    )]
    NotALink,
    #[error("the link's message id `{0}` is not `p` followed by at least 7 digits")]
    BadMessageId(String),
    #[error("the link's thread_ts `{0}` is not a Slack timestamp like 1358546515.000008")]
    BadThreadTs(String),
}

impl SlackLink {
    /// Whether `text` looks like a link at all (so a caller can tell a link from a thread key).
    pub fn looks_like_link(text: &str) -> bool {
        text.starts_with("https://") || text.starts_with("http://")
    }

    pub fn parse(url: &str) -> Result<SlackLink, SlackLinkError> {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or(SlackLinkError::NotALink)?;
        let (host, path_and_query) = rest.split_once('/').ok_or(SlackLinkError::NotALink)?;
        let host = host.to_ascii_lowercase();
        if host != "slack.com" && !host.ends_with(".slack.com") {
            return Err(SlackLinkError::NotALink);
        }
        let team_domain = host
            .strip_suffix(".slack.com")
            .filter(|t| !t.is_empty() && *t != "app" && !t.contains('.'))
            .map(str::to_owned);
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        let path = path.split('#').next().unwrap_or_default();
        let mut parts = path.trim_end_matches('/').split('/');
        let (Some("archives"), Some(channel), Some(message), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SlackLinkError::NotALink);
        };
        if channel.is_empty() || !channel.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SlackLinkError::NotALink);
        }
        let message_ts = message
            .strip_prefix('p')
            .filter(|d| d.len() > 6 && d.bytes().all(|b| b.is_ascii_digit()))
            .map(|d| format!("{}.{}", &d[..d.len() - 6], &d[d.len() - 6..]))
            .ok_or_else(|| SlackLinkError::BadMessageId(message.to_owned()))?;
        let thread_ts = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("thread_ts="))
            .map(|ts| {
                let ts = ts.replace("%2E", ".").replace("%2e", ".");
                if is_ts(&ts) {
                    Ok(ts)
                } else {
                    Err(SlackLinkError::BadThreadTs(ts))
                }
            })
            .transpose()?;
        Ok(SlackLink {
            team_domain,
            channel_id: channel.to_owned(),
            message_ts,
            thread_ts,
        })
    }

    /// The thread the link points into: its `thread_ts` when it names one, else the message
    /// itself (a top-level message starts its thread). A link to a reply copied without
    /// `thread_ts` names the reply; the server resolves it (`GET /agent/slack/messages/…`).
    pub fn thread_key(&self) -> ThreadKey {
        let ts = self.thread_ts.as_deref().unwrap_or(&self.message_ts);
        // Channel ids and timestamps are checked above: the key is always valid.
        super::thread_key(&self.channel_id, ts).unwrap_or_else(|_| ThreadKey::new_cli())
    }
}

/// `1358546515.000008`: digits, a dot, digits.
pub fn is_ts(ts: &str) -> bool {
    ts.split_once('.').is_some_and(|(secs, frac)| {
        !secs.is_empty()
            && !frac.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_top_level_message_link_names_its_own_thread() {
        let link =
            SlackLink::parse("https://acme.slack.com/archives/C0123ABC/p1358546515000008").unwrap();
        assert_eq!(link.team_domain.as_deref(), Some("acme"));
        assert_eq!(link.channel_id, "C0123ABC");
        assert_eq!(link.message_ts, "1358546515.000008");
        assert_eq!(link.thread_ts, None);
        assert_eq!(
            link.thread_key().as_str(),
            "slack:C0123ABC:1358546515.000008"
        );
    }

    #[test]
    fn a_reply_link_names_the_thread_it_is_in() {
        let link = SlackLink::parse(
            "https://acme.slack.com/archives/C0123ABC/p1358546600000100?thread_ts=1358546515.000008&cid=C0123ABC",
        )
        .unwrap();
        assert_eq!(link.message_ts, "1358546600.000100");
        assert_eq!(link.thread_ts.as_deref(), Some("1358546515.000008"));
        assert_eq!(
            link.thread_key().as_str(),
            "slack:C0123ABC:1358546515.000008"
        );
    }

    #[test]
    fn other_urls_are_refused_with_the_expected_shape() {
        for bad in [
            "slack:C1:1.2",
            "https://example.com/archives/C1/p1358546515000008",
            "https://acme.slack.com/messages/C1",
            "https://acme.slack.com/archives/C1",
        ] {
            assert_eq!(
                SlackLink::parse(bad),
                Err(SlackLinkError::NotALink),
                "{bad}"
            );
        }
        assert!(matches!(
            SlackLink::parse("https://acme.slack.com/archives/C1/pxyz"),
            Err(SlackLinkError::BadMessageId(_))
        ));
        assert!(matches!(
            SlackLink::parse("https://acme.slack.com/archives/C1/p1358546515000008?thread_ts=abc"),
            Err(SlackLinkError::BadThreadTs(_))
        ));
    }
}
