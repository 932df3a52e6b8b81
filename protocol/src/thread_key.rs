//! Thread keys: `<platform>:<rest>`, at most 512 bytes, printable, at least one `:`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

pub const MAX_THREAD_KEY_BYTES: usize = 512;

/// A validated thread key. Constructing one is the only validation a caller needs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ThreadKey(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThreadKeyError {
    #[error("thread key is empty")]
    Empty,
    #[error("thread key is {0} bytes long; the limit is {MAX_THREAD_KEY_BYTES}")]
    TooLong(usize),
    #[error("thread key must look like `<platform>:<rest>` (for example `api:my-thread`)")]
    MissingColon,
    #[error("thread key platform `{0}` must be lowercase letters, digits, `-` or `_`")]
    BadPlatform(String),
    #[error("thread key has nothing after `{0}:`")]
    EmptyRest(String),
    #[error("thread key contains a non-printable character at byte {0}")]
    NotPrintable(usize),
    #[error("slack thread keys look like `slack:<channel_id>:<thread_ts>`")]
    BadSlack,
    #[error("cli thread keys look like `cli:<uuid>`")]
    BadCli,
    #[error("workflow thread keys look like `wf:<run_id>:<name>`")]
    BadWorkflow,
}

impl ThreadKey {
    pub fn parse(key: &str) -> Result<Self, ThreadKeyError> {
        if key.is_empty() {
            return Err(ThreadKeyError::Empty);
        }
        if key.len() > MAX_THREAD_KEY_BYTES {
            return Err(ThreadKeyError::TooLong(key.len()));
        }
        if let Some((at, _)) = key.char_indices().find(|(_, c)| c.is_control()) {
            return Err(ThreadKeyError::NotPrintable(at));
        }
        let (platform, rest) = key.split_once(':').ok_or(ThreadKeyError::MissingColon)?;
        let platform_ok = !platform.is_empty()
            && platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !platform_ok {
            return Err(ThreadKeyError::BadPlatform(platform.to_owned()));
        }
        if rest.is_empty() {
            return Err(ThreadKeyError::EmptyRest(platform.to_owned()));
        }
        let two_parts = |rest: &str| {
            rest.split_once(':')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
        };
        match platform {
            "slack" if !two_parts(rest) => return Err(ThreadKeyError::BadSlack),
            "cli" if uuid::Uuid::try_parse(rest).is_err() => return Err(ThreadKeyError::BadCli),
            "wf" if !two_parts(rest) => return Err(ThreadKeyError::BadWorkflow),
            _ => {}
        }
        Ok(ThreadKey(key.to_owned()))
    }

    /// A fresh key for a thread started from the terminal client.
    pub fn new_cli() -> Self {
        ThreadKey(format!("cli:{}", uuid::Uuid::new_v4()))
    }

    /// The key percent-encoded for a URL path segment (`/agent/threads/{key}/…`).
    pub fn to_path_segment(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn platform(&self) -> &str {
        self.0.split_once(':').map_or("", |(p, _)| p)
    }
}

impl fmt::Display for ThreadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ThreadKey {
    type Err = ThreadKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ThreadKey::parse(s)
    }
}

impl AsRef<str> for ThreadKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for ThreadKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        ThreadKey::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_shapes() {
        for key in [
            "slack:C024BE91L:1712345678.000100",
            "cli:6f1c2b1e-7d0e-4c39-9d43-1f0f6b0f9a11",
            "api:anything at all, even spaces",
            "wf:run_42:nightly-report",
            "api:a:b:c",
        ] {
            let parsed = ThreadKey::parse(key).unwrap();
            assert_eq!(parsed.as_str(), key);
        }
        assert_eq!(ThreadKey::parse("slack:C1:2").unwrap().platform(), "slack");
        assert_eq!(ThreadKey::new_cli().platform(), "cli");
    }

    #[test]
    fn rejects_malformed_keys_with_a_reason() {
        let cases = [
            ("", ThreadKeyError::Empty),
            ("nocolon", ThreadKeyError::MissingColon),
            (":rest", ThreadKeyError::BadPlatform(String::new())),
            ("Slack:C1:2", ThreadKeyError::BadPlatform("Slack".into())),
            ("api:", ThreadKeyError::EmptyRest("api".into())),
            ("api:a\nb", ThreadKeyError::NotPrintable(5)),
            ("api:\u{7f}", ThreadKeyError::NotPrintable(4)),
            ("slack:C1", ThreadKeyError::BadSlack),
            ("slack:C1:", ThreadKeyError::BadSlack),
            ("cli:not-a-uuid", ThreadKeyError::BadCli),
            ("wf:run", ThreadKeyError::BadWorkflow),
        ];
        for (key, want) in cases {
            assert_eq!(ThreadKey::parse(key), Err(want), "key {key:?}");
        }
    }

    #[test]
    fn length_limit_is_in_bytes() {
        let at_limit = format!("api:{}", "x".repeat(MAX_THREAD_KEY_BYTES - 4));
        assert!(ThreadKey::parse(&at_limit).is_ok());
        let over = format!("api:{}", "é".repeat(MAX_THREAD_KEY_BYTES / 2));
        assert_eq!(
            ThreadKey::parse(&over),
            Err(ThreadKeyError::TooLong(over.len()))
        );
    }

    #[test]
    fn deserializing_validates() {
        let err = serde_json::from_str::<ThreadKey>("\"bad\"").unwrap_err();
        assert!(err.to_string().contains("<platform>:<rest>"), "{err}");
    }
}
