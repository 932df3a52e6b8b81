//! Where real credential values come from, cached with a time to live and read again when a
//! value is missing. Values live only in the proxy; they are never logged or audited.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

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
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{0}` is not configured in the proxy")]
    Unknown(String),
    #[error("secret `{name}` is unavailable: {reason}")]
    Unavailable { name: String, reason: String },
}

pub struct SecretStore {
    sources: HashMap<String, SecretSource>,
    ttl: Duration,
    cache: Mutex<HashMap<String, (String, Instant)>>,
}

impl SecretStore {
    pub fn new(sources: HashMap<String, SecretSource>, ttl: Duration) -> Self {
        SecretStore {
            sources,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub async fn get(&self, name: &str) -> Result<String, SecretError> {
        if let Some((value, at)) = self.cache.lock().expect("cache lock").get(name)
            && at.elapsed() < self.ttl
        {
            return Ok(value.clone());
        }
        let source = self
            .sources
            .get(name)
            .ok_or_else(|| SecretError::Unknown(name.to_owned()))?;
        let unavailable = |reason: String| SecretError::Unavailable {
            name: name.to_owned(),
            reason,
        };
        let value = match source {
            SecretSource::Env { var } => std::env::var(var)
                .map_err(|_| unavailable(format!("environment variable {var} is not set")))?,
            SecretSource::File { path } => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            SecretSource::OnePassword { reference } => {
                op_read(reference).await.map_err(unavailable)?
            }
            SecretSource::OnePasswordConnect {
                url,
                vault,
                item,
                field,
                token_env,
            } => {
                let token = std::env::var(token_env).map_err(|_| {
                    unavailable(format!("environment variable {token_env} is not set"))
                })?;
                connect_read(url, vault, item, field, &token)
                    .await
                    .map_err(unavailable)?
            }
        };
        if value.is_empty() {
            return Err(unavailable("the value is empty".into()));
        }
        self.cache
            .lock()
            .expect("cache lock")
            .insert(name.to_owned(), (value.clone(), Instant::now()));
        Ok(value)
    }
}

const SOURCE_TIMEOUT: Duration = Duration::from_secs(10);

/// `op read --no-newline <reference>`.
async fn op_read(reference: &str) -> Result<String, String> {
    let op = std::env::var("CENTAUR_OP_PATH").unwrap_or_else(|_| "op".into());
    let run = tokio::process::Command::new(&op)
        .args(["read", "--no-newline", reference])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SOURCE_TIMEOUT, run)
        .await
        .map_err(|_| format!("`{op} read` timed out"))?
        .map_err(|e| {
            format!("cannot run `{op}` (install the 1Password CLI or set CENTAUR_OP_PATH): {e}")
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!(
            "`{op} read` failed: {}",
            stderr.lines().next().unwrap_or("no output")
        ));
    }
    String::from_utf8(output.stdout)
        .map_err(|_| "`op read` printed a value that is not UTF-8".into())
}

/// `GET {url}/v1/vaults/{vault}/items/{item}` on a 1Password Connect server; the value of the
/// field whose label or id is `field`.
async fn connect_read(
    url: &str,
    vault: &str,
    item: &str,
    field: &str,
    token: &str,
) -> Result<String, String> {
    let authority = crate::http::http_authority(url)
        .ok_or_else(|| format!("the Connect URL must be http://host:port, got `{url}`"))?;
    let request = hyper::Request::get(format!("/v1/vaults/{vault}/items/{item}"))
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let (status, body) =
        tokio::time::timeout(SOURCE_TIMEOUT, crate::http::send(&authority, request))
            .await
            .map_err(|_| "1Password Connect timed out".to_owned())?
            .map_err(|e| format!("1Password Connect at {authority}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "1Password Connect answered {status} for item {item} in vault {vault}"
        ));
    }
    let item_json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("1Password Connect sent an unreadable item: {e}"))?;
    item_json["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["label"] == field || f["id"] == field)
        .and_then(|f| f["value"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("item {item} has no field `{field}` with a value"))
}

#[cfg(test)]
mod tests {
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
        assert!(
            missing
                .get("M")
                .await
                .unwrap_err()
                .to_string()
                .contains("CENTAUR_TEST_SURELY_UNSET is not set")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

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
        // SAFETY: this test binary's other tests do not read CENTAUR_OP_PATH.
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
        let error = wrong.get("W").await.unwrap_err().to_string();
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
        let error = store("C", source("item-2", "CENTAUR_TEST_CONNECT_TOKEN"))
            .get("C")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("404"), "{error}");
        let error = store("C", source("item-1", "CENTAUR_TEST_CONNECT_BAD"))
            .get("C")
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("401"), "{error}");
    }
}
