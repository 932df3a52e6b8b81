//! Slack: slack_cli (see the helper's task).
