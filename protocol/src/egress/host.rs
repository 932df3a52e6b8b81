//! Host patterns: `example.com`, `*.example.com` (any subdomain, not the apex), each with an
//! optional `:port`. Matching is case-insensitive and ignores a trailing dot.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase, without a trailing dot; for wildcards, the suffix after `*.`.
    name: String,
    wildcard: bool,
    port: Option<u16>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HostPatternError {
    #[error("empty host pattern")]
    Empty,
    #[error("`{0}`: a wildcard may only be a leading `*.`")]
    BadWildcard(String),
    #[error("`{0}`: bad port")]
    BadPort(String),
    #[error("`{0}`: not a host name or address")]
    BadHost(String),
}

impl HostPattern {
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = normalize(host);
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }
}

/// Lowercase, without a trailing dot or IPv6 brackets.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.')
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

impl FromStr for HostPattern {
    type Err = HostPatternError;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(HostPatternError::Empty);
        }
        // `[v6]:port`, `host:port`, or a bare host (a bare IPv6 address has several colons).
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| HostPatternError::BadHost(raw.into()))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(HostPatternError::BadHost(raw.into())),
            };
            (host, port)
        } else if raw.matches(':').count() == 1 {
            let (host, port) = raw.split_once(':').expect("one colon");
            (host, Some(port))
        } else {
            (raw, None)
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| HostPatternError::BadPort(raw.into()))
            })
            .transpose()?;
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        if name.contains('*') {
            return Err(HostPatternError::BadWildcard(raw.into()));
        }
        let name = normalize(name);
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
        if !valid {
            return Err(HostPatternError::BadHost(raw.into()));
        }
        Ok(HostPattern {
            name,
            wildcard,
            port,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        if self.name.contains(':') {
            write!(f, "[{}]", self.name)?;
        } else {
            f.write_str(&self.name)?;
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl Serialize for HostPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn exact_and_wildcard() {
        assert!(p("api.openai.com").matches("API.OpenAI.com.", 443));
        assert!(!p("api.openai.com").matches("evil-api.openai.com", 443));
        assert!(p("*.github.com").matches("api.github.com", 443));
        assert!(p("*.github.com").matches("a.b.github.com", 443));
        assert!(
            !p("*.github.com").matches("github.com", 443),
            "the apex is not a subdomain"
        );
        assert!(!p("*.github.com").matches("evilgithub.com", 443));
        assert!(!p("*.github.com").matches("github.com.evil.net", 443));
    }

    #[test]
    fn ports() {
        assert!(p("example.com:8443").matches("example.com", 8443));
        assert!(!p("example.com:8443").matches("example.com", 443));
        assert!(p("example.com").matches("example.com", 1234));
        assert!(p("127.0.0.1:9000").matches("127.0.0.1", 9000));
        assert!(p("[::1]:9000").matches("[::1]", 9000));
        assert!(p("::1").matches("::1", 1));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!("".parse::<HostPattern>(), Err(HostPatternError::Empty));
        assert!(matches!(
            "a.*.com".parse::<HostPattern>(),
            Err(HostPatternError::BadWildcard(_))
        ));
        assert!(matches!(
            "*".parse::<HostPattern>(),
            Err(HostPatternError::BadWildcard(_))
        ));
        assert!(matches!(
            "host:99999".parse::<HostPattern>(),
            Err(HostPatternError::BadPort(_))
        ));
        assert!(matches!(
            "ho st".parse::<HostPattern>(),
            Err(HostPatternError::BadHost(_))
        ));
    }

    #[test]
    fn round_trips_through_text() {
        for s in ["example.com", "*.example.com:443", "[::1]:80", "10.0.0.1"] {
            assert_eq!(p(s).to_string(), s);
        }
    }
}
