//! `POST /api/webhooks/slack`: the Events API (JSON) and interactivity (`payload=` form), both
//! signed. A verified request is stored in the inbox and only then answered 200, within Slack's
//! 3 s; `url_verification` is answered with its challenge.
