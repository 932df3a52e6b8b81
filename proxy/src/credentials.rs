//! Placeholders and the swap. A sandbox never holds a credential: it holds a placeholder that
//! is unique to it and the secret (`cph_` + 40 hex, derived from the proxy's key, so it cannot
//! be guessed or reused by another sandbox). The proxy replaces a placeholder with the real
//! value only on a host the secret is bound to and only in a header (or query parameter) it is
//! bound to. A placeholder in another header, query parameter or host's header or query, in
//! the path, or one that is not this sandbox's there, blocks the request as an attempted leak.
//! Request bodies are never swapped into: a placeholder there (an agent's `env` output sent
//! back to the model) is forwarded unchanged and named in the audit, since it is worthless
//! outside the proxy and refusing it would break every later turn of the thread.
//! Responses are scrubbed: a real value echoed back is replaced by its placeholder.

pub use centaur_protocol::egress::SecretBinding;
use hyper::HeaderMap;
use hyper::header::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

pub const PLACEHOLDER_PREFIX: &str = "cph_";
const PLACEHOLDER_HEX: usize = 40;
pub const PLACEHOLDER_LEN: usize = PLACEHOLDER_PREFIX.len() + PLACEHOLDER_HEX;

/// SHA-256 over `domain`, the proxy's key and `parts` (each after a NUL), as hex.
fn keyed_hex(domain: &[u8], proxy_key: &[u8], parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(domain);
    hasher.update(proxy_key);
    for part in parts {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The placeholder sandbox `sandbox_id` sees for secret `name`.
pub fn placeholder(proxy_key: &[u8], sandbox_id: &str, name: &str) -> String {
    let hex = keyed_hex(b"centaur-placeholder-v1\0", proxy_key, &[sandbox_id, name]);
    format!("{PLACEHOLDER_PREFIX}{}", &hex[..PLACEHOLDER_HEX])
}

/// A secret derived from the proxy's key for one purpose and one sandbox (64 hex digits).
pub fn derive_secret(proxy_key: &[u8], purpose: &str, sandbox_id: &str) -> String {
    keyed_hex(b"centaur-derived-v1\0", proxy_key, &[purpose, sandbox_id])
}

/// Every placeholder-shaped token in `text`, whoever it belongs to.
pub fn placeholders_in(text: &[u8]) -> Vec<&str> {
    let mut found = Vec::new();
    let prefix = PLACEHOLDER_PREFIX.as_bytes();
    let mut i = 0;
    while i + PLACEHOLDER_LEN <= text.len() {
        if &text[i..i + prefix.len()] == prefix
            && text[i + prefix.len()..i + PLACEHOLDER_LEN]
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        {
            found.push(std::str::from_utf8(&text[i..i + PLACEHOLDER_LEN]).expect("ascii"));
            i += PLACEHOLDER_LEN;
        } else {
            i += 1;
        }
    }
    found
}

/// A sandbox's secret as the swap sees it: binding, placeholder, and the real value.
#[derive(Clone)]
pub struct Credential {
    pub binding: SecretBinding,
    pub placeholder: String,
    pub value: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.binding.name)
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// A placeholder where it may not go. Carries names, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "placeholder for {secret} found in {location} of a request to {host}, where it is not bound"
)]
pub struct Leak {
    /// The secret's name, or `unknown placeholder` for one that is not this sandbox's.
    pub secret: String,
    pub location: String,
    pub host: String,
}

/// Rewrites a request's headers and query for `host:port`. Returns the new query (if it
/// changed) and the names of the secrets swapped in.
pub fn swap_request(
    credentials: &[Credential],
    host: &str,
    port: u16,
    path: &str,
    query: Option<&str>,
    headers: &mut HeaderMap,
) -> Result<(Option<String>, Vec<String>), Leak> {
    let swap = Swap {
        credentials,
        host,
        port,
    };
    swap.check_path(path)?;
    let mut swapped = Vec::new();
    swap.headers(headers, &mut swapped)?;
    let new_query = match query {
        Some(query) if !placeholders_in(query.as_bytes()).is_empty() => {
            Some(swap.query(query, &mut swapped)?)
        }
        Some(_) | None => None,
    };
    swapped.sort();
    swapped.dedup();
    Ok((new_query, swapped))
}

/// One request's swap: the sandbox's credentials, for `host:port`.
struct Swap<'a> {
    credentials: &'a [Credential],
    host: &'a str,
    port: u16,
}

