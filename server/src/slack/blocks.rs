//! The Block Kit messages the bridge posts: an approval request with its buttons, the same
//! message once decided, the Stop button.
