//! Where the model APIs are: a base URL per provider (OpenAI's for Codex, Anthropic's for Claude
//! Code), kept in `CENTAUR_HOME/endpoints.json` and written, all at once, into what depends on
//! it: Codex's provider settings (`codex.toml`), the egress policy (the host allowed, allowed to
//! be private when it is, and the key bound to it) and Claude Code's `ANTHROPIC_BASE_URL`.
//!
//! Everything is checked before anything is written: a bad URL changes nothing.

use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::str::FromStr;

use centaur_protocol::egress::{HostPattern, Policy, PolicyError, SecretBinding};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::home::Home;
use super::setup::{MODEL_KEYS, ModelKey};
use centaur_client::private_file::{WriteError, write_atomic};

/// The model Codex asks for unless told otherwise. Codex 0.169.0's own default
/// (`gpt-6.1-sol`) sends its tools in a layout plain Responses endpoints do not expect; this
/// one gets the classic layout (`exec_command`, `write_stdin`, ...).
pub const DEFAULT_CODEX_MODEL: &str = "gpt-5.5";
pub const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";

/// A model API provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    /// The provider as people name it ("OpenAI").
    pub fn name(self) -> &'static str {
        match self {
            Provider::OpenAi => "OpenAI",
            Provider::Anthropic => "Anthropic",
        }
    }

    /// The secret (and the sandbox's variable with its placeholder) of this provider's key.
    pub fn secret(self) -> &'static str {
        self.key().secret
    }

    /// This provider's model key (its file, and the harness it is for).
    pub fn key(self) -> &'static ModelKey {
        MODEL_KEYS
            .iter()
            .find(|key| key.provider == self)
            .expect("every provider has a model key")
    }
}

/// How the OpenAI-compatible endpoint takes its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyHeader {
    /// `Authorization: Bearer KEY` (OpenAI, most gateways, vLLM, Ollama).
    #[default]
    Authorization,
    /// `api-key: KEY` (Azure OpenAI).
    ApiKey,
}

/// What `endpoints.json` holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    pub openai: OpenAiEndpoint,
    pub anthropic: AnthropicEndpoint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEndpoint {
    /// Codex POSTs to `{base_url}/responses`; a query (Azure's `api-version`) is kept.
    pub base_url: String,
    pub model: String,
    #[serde(default)]
    pub key_header: KeyHeader,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnthropicEndpoint {
    /// Claude Code's `ANTHROPIC_BASE_URL` (it adds `/v1/messages`).
    pub base_url: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            openai: OpenAiEndpoint {
                base_url: DEFAULT_OPENAI_BASE_URL.to_owned(),
                model: DEFAULT_CODEX_MODEL.to_owned(),
                key_header: KeyHeader::Authorization,
            },
            anthropic: AnthropicEndpoint {
                base_url: DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            },
        }
    }
}