impl<'a> Swap<'a> {
    fn leak(&self, secret: &str, location: String) -> Leak {
        Leak {
            secret: secret.to_owned(),
            location,
            host: self.host.to_owned(),
        }
    }

    /// This sandbox's credential with `placeholder`.
    fn find(&self, placeholder: &str) -> Option<&'a Credential> {
        self.credentials
            .iter()
            .find(|c| c.placeholder == placeholder)
    }

    /// The secret's name for a leak report, whoever's placeholder it is.
    fn name_of(&self, placeholder: &str) -> &'a str {
        self.find(placeholder)
            .map_or("unknown placeholder", |c| &c.binding.name)
    }

    fn bound_here(&self, credential: &Credential) -> bool {
        credential
            .binding
            .hosts
            .iter()
            .any(|p| p.matches(self.host, self.port))
    }

    /// No placeholder travels in a URL path.
    fn check_path(&self, path: &str) -> Result<(), Leak> {
        match placeholders_in(path.as_bytes()).first() {
            Some(found) => Err(self.leak(self.name_of(found), "the URL path".into())),
            None => Ok(()),
        }
    }

    /// Swaps placeholders in the headers they are bound to; adds the names of the secrets
    /// swapped in to `swapped`.
    fn headers(&self, headers: &mut HeaderMap, swapped: &mut Vec<String>) -> Result<(), Leak> {
        // Every value of a header name, rewritten or not, in order: duplicates are kept.
        let mut rewritten: Vec<(HeaderName, Vec<HeaderValue>)> = Vec::new();
        let mut names: Vec<HeaderName> = headers.keys().cloned().collect();
        names.dedup();
        for name in names {
            let mut values = Vec::new();
            let mut changed = false;
            for value in headers.get_all(&name) {
                let found = placeholders_in(value.as_bytes());
                if found.is_empty() {
                    values.push(value.clone());
                    continue;
                }
                changed = true;
                values.push(self.header_value(&name, value, found, swapped)?);
            }
            if changed {
                rewritten.push((name, values));
            }
        }
        for (name, values) in rewritten {
            headers.remove(&name);
            for value in values {
                headers.append(name.clone(), value);
            }
        }
        Ok(())
    }

    /// One header value with the placeholders `found` in it swapped.
    fn header_value(
        &self,
        name: &HeaderName,
        value: &HeaderValue,
        found: Vec<&str>,
        swapped: &mut Vec<String>,
    ) -> Result<HeaderValue, Leak> {
        let mut text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        for placeholder in found {
            let Some(credential) = self.find(placeholder) else {
                return Err(self.leak("unknown placeholder", format!("header `{name}`")));
            };
            let header_bound = credential
                .binding
                .headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name.as_str()));
            if !(header_bound && self.bound_here(credential)) {
                return Err(self.leak(&credential.binding.name, format!("header `{name}`")));
            }
            text = match &credential.binding.format {
                Some(format) => format.replace("{value}", &credential.value),
                None => text.replace(placeholder, &credential.value),
            };
            swapped.push(credential.binding.name.clone());
        }
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| self.leak(&swapped[swapped.len() - 1], format!("header `{name}`")))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// The query with placeholders swapped in the parameters they are bound to; adds the names
    /// of the secrets swapped in to `swapped`.
    fn query(&self, query: &str, swapped: &mut Vec<String>) -> Result<String, Leak> {
        let mut pairs = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let found = placeholders_in(value.as_bytes());
            if let Some(found) = placeholders_in(key.as_bytes()).first() {
                return Err(self.leak(self.name_of(found), "a query parameter name".into()));
            }
            let mut value = value.to_owned();
            for placeholder in found {
                let Some(credential) = self.find(placeholder) else {
                    return Err(
                        self.leak("unknown placeholder", format!("query parameter `{key}`"))
                    );
                };
                if credential.binding.query_param.as_deref() != Some(key)
                    || !self.bound_here(credential)
                {
                    return Err(
                        self.leak(&credential.binding.name, format!("query parameter `{key}`"))
                    );
                }
                value = value.replace(placeholder, &percent_encode(&credential.value, false));
                swapped.push(credential.binding.name.clone());
            }
            pairs.push(if pair.contains('=') {
                format!("{key}={value}")
            } else {
                key.to_owned()
            });
        }
        Ok(pairs.join("&"))
    }
}

