//! Per-sandbox egress policy: default deny; `deny` beats `allow`; per host, tunnelled untouched
//! or intercepted (TLS terminated by the proxy). Hosts with bound secrets are always
//! intercepted.

use serde::{Deserialize, Serialize};

use super::host::HostPattern;

/// Where a secret may be used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBinding {
    /// The secret's name in the proxy's secret store.
    pub name: String,
    /// Hosts it may be sent to.
    pub hosts: Vec<HostPattern>,
    /// Request headers it may appear in (case-insensitive).
    #[serde(default)]
    pub headers: Vec<String>,
    /// A query parameter it may appear in.
    #[serde(default)]
    pub query_param: Option<String>,
    /// How a bound header is written with the real value, e.g. `Bearer {value}`; without it,
    /// the placeholder is replaced where it stands.
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Hosts the sandbox may reach.
    #[serde(default)]
    pub allow: Vec<HostPattern>,
    /// Hosts it may never reach, even if allowed.
    #[serde(default)]
    pub deny: Vec<HostPattern>,
    /// Allowed hosts whose TLS the proxy terminates (to inspect and swap credentials).
    #[serde(default)]
    pub intercept: Vec<HostPattern>,
    /// Allowed hosts that may resolve to loopback, private or link-local addresses (the
    /// Centaur API, test servers). Everything else is refused after resolution.
    #[serde(default)]
    pub allow_private: Vec<HostPattern>,
    /// Credentials the proxy swaps in for placeholders, each bound to hosts and places.
    #[serde(default)]
    pub secrets: Vec<SecretBinding>,
    /// Secrets whose values the proxy may give the server for this principal
    /// (`POST /v1/secrets/{name}/reveal`): only a tool's (`tool-<name>`), only the secrets the
    /// operator granted it. A thread's policy has none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reveal: Vec<String>,
}

/// What the policy says about a destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Denied(DenyReason),
    Allowed {
        intercept: bool,
        allow_private: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    NotAllowed,
    ExplicitlyDenied,
}

impl Policy {
    pub fn verdict(&self, host: &str, port: u16) -> Verdict {
        if self.deny.iter().any(|p| p.matches(host, port)) {
            return Verdict::Denied(DenyReason::ExplicitlyDenied);
        }
        if !self.allow.iter().any(|p| p.matches(host, port)) {
            return Verdict::Denied(DenyReason::NotAllowed);
        }
        let has_secrets = self
            .secrets
            .iter()
            .any(|b| b.hosts.iter().any(|p| p.matches(host, port)));
        Verdict::Allowed {
            intercept: has_secrets || self.intercept.iter().any(|p| p.matches(host, port)),
            allow_private: self.allow_private.iter().any(|p| p.matches(host, port)),
        }
    }
}

/// Why a policy that parsed cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("secret `{0}` is bound twice; list all its hosts in one binding")]
    BoundTwice(String),
    #[error("secret `{0}` is not configured in the proxy")]
    UnknownSecret(String),
    #[error("secret `{0}` is bound to no host")]
    NoHost(String),
    #[error("secret `{0}` has no place to go: give `headers` or `query_param`")]
    NoPlace(String),
    #[error("the format of secret `{0}` must contain {{value}}")]
    FormatWithoutValue(String),
}

impl Policy {
    /// Checks what parsing cannot: every bound secret is known (`known`), is bound to at least
    /// one host and one place, appears once, and its format has a `{value}`; every secret that
    /// may be revealed is known.
    pub fn validate(&self, known: impl Fn(&str) -> bool) -> Result<(), PolicyError> {
        if let Some(name) = self.reveal.iter().find(|name| !known(name)) {
            return Err(PolicyError::UnknownSecret(name.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for binding in &self.secrets {
            let name = &binding.name;
            if !seen.insert(name.as_str()) {
                return Err(PolicyError::BoundTwice(name.clone()));
            }
            if !known(name) {
                return Err(PolicyError::UnknownSecret(name.clone()));
            }
            if binding.hosts.is_empty() {
                return Err(PolicyError::NoHost(name.clone()));
            }
            if binding.headers.is_empty() && binding.query_param.is_none() {
                return Err(PolicyError::NoPlace(name.clone()));
            }
            if binding
                .format
                .as_ref()
                .is_some_and(|f| !f.contains("{value}"))
            {
                return Err(PolicyError::FormatWithoutValue(name.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Policy {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn default_deny_and_deny_wins() {
        let policy = policy(serde_json::json!({
            "allow": ["*.example.com", "api.openai.com:443"],
            "deny": ["secret.example.com"],
            "intercept": ["www.example.com"],
        }));
        assert_eq!(
            policy.verdict("other.net", 443),
            Verdict::Denied(DenyReason::NotAllowed)
        );
        assert_eq!(
            policy.verdict("secret.example.com", 443),
            Verdict::Denied(DenyReason::ExplicitlyDenied)
        );
        assert_eq!(
            policy.verdict("api.openai.com", 80),
            Verdict::Denied(DenyReason::NotAllowed)
        );
        assert_eq!(
            policy.verdict("api.openai.com", 443),
            Verdict::Allowed {
                intercept: false,
                allow_private: false
            }
        );
        assert_eq!(
            policy.verdict("www.example.com", 443),
            Verdict::Allowed {
                intercept: true,
                allow_private: false
            }
        );
        assert_eq!(
            Policy::default().verdict("anything", 80),
            Verdict::Denied(DenyReason::NotAllowed)
        );
    }

    #[test]
    fn hosts_with_secrets_are_always_intercepted() {
        let policy = policy(serde_json::json!({
            "allow": ["api.openai.com"],
            "secrets": [{"name": "OPENAI_API_KEY", "hosts": ["api.openai.com"], "headers": ["authorization"]}],
        }));
        assert_eq!(
            policy.verdict("api.openai.com", 443),
            Verdict::Allowed {
                intercept: true,
                allow_private: false
            }
        );
    }

    /// `reveal` is absent from a policy that has none (documents stay as they were), and its
    /// secrets must be known like bound ones.
    #[test]
    fn reveal_is_skipped_when_empty_and_its_secrets_must_be_known() {
        let plain = policy(serde_json::json!({"allow": ["db.example.com"]}));
        assert!(plain.reveal.is_empty());
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"allow": ["db.example.com"], "deny": [], "intercept": [],
                               "allow_private": [], "secrets": []})
        );
        let revealing = policy(serde_json::json!({"reveal": ["DATABASE_URL"]}));
        assert_eq!(revealing.reveal, ["DATABASE_URL"]);
        assert_eq!(
            serde_json::to_value(&revealing).unwrap()["reveal"],
            serde_json::json!(["DATABASE_URL"])
        );
        assert_eq!(revealing.validate(|n| n == "DATABASE_URL"), Ok(()));
        assert_eq!(
            revealing.validate(|_| false),
            Err(PolicyError::UnknownSecret("DATABASE_URL".into()))
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let error = serde_json::from_value::<Policy>(serde_json::json!({"alow": []})).unwrap_err();
        assert!(error.to_string().contains("alow"));
    }
}
