//! Server configuration: every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use centaur_protocol::Harness;
use clap::{Parser, ValueEnum};

use crate::crypto::Secret;

#[derive(Clone, Debug, Parser)]
#[command(name = "centaur-server", version, about = "The Centaur control plane")]
pub struct Config {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Secret,

    /// Address the HTTP API listens on.
    #[arg(long, env = "CENTAUR_BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,

    /// URL at which sandbox runners reach this server (default: http://<bind_addr>).
    #[arg(long, env = "CENTAUR_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// The admin key: full rights, including creating and revoking API keys. At least 16
    /// characters. Without it only API keys already in the database can authenticate.
    #[arg(long, env = "CENTAUR_ADMIN_API_KEY", hide_env_values = true)]
    pub admin_api_key: Option<Secret>,

    /// The token the egress proxy reports audit records with (`/proxy/v1/*`). At least 16
    /// characters.
    #[arg(long, env = "CENTAUR_PROXY_TOKEN", hide_env_values = true)]
    pub proxy_token: Option<Secret>,

    /// The egress proxy's control API (`http://host:port`), through which the server pushes
    /// every sandbox's egress policy; authenticated with CENTAUR_PROXY_TOKEN. Without it,
    /// sandboxes get no egress configuration.
    #[arg(long, env = "CENTAUR_PROXY_CONTROL_URL")]
    pub proxy_control_url: Option<String>,

    /// JSON file with the egress policy of threads that have none of their own (see
    /// docs/proxy.md). Without it, sandboxes may reach nothing.
    #[arg(long, env = "CENTAUR_EGRESS_POLICY")]
    pub egress_policy: Option<PathBuf>,

    /// Milliseconds between full syncs of every sandbox's policy to the proxy (which also
    /// repopulates a proxy that restarted).
    #[arg(long, env = "CENTAUR_EGRESS_SYNC_MS", default_value_t = 30_000)]
    pub egress_sync_ms: u64,

    /// Folder for the server's own state (sandbox workspaces, proxy CA).
    #[arg(long, env = "CENTAUR_DATA_DIR", default_value = "centaur-data")]
    pub data_dir: PathBuf,

    /// Where sandboxes come from. `external`: the server starts none; runners started elsewhere
    /// (by you, or by a test) attach through the runner API.
    #[arg(long, env = "CENTAUR_SANDBOX_BACKEND", value_enum, default_value_t = BackendKind::External)]
    pub sandbox_backend: BackendKind,

    /// Harness for threads that do not name one.
    #[arg(long, env = "CENTAUR_DEFAULT_HARNESS", default_value = "codex", value_parser = parse_harness)]
    pub default_harness: Harness,

    /// Time budget of an execution that does not set `max_duration_ms`.
    #[arg(long, env = "CENTAUR_DEFAULT_EXECUTION_MS", default_value_t = 30 * 60 * 1000)]
    pub default_execution_ms: u64,

    /// Upper bound for `max_duration_ms`.
    #[arg(long, env = "CENTAUR_MAX_EXECUTION_MS", default_value_t = 6 * 60 * 60 * 1000)]
    pub max_execution_ms: u64,

    /// Largest accepted request body for the user API, in bytes.
    #[arg(long, env = "CENTAUR_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted event batch from a runner, in bytes.
    #[arg(long, env = "CENTAUR_MAX_RUNNER_BATCH_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_runner_batch_bytes: usize,

    /// Size of the PostgreSQL connection pool.
    #[arg(long, env = "CENTAUR_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "CENTAUR_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub db_acquire_timeout_ms: u64,

    /// Seconds between keep-alive comments on event streams.
    #[arg(long, env = "CENTAUR_SSE_KEEPALIVE_SECS", default_value_t = 15)]
    pub sse_keepalive_secs: u64,

    /// On shutdown, how long in-flight requests may take to finish.
    #[arg(long, env = "CENTAUR_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Log format: `pretty` for people, `json` for log pipelines; `auto` picks pretty on a
    /// terminal. Filter with RUST_LOG (default `info`).
    #[arg(long, env = "CENTAUR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    External,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

fn parse_harness(s: &str) -> Result<Harness, String> {
    s.parse()
}

impl Config {
    /// A configuration with defaults, for embedding the server (tests, `centaur dev`).
    pub fn new(database_url: impl Into<String>) -> Config {
        Config::parse_from(["centaur-server", "--database-url", &database_url.into()])
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(key) = &self.admin_api_key
            && key.expose().len() < 16
        {
            return Err("CENTAUR_ADMIN_API_KEY must be at least 16 characters".into());
        }
        if let Some(token) = &self.proxy_token
            && token.expose().len() < 16
        {
            return Err("CENTAUR_PROXY_TOKEN must be at least 16 characters".into());
        }
        if self.default_execution_ms == 0 || self.default_execution_ms > self.max_execution_ms {
            return Err(
                "CENTAUR_DEFAULT_EXECUTION_MS must be positive and at most CENTAUR_MAX_EXECUTION_MS"
                    .into(),
            );
        }
        if self.proxy_control_url.is_some() && self.proxy_token.is_none() {
            return Err("CENTAUR_PROXY_CONTROL_URL needs CENTAUR_PROXY_TOKEN".into());
        }
        if self.egress_sync_ms == 0 {
            return Err("CENTAUR_EGRESS_SYNC_MS must be positive".into());
        }
        if self.sse_keepalive_secs == 0 || self.sse_keepalive_secs > 15 {
            return Err("CENTAUR_SSE_KEEPALIVE_SECS must be between 1 and 15".into());
        }
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind_addr))
    }

    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive_secs)
    }
}
