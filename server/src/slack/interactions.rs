//! Button clicks from Slack: an approval decided (by an allowed approver), Stop.