/// Why an endpoint cannot be used, or its settings not written.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("the {} base URL `{url}` is not a URL ({reason}); give e.g. {example}", .provider.name())]
    NotUrl {
        provider: Provider,
        url: String,
        example: &'static str,
        reason: String,
    },
    #[error("the {} base URL `{url}` must start with http:// or https://", .provider.name())]
    Scheme { provider: Provider, url: String },
    #[error("the {} base URL `{url}` has no host", .provider.name())]
    NoHost { provider: Provider, url: String },
    #[error(
        "the {} base URL must not hold credentials: give the key with --{}-key-stdin, never in the URL",
        .provider.name(), if matches!(.provider, Provider::OpenAi) { "openai" } else { "anthropic" }
    )]
    Credentials { provider: Provider },
    #[error("the {} base URL `{url}` has a fragment (`#…`); leave it out", .provider.name())]
    Fragment { provider: Provider, url: String },
    #[error(
        "the Anthropic base URL `{0}` has a query; Claude Code cannot keep one: give the URL without `?…`"
    )]
    AnthropicQuery(String),
    #[error(
        "the Anthropic base URL `{0}` ends with /v1, which Claude Code adds itself: give it without /v1"
    )]
    AnthropicV1(String),
    #[error("the {} base URL's host `{host}` cannot be written in an egress policy: {reason}", .provider.name())]
    Host {
        provider: Provider,
        host: String,
        reason: String,
    },
    #[error(
        "the Codex model `{0}` is not a model name: letters, digits and `-._:/@` only, e.g. --codex-model {DEFAULT_CODEX_MODEL}"
    )]
    Model(String),
    #[error("cannot read {}: {source}; fix it or delete it (`centaur dev keys` writes a new one)", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid: {reason}; fix it or delete it (`centaur dev keys` writes a new one)", .path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("the egress policy would not be valid: {0}")]
    Policy(#[source] PolicyError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// A checked base URL: http(s), a host the policy can name, no credentials or fragment.
#[derive(Clone, Debug)]
struct BaseUrl {
    url: Url,
}

impl BaseUrl {
    fn parse(provider: Provider, text: &str) -> Result<BaseUrl, EndpointError> {
        let text = text.trim();
        let example = match provider {
            Provider::OpenAi => "https://gateway.example.com/v1",
            Provider::Anthropic => "https://gateway.example.com",
        };
        let url = Url::parse(text).map_err(|error| EndpointError::NotUrl {
            provider,
            url: text.to_owned(),
            example,
            reason: error.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EndpointError::Scheme {
                provider,
                url: text.to_owned(),
            });
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(EndpointError::NoHost {
                provider,
                url: text.to_owned(),
            });
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EndpointError::Credentials { provider });
        }
        if url.fragment().is_some() {
            return Err(EndpointError::Fragment {
                provider,
                url: text.to_owned(),
            });
        }
        let base = BaseUrl { url };
        if provider == Provider::Anthropic {
            if base.url.query().is_some() {
                return Err(EndpointError::AnthropicQuery(text.to_owned()));
            }
            if base.url.path().trim_end_matches('/').ends_with("/v1") {
                return Err(EndpointError::AnthropicV1(text.to_owned()));
            }
        }
        let pattern = base.pattern();
        HostPattern::from_str(&pattern).map_err(|error| EndpointError::Host {
            provider,
            host: pattern.clone(),
            reason: error.to_string(),
        })?;
        Ok(base)
    }

    /// `host:port` (the scheme's port when none is given), as the policy names it.
    fn pattern(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        let port = self.url.port_or_known_default().unwrap_or(443);
        format!("{host}:{port}")
    }

    fn host(&self) -> String {
        centaur_protocol::egress::host::normalize(self.url.host_str().unwrap_or_default())
    }

    /// How a policy may name this endpoint: `host` (any port) or `host:port`.
    fn patterns(&self) -> Vec<HostPattern> {
        [
            self.url.host_str().unwrap_or_default().to_owned(),
            self.pattern(),
        ]
        .iter()
        .filter_map(|p| HostPattern::from_str(p).ok())
        .collect()
    }

    /// Whether the host is (or resolves to) a loopback, private or otherwise not global
    /// address, which the proxy refuses unless the policy allows it (`allow_private`).
    fn private(&self) -> bool {
        let host = self.url.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.url.port_or_known_default().unwrap_or(443);
        (host, port)
            .to_socket_addrs()
            .map(|mut addresses| {
                addresses.any(|a| centaur_proxy::address::special(a.ip()).is_some())
            })
            .unwrap_or(false)
    }

    /// The URL without its query and trailing slash: Codex and Claude Code add their paths.
    fn without_query(&self) -> String {
        let mut url = self.url.clone();
        url.set_query(None);
        url.as_str().trim_end_matches('/').to_owned()
    }

    fn query_pairs(&self) -> Vec<(String, String)> {
        self.url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }
}

/// Whether `text` is a base URL `provider`'s harness can be pointed at.
pub fn check_base_url(provider: Provider, text: &str) -> Result<(), EndpointError> {
    BaseUrl::parse(provider, text).map(|_| ())
}

fn check_model(model: &str) -> Result<String, EndpointError> {
    let model = model.trim();
    let fine = !model.is_empty()
        && model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:/@".contains(c));
    if fine {
        Ok(model.to_owned())
    } else {
        Err(EndpointError::Model(model.to_owned()))
    }
}

