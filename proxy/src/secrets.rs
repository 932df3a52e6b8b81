//! Where real credential values come from. Values live only in the proxy; they are never
//! logged or audited.
//!
//! Each secret is read at most once at a time (concurrent requests wait for the one read), kept
//! for a time to live, and a failed read is remembered briefly so a broken source is not
//! hammered. When an upstream rejects a value, [`SecretStore::refresh`] reads it again, so a
//! rotated credential takes effect without waiting for the TTL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centaur_keyring::KeyringError;
use hyper::http::uri::Authority;
use serde::{Deserialize, Serialize};

use crate::http::HttpError;

/// The keyring service secrets are stored under unless a source names another.
pub const KEYRING_SERVICE: &str = "centaur";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case", deny_unknown_fields)]
pub enum SecretSource {
    /// An environment variable of the proxy process.
    Env { var: String },
    /// A file (trailing newline trimmed), e.g. a mounted Kubernetes Secret.
    File { path: PathBuf },
    /// 1Password through its CLI: `op read <reference>` (`op://vault/item/field`). The `op`
    /// binary is found on PATH, or at `CENTAUR_OP_PATH`.
    OnePassword { reference: String },
    /// 1Password Connect: the field (by label or id) of an item, read from the Connect server's
    /// HTTP API with the token in environment variable `token_env`.
    OnePasswordConnect {
        /// `http://host:port` of the Connect server.
        url: String,
        vault: String,
        item: String,
        field: String,
        token_env: String,
    },
    /// The OS keyring of the proxy's user (for local development): the kernel keyring on
    /// Linux, the login keychain on macOS. See [`centaur_keyring`].
    Keyring {
        #[serde(default = "default_keyring_service")]
        service: String,
        account: String,
    },
}

fn default_keyring_service() -> String {
    KEYRING_SERVICE.to_owned()
}

#[derive(Clone, Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{0}` is not configured in the proxy")]
    Unknown(String),
    #[error("secret `{name}` is unavailable: {reason}")]
    Unavailable { name: String, reason: SourceError },
}

/// Why a source did not give a secret's value. Cached like a value (a failed read is remembered
/// for a moment), hence cloneable: the errors of other crates are shared.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the value is empty")]
    Empty,
    #[error("environment variable {var} is not set")]
    EnvUnset { var: String },
    #[error("cannot read {}: {error}", path.display())]
    File {
        path: PathBuf,
        error: Arc<std::io::Error>,
    },
    #[error("`{op} read` timed out")]
    OpTimedOut { op: String },
    #[error("cannot run `{op}` (install the 1Password CLI or set CENTAUR_OP_PATH): {error}")]
    OpNotRunnable {
        op: String,
        error: Arc<std::io::Error>,
    },
    /// `op read` failed; `said` is the first line of what it printed on stderr.
    #[error("`{op} read` failed: {said}")]
    OpFailed { op: String, said: String },
    #[error("`op read` printed a value that is not UTF-8")]
    OpNotUtf8,
    #[error("the Connect URL must be http://host:port, got `{url}`")]
    ConnectUrl { url: String },
    /// The item's path (vault and item ids) does not make a request.
    #[error(transparent)]
    ConnectRequest(Arc<hyper::http::Error>),
    #[error("1Password Connect timed out")]
    ConnectTimedOut,
    #[error("1Password Connect at {authority}: {error}")]
    ConnectUnreachable {
        authority: Authority,
        error: Arc<HttpError>,
    },
    #[error("1Password Connect answered {status} for item {item} in vault {vault}")]
    ConnectRefused {
        status: hyper::StatusCode,
        item: String,
        vault: String,
    },
    #[error("1Password Connect sent an unreadable item: {0}")]
    ConnectUnreadable(Arc<serde_json::Error>),
    #[error("item {item} has no field `{field}` with a value")]
    ConnectNoField { item: String, field: String },
    #[error("reading the keyring failed: {0}")]
    KeyringTask(Arc<tokio::task::JoinError>),
    #[error(transparent)]
    Keyring(Arc<KeyringError>),
}

/// How long a failed read is remembered before the source is asked again.
const FAILURE_TTL: Duration = Duration::from_secs(5);
/// A value an upstream rejected is read again at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(10);