/// The placeholders a request body carries. Bodies are forwarded as the sandbox sent them:
/// never swapped into (so a real value never enters one) and never refused for placeholders (a
/// placeholder is worthless outside this proxy, and a thread whose history holds one, say from
/// `env`, must keep working). What they carry is audited by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BodyPlaceholders {
    /// The names of this sandbox's secrets whose placeholders appear, sorted, once each.
    pub secrets: Vec<String>,
    /// Placeholder-shaped tokens that are not this sandbox's.
    pub unknown: u32,
}

/// What placeholders `body` (plain bytes, as sent) carries, by the sandbox's `credentials`.
pub fn body_placeholders(credentials: &[Credential], body: &[u8]) -> BodyPlaceholders {
    let mut found = BodyPlaceholders::default();
    for token in placeholders_in(body) {
        match credentials.iter().find(|c| c.placeholder == token) {
            Some(credential) => found.secrets.push(credential.binding.name.clone()),
            None => found.unknown = found.unknown.saturating_add(1),
        }
    }
    found.secrets.sort();
    found.secrets.dedup();
    found
}

/// `value` with everything but unreserved characters as `%XX` (`%xx` with `lowercase`).
fn percent_encode(value: &str, lowercase: bool) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ if lowercase => format!("%{b:02x}"),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Replaces real secret values in a response stream with their placeholders, also across chunk
/// boundaries: the last `longest - 1` bytes are held back until the next chunk (or the end).
pub struct Scrubber {
    /// Each form of each value (see [`Scrubber::new`]) and the placeholder that replaces it,
    /// longest first.
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    /// The same forms in lower case, for header names (which arrive lowercased).
    name_pairs: Vec<(Vec<u8>, Vec<u8>)>,
    longest: usize,
    carry: Vec<u8>,
    pub replaced: usize,
}

/// Values shorter than this are not scrubbed (they would match ordinary text).
const MIN_SCRUB_LEN: usize = 8;

