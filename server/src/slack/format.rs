//! Markdown into Slack's mrkdwn, and long text split within Slack's limits (never inside a code
//! block without closing and reopening it).