struct Entry {
    source: SecretSource,
    cached: Mutex<Option<Cached>>,
    /// Held while reading the source: one read at a time per secret.
    reading: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
struct Cached {
    value: Result<String, SecretError>,
    at: Instant,
    /// Read because an upstream rejected the value before.
    after_rejection: bool,
}

pub struct SecretStore {
    entries: HashMap<String, Entry>,
    ttl: Duration,
}

impl SecretStore {
    pub fn new(sources: HashMap<String, SecretSource>, ttl: Duration) -> Self {
        let entries = sources
            .into_iter()
            .map(|(name, source)| {
                let entry = Entry {
                    source,
                    cached: Mutex::new(None),
                    reading: tokio::sync::Mutex::new(()),
                };
                (name, entry)
            })
            .collect();
        SecretStore { entries, ttl }
    }

    /// Whether a secret of this name is configured (its value may still be unreadable).
    pub fn knows(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub async fn get(&self, name: &str) -> Result<String, SecretError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| SecretError::Unknown(name.to_owned()))?;
        if let Some(value) = self.fresh(entry) {
            return value;
        }
        let _reading = entry.reading.lock().await;
        // Whoever held the lock before may have just read it.
        if let Some(value) = self.fresh(entry) {
            return value;
        }
        self.read(name, entry, false).await.value
    }

    /// Called when an upstream rejected `used` (a 401 or 403): reads the secret again and
    /// returns the new value if it differs, so the request can be retried with it. A value
    /// that was just re-read is not read again, so a wrong credential cannot hammer the source.
    pub async fn refresh(&self, name: &str, used: &str) -> Option<String> {
        let entry = self.entries.get(name)?;
        let _reading = entry.reading.lock().await;
        let cached = entry.cached.lock().expect("cache lock").clone();
        if let Some(cached) = cached {
            match cached.value {
                Ok(value) if value != used => return Some(value),
                _ if cached.after_rejection && cached.at.elapsed() < REFRESH_INTERVAL => {
                    return None;
                }
                _ => {}
            }
        }
        match self.read(name, entry, true).await.value {
            Ok(value) if value != used => {
                tracing::info!(secret = %name, "a rejected credential was re-read and has changed");
                Some(value)
            }
            _ => None,
        }
    }

    fn fresh(&self, entry: &Entry) -> Option<Result<String, SecretError>> {
        let cached = entry.cached.lock().expect("cache lock");
        let cached = cached.as_ref()?;
        let ttl = if cached.value.is_ok() {
            self.ttl
        } else {
            FAILURE_TTL
        };
        (cached.at.elapsed() < ttl).then(|| cached.value.clone())
    }

    async fn read(&self, name: &str, entry: &Entry, after_rejection: bool) -> Cached {
        let value = read_source(&entry.source)
            .await
            .and_then(|value| {
                if value.is_empty() {
                    Err(SourceError::Empty)
                } else {
                    Ok(value)
                }
            })
            .map_err(|reason| SecretError::Unavailable {
                name: name.to_owned(),
                reason,
            });
        let cached = Cached {
            value,
            at: Instant::now(),
            after_rejection,
        };
        *entry.cached.lock().expect("cache lock") = Some(cached.clone());
        cached
    }
}

async fn read_source(source: &SecretSource) -> Result<String, SourceError> {
    match source {
        SecretSource::Env { var } => env(var),
        SecretSource::File { path } => Ok(tokio::fs::read_to_string(path)
            .await
            .map_err(|error| SourceError::File {
                path: path.clone(),
                error: Arc::new(error),
            })?
            .trim_end_matches(['\n', '\r'])
            .to_owned()),
        SecretSource::OnePassword { reference } => op_read(reference).await,
        SecretSource::OnePasswordConnect {
            url,
            vault,
            item,
            field,
            token_env,
        } => {
            let token = env(token_env)?;
            connect_read(url, vault, item, field, &token).await
        }
        SecretSource::Keyring { service, account } => {
            let (service, account) = (service.clone(), account.clone());
            tokio::task::spawn_blocking(move || centaur_keyring::read(&service, &account))
                .await
                .map_err(|error| SourceError::KeyringTask(Arc::new(error)))?
                .map_err(|error| SourceError::Keyring(Arc::new(error)))
        }
    }
}

