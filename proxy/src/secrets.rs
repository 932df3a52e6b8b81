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