impl Scrubber {
    pub fn new(credentials: &[Credential]) -> Self {
        // The value as sent, and as upstreams echo it back: percent-encoded (URLs, `Location`)
        // and JSON-escaped. Longest first, so a value that extends another is caught whole.
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for c in credentials
            .iter()
            .filter(|c| c.value.len() >= MIN_SCRUB_LEN)
        {
            let json = serde_json::to_string(&c.value).expect("a string serialises");
            let forms = [
                c.value.clone(),
                percent_encode(&c.value, false),
                percent_encode(&c.value, true),
                json[1..json.len() - 1].to_owned(),
            ];
            for form in forms {
                let form = form.into_bytes();
                if !pairs.iter().any(|(v, _)| *v == form) {
                    pairs.push((form, c.placeholder.clone().into_bytes()));
                }
            }
        }
        pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        let mut name_pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (value, placeholder) in &pairs {
            let lower = value.to_ascii_lowercase();
            if !name_pairs.iter().any(|(v, _)| *v == lower) {
                name_pairs.push((lower, placeholder.clone()));
            }
        }
        let longest = pairs.iter().map(|(v, _)| v.len()).max().unwrap_or(0);
        Scrubber {
            pairs,
            name_pairs,
            longest,
            carry: Vec::new(),
            replaced: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Scrubs a chunk; returns what can be sent now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(chunk);
        let cut = data.len().saturating_sub(self.longest.saturating_sub(1));
        let (out, rest_from) = self.scrub(&data, cut);
        self.carry = data[rest_from..].to_vec();
        out
    }

    /// The held-back tail, scrubbed, at the end of the stream.
    pub fn finish(&mut self) -> Vec<u8> {
        let data = std::mem::take(&mut self.carry);
        let (out, _) = self.scrub(&data, data.len());
        out
    }

    /// Scrubs a piece that stands alone (a WebSocket control frame's payload), without touching
    /// what a stream holds back.
    pub fn scrub_whole(&mut self, data: &[u8]) -> Vec<u8> {
        let (out, _, replaced) = replace_forms(&self.pairs, data, data.len());
        self.replaced += replaced;
        out
    }

    /// Scrubs matches that start before `cut`; returns the output and where the unprocessed
    /// rest begins.
    fn scrub(&mut self, data: &[u8], cut: usize) -> (Vec<u8>, usize) {
        let (out, rest_from, replaced) = replace_forms(&self.pairs, data, cut);
        self.replaced += replaced;
        (out, rest_from)
    }

    /// Scrubs response headers (or trailers) in place, names and values; returns how many
    /// echoes were replaced. A header named after a value is renamed after its placeholder. A
    /// header that would no longer be valid is dropped, never passed on unscrubbed.
    pub fn scrub_headers(&mut self, headers: &mut HeaderMap) -> usize {
        let before = self.replaced;
        let mut name = None;
        for (next_name, value) in std::mem::take(headers) {
            // `None` continues the previous name (a header with several values).
            if let Some(next_name) = next_name {
                name = self.scrub_name(next_name);
            }
            if let (Some(name), Some(value)) = (&name, self.scrub_value(value)) {
                headers.append(name.clone(), value);
            }
        }
        self.replaced - before
    }

    /// A header name with any (lowercased) value replaced, or `None` to drop the header.
    fn scrub_name(&mut self, name: HeaderName) -> Option<HeaderName> {
        let bytes = name.as_str().as_bytes();
        if !contains_any(&self.name_pairs, bytes) {
            return Some(name);
        }
        let (out, _, replaced) = replace_forms(&self.name_pairs, bytes, bytes.len());
        self.replaced += replaced;
        HeaderName::from_bytes(&out).ok()
    }

    /// A header value with any value replaced, or `None` to drop it.
    fn scrub_value(&mut self, value: HeaderValue) -> Option<HeaderValue> {
        let bytes = value.as_bytes();
        if !contains_any(&self.pairs, bytes) {
            return Some(value);
        }
        let (out, _) = self.scrub(bytes, bytes.len());
        let mut scrubbed = HeaderValue::from_bytes(&out).ok()?;
        scrubbed.set_sensitive(value.is_sensitive());
        Some(scrubbed)
    }
}

/// Whether `data` holds any of the `forms`.
fn contains_any(forms: &[(Vec<u8>, Vec<u8>)], data: &[u8]) -> bool {
    forms
        .iter()
        .any(|(form, _)| data.windows(form.len()).any(|w| w == form.as_slice()))
}

/// Replaces each of the `forms` that starts before `cut` in `data` by its placeholder; returns
/// the output, where the unprocessed rest begins, and how many were replaced.
fn replace_forms(forms: &[(Vec<u8>, Vec<u8>)], data: &[u8], cut: usize) -> (Vec<u8>, usize, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut replaced = 0;
    let mut i = 0;
    'scan: while i < cut {
        for (form, placeholder) in forms {
            if data[i..].starts_with(form) {
                out.extend_from_slice(placeholder);
                i += form.len();
                replaced += 1;
                continue 'scan;
            }
        }
        out.push(data[i]);
        i += 1;
    }
    (out, i, replaced)
}

