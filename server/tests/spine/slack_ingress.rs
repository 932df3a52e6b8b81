//! Slack: slack_ingress (see the helper's task).
