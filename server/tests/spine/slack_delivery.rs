//! Slack: slack_delivery (see the helper's task).
