//! A whole proxy put together from its settings, however they were given: a file
//! (`centaur-proxy serve --config`) or the local stack (`centaur dev`).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::{AuditSink, BadServerUrl, HttpSink, LogSink};
use crate::control::Control;
use crate::secrets::{SecretSource, SecretStore};
use crate::tls::{Authority, Interception, TlsError, client_config};
use crate::{Limits, Proxy, Registry};

pub struct Settings {
    /// The key placeholders are derived from (see [`load_or_create_key`]).
    pub key: Vec<u8>,
    pub secrets: HashMap<String, SecretSource>,
    pub secret_ttl: Duration,
    /// The interception CA as PEM (certificate, private key); without it, hosts that must be
    /// intercepted are refused.
    pub ca: Option<(String, String)>,
    /// Extra PEM roots trusted for upstream servers (private CAs, tests).
    pub extra_roots: Vec<String>,
    /// The server that stores audit records (`http://host:port`) and the token for it;
    /// without it, records are written to the log.
    pub audit: Option<(String, String)>,
    /// The bearer token of the control API.
    pub control_token: Option<String>,
    /// Folder for the per-sandbox Unix sockets.
    pub socket_dir: Option<PathBuf>,
    /// Caps per sandbox and for the whole proxy, and timeouts.
    pub limits: Limits,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the interception CA or upstream roots: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Audit(#[from] BadServerUrl),
}

/// The proxy and its control API, ready to serve; `shutdown` ends the audit sink and the
/// control API's work.
pub fn build(
    settings: Settings,
    shutdown: &CancellationToken,
) -> Result<(Arc<Proxy>, Arc<Control>), ServiceError> {
    let interception = match settings.ca {
        Some((cert, key)) => Some(Interception {
            authority: Authority::from_pem(&cert, &key)?,
            client: client_config(&settings.extra_roots)?,
        }),
        None => None,
    };
    let audit: Arc<dyn AuditSink> = match settings.audit {
        Some((url, token)) => Arc::new(HttpSink::start(&url, token, shutdown.clone())?),
        None => Arc::new(LogSink),
    };
    let proxy = Proxy::new(
        Arc::new(Registry::new(settings.key)),
        Arc::new(SecretStore::new(settings.secrets, settings.secret_ttl)),
        audit,
        settings.limits,
        interception,
    );
    let control = Control::new(
        proxy.clone(),
        settings.control_token,
        settings.socket_dir,
        shutdown.clone(),
    );
    Ok((proxy, control))
}

/// The key in `path`, or a new random one written there (0600) first. Keep it: running
/// sandboxes keep their placeholders across restarts.
pub fn load_or_create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    if let Ok(key) = std::fs::read(path) {
        if key.len() < 32 {
            return Err(std::io::Error::other(format!(
                "{} holds fewer than 32 bytes",
                path.display()
            )));
        }
        return Ok(key);
    }
    let mut key = vec![0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(&key))?;
    Ok(key)
}
