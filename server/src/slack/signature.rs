//! Slack's v0 request signatures: HMAC-SHA256 over `v0:{timestamp}:{raw body}` with the signing
//! secret, lowercase hex, `v0=` in front, compared in constant time; a timestamp more than five
//! minutes from now is refused (a replay).
