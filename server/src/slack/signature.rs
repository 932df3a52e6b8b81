//! Slack's v0 request signatures: HMAC-SHA256 over `v0:{timestamp}:{raw body}` with the signing
//! secret, lowercase hex, `v0=` in front, compared in constant time; a timestamp more than five
//! minutes from now is refused (a replay).

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// `X-Slack-Signature`: `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-slack-signature";
/// `X-Slack-Request-Timestamp`: unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
/// How far a request's timestamp may be from now, either way.
pub const MAX_SKEW_SECS: i64 = 300;

/// Why a request's signature does not check out. None of them names the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error(
        "missing {0} header: requests to this URL must come from Slack, signed with the app's signing secret"
    )]
    MissingHeader(&'static str),
    #[error("X-Slack-Request-Timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error(
        "X-Slack-Request-Timestamp is {skew_secs} s from the server's clock (at most 300 s allowed): a replayed request, or a clock to fix"
    )]
    Stale { skew_secs: i64 },
    #[error(
        "the Slack signature does not match: check SLACK_SIGNING_SECRET (your Slack app's Basic Information → Signing Secret)"
    )]
    Mismatch,
}

/// The `v0=<hex>` signature of `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = keyed(secret);
    feed(&mut mac, timestamp, body);
    format!("v0={}", to_hex(&mac.finalize().into_bytes()))
}

/// Checks a request from Slack: its headers and raw body, at `now` (unix seconds).
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or(SignatureError::MissingHeader(name))
    };
    let timestamp = header(TIMESTAMP_HEADER)?;
    let signature = header(SIGNATURE_HEADER)?;
    verify_parts(secret, timestamp, signature, body, now)
}

/// [`verify`] with the header values given apart.
pub fn verify_parts(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    let skew_secs = now.saturating_sub(timestamp);
    if skew_secs.saturating_abs() > MAX_SKEW_SECS {
        return Err(SignatureError::Stale { skew_secs });
    }
    let expected = signature
        .strip_prefix("v0=")
        .and_then(from_hex)
        .ok_or(SignatureError::Mismatch)?;
    let mut mac = keyed(secret);
    feed(&mut mac, timestamp, body);
    // Constant time: `verify_slice` compares with `subtle`.
    mac.verify_slice(&expected)
        .map_err(|_| SignatureError::Mismatch)
}

fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Lowercase or uppercase hex; `None` for anything else (odd length, other characters).
fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn keyed(secret: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes a key of any length")
}

fn feed(mac: &mut Hmac<Sha256>, timestamp: i64, body: &[u8]) {
    mac.update(b"v0:");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b":");
    mac.update(body);
}

#[cfg(test)]
mod tests {
    // Tests may unwrap: a failure is the test's answer.
    #![allow(clippy::unwrap_used)]

    use axum::http::HeaderValue;

    use super::*;

    /// Slack's documented example (docs.slack.dev, "Verifying requests from Slack").
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const TIMESTAMP: i64 = 1531420618;
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from_str(timestamp).unwrap());
        headers.insert(SIGNATURE_HEADER, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn slack_documented_example_signs_and_verifies() {
        assert_eq!(
            sign(SECRET.as_bytes(), TIMESTAMP, BODY.as_bytes()),
            SIGNATURE
        );
        let ok = headers(&TIMESTAMP.to_string(), SIGNATURE);
        assert_eq!(
            verify(SECRET.as_bytes(), &ok, BODY.as_bytes(), TIMESTAMP + 10),
            Ok(())
        );
    }

    #[test]
    fn a_changed_body_secret_or_signature_is_a_mismatch() {
        let ok = headers(&TIMESTAMP.to_string(), SIGNATURE);
        let mut body = BODY.as_bytes().to_vec();
        body[10] ^= 1;
        assert_eq!(
            verify(SECRET.as_bytes(), &ok, &body, TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"another secret", &ok, BODY.as_bytes(), TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
        for bad in ["a2114d57", "v0=zz", "v1=a2114d57b48e", "v0="] {
            assert_eq!(
                verify(
                    SECRET.as_bytes(),
                    &headers(&TIMESTAMP.to_string(), bad),
                    BODY.as_bytes(),
                    TIMESTAMP
                ),
                Err(SignatureError::Mismatch),
                "{bad}"
            );
        }
        // The timestamp is signed too.
        let shifted = headers(&(TIMESTAMP + 1).to_string(), SIGNATURE);
        assert_eq!(
            verify(SECRET.as_bytes(), &shifted, BODY.as_bytes(), TIMESTAMP),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn timestamps_outside_five_minutes_either_way_are_stale() {
        let ok = headers(&TIMESTAMP.to_string(), SIGNATURE);
        for now in [TIMESTAMP + 300, TIMESTAMP - 300] {
            assert_eq!(verify(SECRET.as_bytes(), &ok, BODY.as_bytes(), now), Ok(()));
        }
        assert_eq!(
            verify(SECRET.as_bytes(), &ok, BODY.as_bytes(), TIMESTAMP + 301),
            Err(SignatureError::Stale { skew_secs: 301 })
        );
        assert_eq!(
            verify(SECRET.as_bytes(), &ok, BODY.as_bytes(), TIMESTAMP - 301),
            Err(SignatureError::Stale { skew_secs: -301 })
        );
    }

    #[test]
    fn missing_or_unreadable_headers_are_named() {
        assert_eq!(
            verify(SECRET.as_bytes(), &HeaderMap::new(), b"", TIMESTAMP),
            Err(SignatureError::MissingHeader(TIMESTAMP_HEADER))
        );
        let mut only_ts = HeaderMap::new();
        only_ts.insert(TIMESTAMP_HEADER, HeaderValue::from_static("1"));
        assert_eq!(
            verify(SECRET.as_bytes(), &only_ts, b"", 1),
            Err(SignatureError::MissingHeader(SIGNATURE_HEADER))
        );
        assert_eq!(
            verify(SECRET.as_bytes(), &headers("soon", SIGNATURE), b"", 1),
            Err(SignatureError::BadTimestamp)
        );
    }
}
