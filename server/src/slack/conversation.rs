//! A Slack message becoming a turn: the thread `slack:<channel>:<thread_ts>`, the Slack thread's
//! earlier messages as context for its first turn, who may ask, `stop`, and a reply while a turn
//! runs.