/// The codings a response body is wrapped in that the scrubber cannot see through, as one
/// readable list (empty when there are none): every `Content-Encoding` header and every item of
/// its comma lists but `identity`, and every `Transfer-Encoding` but `chunked` (which hyper
/// takes off) and `identity`. A value that is not text counts as an unknown coding.
pub fn opaque_codings(headers: &HeaderMap) -> String {
    let mut opaque: Vec<String> = Vec::new();
    let mut collect = |name: HeaderName, readable: &[&str]| {
        for value in headers.get_all(&name) {
            let Ok(text) = value.to_str() else {
                opaque.push(format!("a {name} that is not text"));
                continue;
            };
            for coding in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !readable.iter().any(|r| r.eq_ignore_ascii_case(coding)) {
                    opaque.push(coding.to_ascii_lowercase());
                }
            }
        }
    };
    collect(hyper::header::CONTENT_ENCODING, &["identity"]);
    collect(hyper::header::TRANSFER_ENCODING, &["chunked", "identity"]);
    opaque.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(
        name: &str,
        hosts: &[&str],
        headers: &[&str],
        format: Option<&str>,
        value: &str,
    ) -> Credential {
        Credential {
            binding: SecretBinding {
                name: name.into(),
                hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
                headers: headers.iter().map(|h| h.to_string()).collect(),
                query_param: Some("key".into()),
                format: format.map(str::to_owned),
            },
            placeholder: placeholder(b"k", "sb1", name),
            value: value.into(),
        }
    }

    #[test]
    fn placeholders_are_unique_per_sandbox_and_secret() {
        let a = placeholder(b"key", "sandbox-a", "OPENAI");
        assert_eq!(a.len(), PLACEHOLDER_LEN);
        assert_eq!(a, placeholder(b"key", "sandbox-a", "OPENAI"));
        assert_ne!(a, placeholder(b"key", "sandbox-b", "OPENAI"));
        assert_ne!(a, placeholder(b"key", "sandbox-a", "GITHUB"));
        assert_ne!(a, placeholder(b"other", "sandbox-a", "OPENAI"));
        assert_eq!(placeholders_in(format!("x {a} y").as_bytes()), [a.as_str()]);
        assert!(placeholders_in(b"cph_123").is_empty());
    }

    #[test]
    fn swaps_only_in_bound_headers_on_bound_hosts() {
        let openai = credential(
            "OPENAI",
            &["api.openai.com"],
            &["authorization"],
            Some("Bearer {value}"),
            "sk-real-123456",
        );
        let creds = [openai.clone()];
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {}", openai.placeholder).parse().unwrap(),
        );
        let (query, swapped) = swap_request(
            &creds,
            "api.openai.com",
            443,
            "/v1/responses",
            None,
            &mut headers,
        )
        .unwrap();
        assert_eq!(headers["authorization"], "Bearer sk-real-123456");
        assert!(headers["authorization"].is_sensitive());
        assert_eq!(swapped, ["OPENAI"]);
        assert_eq!(query, None);

        // Another host.
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            format!("Bearer {}", openai.placeholder).parse().unwrap(),
        );
        let leak = swap_request(&creds, "evil.example", 443, "/", None, &mut headers).unwrap_err();
        assert_eq!(leak.secret, "OPENAI");
        assert_eq!(leak.host, "evil.example");
        // Another header on the right host.
        let mut headers = HeaderMap::new();
        headers.insert("x-smuggle", openai.placeholder.parse().unwrap());
        let leak =
            swap_request(&creds, "api.openai.com", 443, "/", None, &mut headers).unwrap_err();
        assert_eq!(leak.location, "header `x-smuggle`");
        // The path.
        let leak = swap_request(
            &creds,
            "api.openai.com",
            443,
            &format!("/{}", openai.placeholder),
            None,
            &mut HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(leak.location, "the URL path");
        // A placeholder that is not this sandbox's.
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            placeholder(b"k", "sb2", "OPENAI").parse().unwrap(),
        );
        let leak =
            swap_request(&creds, "api.openai.com", 443, "/", None, &mut headers).unwrap_err();
        assert_eq!(leak.secret, "unknown placeholder");
        assert!(
            !leak.to_string().contains("sk-real"),
            "a leak never names the value"
        );
    }

    #[test]
    fn swaps_a_bound_query_parameter() {
        let maps = credential("MAPS", &["maps.example.com"], &[], None, "a b&c");
        let creds = [maps.clone()];
        let query = format!("q=1&key={}", maps.placeholder);
        let (query, swapped) = swap_request(
            &creds,
            "maps.example.com",
            443,
            "/",
            Some(&query),
            &mut HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(query.as_deref(), Some("q=1&key=a%20b%26c"));
        assert_eq!(swapped, ["MAPS"]);
        let other = format!("token={}", maps.placeholder);
        let leak = swap_request(
            &creds,
            "maps.example.com",
            443,
            "/",
            Some(&other),
            &mut HeaderMap::new(),
        )
        .unwrap_err();
        assert_eq!(leak.location, "query parameter `token`");
    }

    #[test]
    fn encoded_echoes_are_scrubbed_too() {
        let c = credential(
            "KEY",
            &["a.example"],
            &["authorization"],
            None,
            "sk+real/value=1",
        );
        let mut scrubber = Scrubber::new(std::slice::from_ref(&c));
        let echo = "raw sk+real/value=1, url sk%2Breal%2Fvalue%3D1, lower sk%2breal%2fvalue%3d1";
        let mut out = scrubber.push(echo.as_bytes());
        out.extend(scrubber.finish());
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("real"), "{out}");
        assert_eq!(scrubber.replaced, 3);
    }

    #[test]
    fn duplicate_header_values_survive_a_swap() {
        let c = credential("KEY", &["a.example"], &["x-key"], None, "sk-real-123456");
        let mut headers = HeaderMap::new();
        headers.append("x-key", c.placeholder.parse().unwrap());
        headers.append("x-key", "second".parse().unwrap());
        headers.append("cookie", "a=1".parse().unwrap());
        headers.append("cookie", "b=2".parse().unwrap());
        swap_request(
            std::slice::from_ref(&c),
            "a.example",
            443,
            "/",
            None,
            &mut headers,
        )
        .unwrap();
        let keys: Vec<_> = headers.get_all("x-key").iter().collect();
        assert_eq!(keys, ["sk-real-123456", "second"]);
        assert_eq!(headers.get_all("cookie").iter().count(), 2);
    }

    #[test]
    fn body_placeholders_are_named_never_refused() {
        let c = credential(
            "OPENAI",
            &["api.openai.com"],
            &["authorization"],
            None,
            "sk-real-123456",
        );
        let creds = std::slice::from_ref(&c);
        assert_eq!(
            body_placeholders(creds, b"{\"ok\":1}"),
            BodyPlaceholders::default()
        );
        let foreign = placeholder(b"k", "sb2", "OPENAI");
        let body = format!(
            "{{\"env\":\"OPENAI={p}\\nAGAIN={p}\\nOLD={foreign}\"}}",
            p = c.placeholder
        );
        assert_eq!(
            body_placeholders(creds, body.as_bytes()),
            BodyPlaceholders {
                secrets: vec!["OPENAI".into()],
                unknown: 1
            }
        );
    }

    #[test]
    fn scrubs_echoed_values_across_chunk_boundaries() {
        let c = credential(
            "OPENAI",
            &["api.openai.com"],
            &["authorization"],
            None,
            "sk-real-123456",
        );
        let whole = "you sent sk-real-123456 and sk-real-123456!".to_string();
        let expected = whole.replace("sk-real-123456", &c.placeholder);
        for split in 0..whole.len() {
            let mut scrubber = Scrubber::new(std::slice::from_ref(&c));
            let mut out = scrubber.push(&whole.as_bytes()[..split]);
            out.extend(scrubber.push(&whole.as_bytes()[split..]));
            out.extend(scrubber.finish());
            assert_eq!(
                String::from_utf8(out).unwrap(),
                expected,
                "split at {split}"
            );
            assert_eq!(scrubber.replaced, 2);
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", "key=sk-real-123456".parse().unwrap());
        let mut scrubber = Scrubber::new(std::slice::from_ref(&c));
        assert_eq!(scrubber.scrub_headers(&mut headers), 1);
        assert_eq!(headers["x-echo"], format!("key={}", c.placeholder));
    }

    #[test]
    fn header_names_are_scrubbed_whatever_their_case() {
        let c = credential("KEY", &["a.example"], &["x-key"], None, "Sk-Real-ABC123");
        let mut headers = HeaderMap::new();
        // HTTP/1.1 names arrive lowercased, whatever case the upstream wrote.
        headers.append("sk-real-abc123", "1".parse().unwrap());
        headers.append("x-sk-real-abc123-b", "Sk-Real-ABC123".parse().unwrap());
        headers.append("x-sk-real-abc123-b", "second".parse().unwrap());
        headers.append("x-other", "kept".parse().unwrap());
        let mut scrubber = Scrubber::new(std::slice::from_ref(&c));
        assert_eq!(scrubber.scrub_headers(&mut headers), 3);
        let names: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        let renamed = format!("x-{}-b", c.placeholder);
        assert_eq!(names, [c.placeholder.as_str(), renamed.as_str(), "x-other"]);
        let values: Vec<_> = headers.get_all(&renamed).iter().collect();
        assert_eq!(values, [c.placeholder.as_str(), "second"]);
    }

    #[test]
    fn every_coding_the_scrubber_cannot_read_is_named() {
        let mut headers = HeaderMap::new();
        assert_eq!(opaque_codings(&headers), "");
        headers.append("content-encoding", "identity".parse().unwrap());
        headers.append("transfer-encoding", "chunked".parse().unwrap());
        assert_eq!(opaque_codings(&headers), "");
        headers.append("content-encoding", "Identity, GZIP".parse().unwrap());
        headers.append("content-encoding", "br".parse().unwrap());
        headers.append("transfer-encoding", "deflate, chunked".parse().unwrap());
        assert_eq!(opaque_codings(&headers), "gzip, br, deflate");
    }
}