fn env(var: &str) -> Result<String, SourceError> {
    std::env::var(var).map_err(|_| SourceError::EnvUnset {
        var: var.to_owned(),
    })
}

const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// `op read --no-newline <reference>`.
async fn op_read(reference: &str) -> Result<String, SourceError> {
    let op = std::env::var("CENTAUR_OP_PATH").unwrap_or_else(|_| "op".into());
    let run = tokio::process::Command::new(&op)
        .args(["read", "--no-newline", reference])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(SOURCE_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => {
            return Err(SourceError::OpNotRunnable {
                op,
                error: Arc::new(error),
            });
        }
        Err(_) => return Err(SourceError::OpTimedOut { op }),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let said = stderr.lines().next().unwrap_or("no output").to_owned();
        return Err(SourceError::OpFailed { op, said });
    }
    String::from_utf8(output.stdout).map_err(|_| SourceError::OpNotUtf8)
}

/// `GET {url}/v1/vaults/{vault}/items/{item}` on a 1Password Connect server; the value of the
/// field whose label or id is `field`.
async fn connect_read(
    url: &str,
    vault: &str,
    item: &str,
    field: &str,
    token: &str,
) -> Result<String, SourceError> {
    let authority = crate::http::http_authority(url).ok_or_else(|| SourceError::ConnectUrl {
        url: url.to_owned(),
    })?;
    let request = hyper::Request::get(format!("/v1/vaults/{vault}/items/{item}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|error| SourceError::ConnectRequest(Arc::new(error)))?;
    let (status, body) =
        match tokio::time::timeout(SOURCE_TIMEOUT, crate::http::send(&authority, request)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                return Err(SourceError::ConnectUnreachable {
                    authority,
                    error: Arc::new(error),
                });
            }
            Err(_) => return Err(SourceError::ConnectTimedOut),
        };
    if !status.is_success() {
        return Err(SourceError::ConnectRefused {
            status,
            item: item.to_owned(),
            vault: vault.to_owned(),
        });
    }
    let item_json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|error| SourceError::ConnectUnreadable(Arc::new(error)))?;
    item_json["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["label"] == field || f["id"] == field)
        .and_then(|f| f["value"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| SourceError::ConnectNoField {
            item: item.to_owned(),
            field: field.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn store(name: &str, source: SecretSource) -> SecretStore {
        SecretStore::new(
            HashMap::from([(name.to_owned(), source)]),
            Duration::from_secs(60),
        )
    }

    #[tokio::test]
    async fn file_values_are_cached_and_errors_name_the_fix() {
        let dir =
            std::env::temp_dir().join(format!("centaur-secrets-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "value-1\n").unwrap();
        let secrets = store(
            "T",
            SecretSource::File {
                path: dir.join("token"),
            },
        );
        assert_eq!(secrets.get("T").await.unwrap(), "value-1");
        std::fs::write(dir.join("token"), "value-2").unwrap();
        assert_eq!(
            secrets.get("T").await.unwrap(),
            "value-1",
            "cached for the TTL"
        );
        assert!(matches!(
            secrets.get("OTHER").await,
            Err(SecretError::Unknown(_))
        ));
        let missing = store(
            "M",
            SecretSource::Env {
                var: "CENTAUR_TEST_SURELY_UNSET".into(),
            },
        );
        let error = missing.get("M").await.unwrap_err();
        assert!(
            matches!(
                &error,
                SecretError::Unavailable {
                    reason: SourceError::EnvUnset { var },
                    ..
                } if var == "CENTAUR_TEST_SURELY_UNSET"
            ),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("CENTAUR_TEST_SURELY_UNSET is not set")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A fake `op` that counts its calls in `calls` and prints the content of `value`.
    fn counting_op(dir: &std::path::Path) -> PathBuf {
        let op = dir.join("op");
        std::fs::write(
            &op,
            format!(
                "#!/bin/sh\necho x >> {dir}/calls\nsleep 0.2\n[ -s {dir}/value ] || {{ echo 'no value' >&2; exit 1; }}\ncat {dir}/value\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&op, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        op
    }

    fn calls(dir: &std::path::Path) -> usize {
        std::fs::read_to_string(dir.join("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Concurrent requests share one read; a failure is remembered briefly; a rejected value is
    /// re-read once and only handed out again if it changed.
    #[tokio::test]
    async fn one_read_at_a_time_failures_remembered_and_refresh_on_rejection() {
        let dir =
            std::env::temp_dir().join(format!("centaur-flight-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = counting_op(&dir);
        let source = SecretSource::OnePassword {
            reference: "op://Dev/Item/field".into(),
        };
        let _env = OP_LOCK.lock().await;
        // SAFETY: the tests that read CENTAUR_OP_PATH hold OP_LOCK.
        unsafe { std::env::set_var("CENTAUR_OP_PATH", &script) };

        let secrets = Arc::new(store("S", source));
        // Failing source: twenty concurrent requests, one read, the same error for all.
        let results = futures_util::future::join_all((0..20).map(|_| {
            let secrets = secrets.clone();
            async move { secrets.get("S").await }
        }))
        .await;
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap_err().to_string().contains("no value"))
        );
        assert_eq!(calls(&dir), 1, "one read for twenty concurrent requests");
        std::fs::write(dir.join("value"), "v1").unwrap();
        assert!(
            secrets.get("S").await.is_err(),
            "the failure is remembered for a moment"
        );
        assert_eq!(calls(&dir), 1);

        let secrets = Arc::new(store(
            "S",
            SecretSource::OnePassword {
                reference: "op://Dev/Item/field".into(),
            },
        ));
        let results = futures_util::future::join_all((0..20).map(|_| {
            let secrets = secrets.clone();
            async move { secrets.get("S").await.unwrap() }
        }))
        .await;
        assert!(results.iter().all(|v| v == "v1"));
        assert_eq!(calls(&dir), 2);

        // The upstream rejected v1, but the source still says v1: nothing new to try.
        assert_eq!(secrets.refresh("S", "v1").await, None);
        assert_eq!(calls(&dir), 3);
        // Rejected again right away: not read again.
        assert_eq!(secrets.refresh("S", "v1").await, None);
        assert_eq!(calls(&dir), 3);
        // Rotated at the source: a fresh store re-reads on rejection and hands out the new one,
        // and so does every later request.
        let secrets = store(
            "S",
            SecretSource::OnePassword {
                reference: "op://Dev/Item/field".into(),
            },
        );
        assert_eq!(secrets.get("S").await.unwrap(), "v1");
        std::fs::write(dir.join("value"), "v2").unwrap();
        assert_eq!(secrets.refresh("S", "v1").await.as_deref(), Some("v2"));
        assert_eq!(secrets.get("S").await.unwrap(), "v2");
        // Another request that used v1 learns of v2 without another read.
        let before = calls(&dir);
        assert_eq!(secrets.refresh("S", "v1").await.as_deref(), Some("v2"));
        assert_eq!(calls(&dir), before);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn keyring_source() {
        let account = format!("test-{}", uuid::Uuid::new_v4().simple());
        centaur_keyring::write("centaur-test", &account, "sk-from-keyring")
            .expect("the kernel keyring works on this machine");
        let secrets = store(
            "K",
            SecretSource::Keyring {
                service: "centaur-test".into(),
                account: account.clone(),
            },
        );
        assert_eq!(secrets.get("K").await.unwrap(), "sk-from-keyring");
        centaur_keyring::delete("centaur-test", &account).unwrap();
        let missing = store(
            "K",
            SecretSource::Keyring {
                service: "centaur-test".into(),
                account,
            },
        );
        let error = missing.get("K").await.unwrap_err().to_string();
        assert!(error.contains("has no entry"), "{error}");
        // Sources are written as config; the service defaults to `centaur`.
        let parsed: SecretSource =
            serde_json::from_str(r#"{"source": "keyring", "account": "OPENAI_API_KEY"}"#).unwrap();
        assert_eq!(
            parsed,
            SecretSource::Keyring {
                service: KEYRING_SERVICE.into(),
                account: "OPENAI_API_KEY".into()
            }
        );
    }

    static OP_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// The 1Password CLI, played by a script that checks its arguments like `op read` would.
    #[tokio::test]
    async fn one_password_cli() {
        let dir =
            std::env::temp_dir().join(format!("centaur-op-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let op = dir.join("op");
        std::fs::write(
            &op,
            "#!/bin/sh\n[ \"$1 $2\" = \"read --no-newline\" ] || { echo 'usage' >&2; exit 2; }\n\
             case \"$3\" in op://Dev/OpenAI/credential) printf 'sk-from-op';; \
             *) echo \"[ERROR] could not read secret '$3': item not found\" >&2; exit 1;; esac\n",
        )
        .unwrap();
        std::fs::set_permissions(&op, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let _env = OP_LOCK.lock().await;
        // SAFETY: the tests that read CENTAUR_OP_PATH hold OP_LOCK.
        unsafe { std::env::set_var("CENTAUR_OP_PATH", &op) };
        let secrets = store(
            "K",
            SecretSource::OnePassword {
                reference: "op://Dev/OpenAI/credential".into(),
            },
        );
        assert_eq!(secrets.get("K").await.unwrap(), "sk-from-op");
        let wrong = store(
            "W",
            SecretSource::OnePassword {
                reference: "op://Dev/Nope/credential".into(),
            },
        );
        let error = wrong.get("W").await.unwrap_err();
        assert!(
            matches!(
                &error,
                SecretError::Unavailable {
                    reason: SourceError::OpFailed { .. },
                    ..
                }
            ),
            "{error:?}"
        );
        let error = error.to_string();
        assert!(error.contains("item not found"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// 1Password Connect, played by an HTTP server speaking its item format.
    #[tokio::test]
    async fn one_password_connect() {
        use hyper::service::service_fn;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let service = service_fn(
                        |request: hyper::Request<hyper::body::Incoming>| async move {
                            let authorized = request
                                .headers()
                                .get("authorization")
                                .is_some_and(|v| v == "Bearer connect-token");
                            let (status, body) = match (authorized, request.uri().path()) {
                                (false, _) => (
                                    401,
                                    serde_json::json!({"status": 401, "message": "Invalid bearer token"}),
                                ),
                                (true, "/v1/vaults/vault-1/items/item-1") => (
                                    200,
                                    serde_json::json!({
                                        "id": "item-1", "title": "OpenAI", "vault": {"id": "vault-1"}, "category": "API_CREDENTIAL",
                                        "fields": [
                                            {"id": "username", "type": "STRING", "label": "username", "value": "bot"},
                                            {"id": "credential", "type": "CONCEALED", "label": "credential", "value": "sk-from-connect"},
                                        ],
                                    }),
                                ),
                                (true, _) => (
                                    404,
                                    serde_json::json!({"status": 404, "message": "item not found"}),
                                ),
                            };
                            let mut response = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.to_string()),
                            ));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        // SAFETY: only this test reads these variables.
        unsafe { std::env::set_var("CENTAUR_TEST_CONNECT_TOKEN", "connect-token") };
        unsafe { std::env::set_var("CENTAUR_TEST_CONNECT_BAD", "wrong") };
        let source = |item: &str, token_env: &str| SecretSource::OnePasswordConnect {
            url: format!("http://{addr}"),
            vault: "vault-1".into(),
            item: item.into(),
            field: "credential".into(),
            token_env: token_env.into(),
        };
        assert_eq!(
            store("C", source("item-1", "CENTAUR_TEST_CONNECT_TOKEN"))
                .get("C")
                .await
                .unwrap(),
            "sk-from-connect"
        );
        let refused_with = |error: &SecretError| match error {
            SecretError::Unavailable {
                reason: SourceError::ConnectRefused { status, .. },
                ..
            } => Some(status.as_u16()),
            SecretError::Unknown(_) | SecretError::Unavailable { .. } => None,
        };
        let error = store("C", source("item-2", "CENTAUR_TEST_CONNECT_TOKEN"))
            .get("C")
            .await
            .unwrap_err();
        assert_eq!(refused_with(&error), Some(404), "{error:?}");
        let error = error.to_string();
        assert!(error.contains("404"), "{error}");
        let error = store("C", source("item-1", "CENTAUR_TEST_CONNECT_BAD"))
            .get("C")
            .await
            .unwrap_err();
        assert_eq!(refused_with(&error), Some(401), "{error:?}");
        let error = error.to_string();
        assert!(error.contains("401"), "{error}");
    }
}