/// What to change; `None` keeps the current value.
#[derive(Clone, Debug, Default)]
pub struct Change {
    pub openai_base_url: Option<String>,
    pub codex_model: Option<String>,
    pub openai_key_header: Option<KeyHeader>,
    pub anthropic_base_url: Option<String>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.openai_base_url.is_none()
            && self.codex_model.is_none()
            && self.openai_key_header.is_none()
            && self.anthropic_base_url.is_none()
    }
}

impl Endpoints {
    /// `endpoints.json`, or the providers' own APIs when there is none.
    pub fn read(home: &Home) -> Result<Endpoints, EndpointError> {
        let path = home.endpoints();
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).map_err(|error| EndpointError::Invalid {
                path,
                reason: error.to_string(),
            }),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Endpoints::default()),
            Err(source) => Err(EndpointError::Read { path, source }),
        }
    }

    /// These endpoints with `change` applied, every value checked.
    pub fn changed(&self, change: &Change) -> Result<Endpoints, EndpointError> {
        let mut next = self.clone();
        if let Some(url) = &change.openai_base_url {
            next.openai.base_url = BaseUrl::parse(Provider::OpenAi, url)?.url.to_string();
        }
        if let Some(model) = &change.codex_model {
            next.openai.model = check_model(model)?;
        }
        if let Some(header) = change.openai_key_header {
            next.openai.key_header = header;
        }
        if let Some(url) = &change.anthropic_base_url {
            next.anthropic.base_url = BaseUrl::parse(Provider::Anthropic, url)?.url.to_string();
        }
        // Values from an edited file are checked too.
        BaseUrl::parse(Provider::OpenAi, &next.openai.base_url)?;
        BaseUrl::parse(Provider::Anthropic, &next.anthropic.base_url)?;
        check_model(&next.openai.model)?;
        Ok(next)
    }

    /// Claude Code's `ANTHROPIC_BASE_URL` for sandboxes, unless it is Anthropic's own API.
    pub fn anthropic_base_url(&self) -> Option<String> {
        let url = BaseUrl::parse(Provider::Anthropic, &self.anthropic.base_url).ok()?;
        let default = BaseUrl::parse(Provider::Anthropic, DEFAULT_ANTHROPIC_BASE_URL).ok()?;
        (url.without_query() != default.without_query()).then(|| url.without_query())
    }

    /// The harness settings file's content: Claude Code's base URL when it is not Anthropic's
    /// own API.
    pub fn harness_env(&self) -> String {
        let mut text = String::from(
            "# Written by `centaur dev keys`; read again by the server when it changes.\n",
        );
        if let Some(url) = self.anthropic_base_url() {
            text.push_str(&format!("ANTHROPIC_BASE_URL={url}\n"));
        }
        text
    }

    /// Codex's `config.toml`: a provider of its own (the built-in `openai` one cannot be
    /// pointed elsewhere) whose key is the sandbox's placeholder variable.
    pub fn codex_config(&self) -> String {
        let url = BaseUrl::parse(Provider::OpenAi, &self.openai.base_url)
            .expect("endpoints are checked before they are used");
        let secret = Provider::OpenAi.secret();
        let mut text = format!(
            "# Written by `centaur dev keys`; a running stack gives it to the next new thread.\n\
             model = {model}\n\
             model_provider = \"centaur\"\n\n\
             [model_providers.centaur]\n\
             name = {name}\n\
             base_url = {base_url}\n\
             wire_api = \"responses\"\n",
            model = toml_string(&self.openai.model),
            name = toml_string(&format!("{} (through the Centaur proxy)", url.host())),
            base_url = toml_string(&url.without_query()),
        );
        match self.openai.key_header {
            KeyHeader::Authorization => text.push_str(&format!("env_key = \"{secret}\"\n")),
            KeyHeader::ApiKey => text.push_str(&format!(
                "env_http_headers = {{ \"api-key\" = \"{secret}\" }}\n"
            )),
        }
        let query = url.query_pairs();
        if !query.is_empty() {
            let pairs: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                .collect();
            text.push_str(&format!("query_params = {{ {} }}\n", pairs.join(", ")));
        }
        text.push_str(
            "request_max_retries = 4\n\
             stream_max_retries = 5\n\
             supports_websockets = false\n",
        );
        text
    }

    /// `policy` with each provider's host allowed (and allowed to be private when it is) and
    /// its key bound there, and what `previous` allowed for them taken out.
    pub fn apply_to(&self, previous: &Endpoints, policy: &mut Policy) -> Result<(), EndpointError> {
        let parse = |provider, text: &str| BaseUrl::parse(provider, text);
        let now = [
            (
                Provider::OpenAi,
                parse(Provider::OpenAi, &self.openai.base_url)?,
            ),
            (
                Provider::Anthropic,
                parse(Provider::Anthropic, &self.anthropic.base_url)?,
            ),
        ];
        let before = [
            parse(Provider::OpenAi, &previous.openai.base_url).ok(),
            parse(Provider::Anthropic, &previous.anthropic.base_url).ok(),
        ];
        // What the previous endpoints were allowed as: `host` or `host:port`.
        // Those, and the current ones in either form, are taken out, then the current ones put
        // back as `host:port`.
        let stale: Vec<HostPattern> = before
            .iter()
            .flatten()
            .chain(now.iter().map(|(_, url)| url))
            .flat_map(BaseUrl::patterns)
            .collect();
        let is_stale = |p: &HostPattern| stale.contains(p);
        policy.allow.retain(|p| !is_stale(p));
        policy.allow_private.retain(|p| !is_stale(p));
        for (provider, url) in &now {
            let pattern =
                HostPattern::from_str(&url.pattern()).map_err(|error| EndpointError::Host {
                    provider: *provider,
                    host: url.pattern(),
                    reason: error.to_string(),
                })?;
            if !policy.allow.contains(&pattern) {
                policy.allow.push(pattern.clone());
            }
            if url.private() && !policy.allow_private.contains(&pattern) {
                policy.allow_private.push(pattern.clone());
            }
            let (headers, format) = match (provider, self.openai.key_header) {
                (Provider::OpenAi, KeyHeader::Authorization) => (
                    vec!["authorization".to_owned()],
                    Some("Bearer {value}".to_owned()),
                ),
                (Provider::OpenAi, KeyHeader::ApiKey) => (vec!["api-key".to_owned()], None),
                (Provider::Anthropic, _) => (vec!["x-api-key".to_owned()], None),
            };
            let binding = SecretBinding {
                name: provider.secret().to_owned(),
                hosts: vec![pattern],
                headers,
                query_param: None,
                format,
            };
            match policy.secrets.iter_mut().find(|b| b.name == binding.name) {
                Some(existing) => *existing = binding,
                None => policy.secrets.push(binding),
            }
        }
        policy
            .validate(|name| MODEL_KEYS.iter().any(|k| k.secret == name))
            .map_err(EndpointError::Policy)
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The egress policy in the home, or the one a new home starts with.
pub fn read_policy(home: &Home) -> Result<Policy, EndpointError> {
    let path = home.egress_policy();
    let text = std::fs::read_to_string(&path).map_err(|source| EndpointError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|error| EndpointError::Invalid {
        path,
        reason: error.to_string(),
    })
}

/// Writes `next` (already checked) into `endpoints.json`, `codex.toml` and the egress policy.
/// Everything is computed first, so a failure before the first write changes nothing; each
/// file is replaced atomically, so a running stack reads either the old one or the new one.
pub fn save(home: &Home, next: &Endpoints) -> Result<(), EndpointError> {
    let previous = Endpoints::read(home).unwrap_or_default();
    let mut policy = read_policy(home)?;
    next.apply_to(&previous, &mut policy)?;
    let policy = serde_json::to_string_pretty(&policy).expect("a policy serializes") + "\n";
    let endpoints = serde_json::to_string_pretty(next).expect("endpoints serialize") + "\n";
    let codex = next.codex_config();
    write_atomic(&home.endpoints(), &endpoints)?;
    write_atomic(&home.codex_config(), &codex)?;
    write_atomic(&home.harness_env(), &next.harness_env())?;
    write_atomic(&home.egress_policy(), &policy)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Policy {
        serde_json::from_value(json).unwrap()
    }

    fn change(openai: Option<&str>, anthropic: Option<&str>) -> Change {
        Change {
            openai_base_url: openai.map(str::to_owned),
            anthropic_base_url: anthropic.map(str::to_owned),
            ..Change::default()
        }
    }

    /// A local endpoint replaces OpenAI's API in the policy: allowed and private with its
    /// port, the key bound there alone, and api.openai.com no longer allowed; the registries
    /// and Anthropic stay.
    #[test]
    fn a_local_endpoint_is_allowed_private_and_gets_the_key() {
        let mut current = policy(serde_json::json!({
            "allow": ["api.openai.com", "api.anthropic.com", "pypi.org"],
            "secrets": [
                {"name": "OPENAI_API_KEY", "hosts": ["api.openai.com"],
                 "headers": ["authorization"], "format": "Bearer {value}"},
                {"name": "ANTHROPIC_API_KEY", "hosts": ["api.anthropic.com"], "headers": ["x-api-key"]}
            ]
        }));
        let before = Endpoints::default();
        let next = before
            .changed(&change(Some("http://127.0.0.1:8000/v1"), None))
            .unwrap();
        next.apply_to(&before, &mut current).unwrap();
        let names = |list: &[HostPattern]| list.iter().map(|p| p.to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(&current.allow),
            ["pypi.org", "127.0.0.1:8000", "api.anthropic.com:443"]
        );
        assert_eq!(names(&current.allow_private), ["127.0.0.1:8000"]);
        assert_eq!(names(&current.secrets[0].hosts), ["127.0.0.1:8000"]);
        assert_eq!(current.secrets[0].format.as_deref(), Some("Bearer {value}"));

        // Back to OpenAI: the local endpoint is gone from every list.
        let again = next
            .changed(&change(Some(DEFAULT_OPENAI_BASE_URL), None))
            .unwrap();
        again.apply_to(&next, &mut current).unwrap();
        assert_eq!(
            names(&current.allow),
            ["pypi.org", "api.openai.com:443", "api.anthropic.com:443"]
        );
        assert!(current.allow_private.is_empty());
        assert_eq!(names(&current.secrets[0].hosts), ["api.openai.com:443"]);
    }

    /// Azure: the key goes in `api-key`, the query becomes Codex's `query_params`.
    #[test]
    fn azure_takes_its_key_in_api_key_and_keeps_its_api_version() {
        let next = Endpoints::default()
            .changed(&Change {
                openai_base_url: Some(
                    "https://acme.openai.azure.com/openai/v1?api-version=preview".into(),
                ),
                codex_model: Some("my-deployment".into()),
                openai_key_header: Some(KeyHeader::ApiKey),
                anthropic_base_url: None,
            })
            .unwrap();
        let config = next.codex_config();
        assert!(config.contains("model = \"my-deployment\""), "{config}");
        assert!(
            config.contains("base_url = \"https://acme.openai.azure.com/openai/v1\""),
            "{config}"
        );
        assert!(
            config.contains("query_params = { \"api-version\" = \"preview\" }"),
            "{config}"
        );
        assert!(
            config.contains("env_http_headers = { \"api-key\" = \"OPENAI_API_KEY\" }"),
            "{config}"
        );
        assert!(!config.contains("env_key"), "{config}");
        let mut current = Policy::default();
        next.apply_to(&Endpoints::default(), &mut current).unwrap();
        assert_eq!(current.secrets[0].headers, ["api-key"]);
        assert_eq!(current.secrets[0].format, None);
    }

    #[test]
    fn bad_urls_and_models_are_refused_with_the_reason() {
        let refused = |openai: Option<&str>, anthropic: Option<&str>| {
            Endpoints::default()
                .changed(&change(openai, anthropic))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(Some("gateway.example.com/v1"), None).contains("not a URL"));
        assert!(refused(Some("ftp://gateway.example.com/v1"), None).contains("http://"));
        assert!(
            refused(Some("https://user:pw@gateway.example.com/v1"), None).contains("credentials")
        );
        assert!(refused(None, Some("https://gateway.example.com/v1")).contains("without /v1"));
        assert!(refused(None, Some("https://gateway.example.com/?a=b")).contains("query"));
        let model = Endpoints::default()
            .changed(&Change {
                codex_model: Some("gpt \"5\"".into()),
                ..Change::default()
            })
            .unwrap_err();
        assert!(model.to_string().contains("not a model name"), "{model}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }
}
