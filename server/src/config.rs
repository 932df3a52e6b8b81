//! Server configuration: every setting is a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use centaur_protocol::runner::ApprovalPolicy;
use centaur_protocol::{Harness, UnknownName};
use clap::{Parser, ValueEnum};

use crate::crypto::Secret;
use crate::sse::StreamLimits;

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

    /// Where sandboxes come from. `local`: bubblewrap sandboxes on this machine. `external`: the
    /// server starts none; runners started elsewhere (by you, or by a test) attach through the
    /// runner API.
    #[arg(long, env = "CENTAUR_SANDBOX_BACKEND", value_enum, default_value_t = BackendKind::External)]
    pub sandbox_backend: BackendKind,

    /// The runner binary mounted into local sandboxes (default: `centaur-runner` next to this
    /// server's binary, or on PATH).
    #[arg(long, env = "CENTAUR_RUNNER_BIN")]
    pub runner_bin: Option<PathBuf>,

    /// The egress proxy's CA certificate, which sandboxes trust.
    #[arg(long, env = "CENTAUR_PROXY_CA")]
    pub proxy_ca: Option<PathBuf>,

    /// Folder of harness CLIs mounted read-only into local sandboxes at /opt/centaur/harness
    /// (its `bin` goes on PATH).
    #[arg(long, env = "CENTAUR_HARNESS_DIR")]
    pub harness_dir: Option<PathBuf>,

    /// A `config.toml` for Codex in sandboxes (model provider, model); it must not hold
    /// secrets (name the variable with the key, whose placeholder the sandbox holds). Read again
    /// when it changes: each sandbox assigned gets the file as it is then.
    #[arg(long, env = "CENTAUR_CODEX_CONFIG")]
    pub codex_config: Option<PathBuf>,

    /// Settings for harnesses in sandboxes, as `KEY=VALUE` pairs separated by commas (for
    /// example `ANTHROPIC_BASE_URL=https://gateway.example`). Never secrets: those are bound in
    /// the egress policy and reach sandboxes as placeholders.
    #[arg(long, env = "CENTAUR_HARNESS_ENV", value_delimiter = ',', value_parser = parse_key_value)]
    pub harness_env: Vec<(String, String)>,

    /// A file of harness settings, one `KEY=VALUE` per line (blank lines and `#` comments
    /// ignored), read again when it changes; its settings win over `--harness-env`. Never
    /// secrets. `centaur dev keys` writes Claude Code's `ANTHROPIC_BASE_URL` here.
    #[arg(long, env = "CENTAUR_HARNESS_ENV_FILE")]
    pub harness_env_file: Option<PathBuf>,

    /// Why a harness cannot run, as `harness=reason` pairs separated by `;` (so a reason
    /// cannot hold a `;`), for example `codex=needs an OpenAI key (`centaur dev keys`)`. The
    /// reason follows the harness's name in `GET /agent/harnesses` and in the refusal of a
    /// turn; a harness without one gets a sentence naming its missing CLI.
    #[arg(long, env = "CENTAUR_HARNESS_HINTS", value_delimiter = ';', value_parser = parse_harness_hint)]
    pub harness_hints: Vec<(Harness, String)>,

    /// The Slack bridge (docs/slack.md).
    #[command(flatten)]
    pub slack: crate::slack::settings::SlackSettings,

    /// Tools (docs/tools.md).
    #[command(flatten)]
    pub tools: crate::tools::settings::ToolSettings,

    /// Ready sandboxes kept per warm harness.
    #[arg(long, env = "CENTAUR_WARM_POOL", default_value_t = 0)]
    pub warm_pool: usize,

    /// Harnesses with a warm pool, comma-separated (default: the default harness).
    #[arg(long, env = "CENTAUR_WARM_HARNESSES", value_delimiter = ',', value_parser = parse_harness)]
    pub warm_harnesses: Vec<Harness>,

    /// Address space per sandbox process, in MiB (0: no limit).
    #[arg(long, env = "CENTAUR_SANDBOX_MEMORY_MB", default_value_t = 8192)]
    pub sandbox_memory_mb: u64,

    /// Open files per sandbox process.
    #[arg(long, env = "CENTAUR_SANDBOX_OPEN_FILES", default_value_t = 4096)]
    pub sandbox_open_files: u64,

    /// Processes per sandbox: `pids.max` of its cgroup, or else RLIMIT_NPROC of the host uid
    /// it runs as (its own when the server runs as root; the server's user's otherwise).
    #[arg(long, env = "CENTAUR_SANDBOX_PROCESSES", default_value_t = 4096)]
    pub sandbox_processes: u64,

    /// Size of each of a sandbox's in-memory folders (`/tmp` and `/home/sandbox`), in MiB.
    #[arg(long, env = "CENTAUR_SANDBOX_TMPFS_MB", default_value_t = 1024)]
    pub sandbox_tmpfs_mb: u64,

    /// Largest file a sandbox process may write (RLIMIT_FSIZE), in MiB; 0 for no limit.
    #[arg(long, env = "CENTAUR_SANDBOX_FILE_MB", default_value_t = 4096)]
    pub sandbox_file_mb: u64,

    /// A thread's workspace may hold this many MiB; past it the thread's sandbox is stopped
    /// and its turn fails, saying so. 0 for no cap.
    #[arg(long, env = "CENTAUR_SANDBOX_WORKSPACE_MB", default_value_t = 10_240)]
    pub sandbox_workspace_mb: u64,

    /// When the server runs as root: the first of the host uids sandboxes run as (each thread
    /// gets its own, from a range of CENTAUR_SANDBOX_UID_COUNT). Default: 1,000,000,000 plus a
    /// multiple of 1,000,000 derived from the data folder, so servers with different data
    /// folders on one machine use different ranges.
    #[arg(long, env = "CENTAUR_SANDBOX_UID_BASE")]
    pub sandbox_uid_base: Option<u32>,

    /// How many host uids sandboxes may use, from CENTAUR_SANDBOX_UID_BASE.
    #[arg(long, env = "CENTAUR_SANDBOX_UID_COUNT", default_value_t = 1_000_000)]
    pub sandbox_uid_count: u32,

    /// Start local sandboxes even though nothing limits their processes (no cgroup and
    /// CENTAUR_SANDBOX_PROCESSES=0). Without it the server refuses to start that way.
    #[arg(long, env = "CENTAUR_SANDBOX_ALLOW_UNLIMITED_PROCESSES")]
    pub sandbox_allow_unlimited_processes: bool,

    /// A delegated cgroup v2 folder under which each local sandbox gets its own cgroup with
    /// memory and process limits (for example one a systemd unit with `Delegate=yes` owns).
    /// Without it, rlimits.
    #[arg(long, env = "CENTAUR_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,

    /// A sandbox without activity for this long is released (its workspace stays).
    #[arg(long, env = "CENTAUR_SANDBOX_IDLE_SECS", default_value_t = 1800)]
    pub sandbox_idle_secs: u64,

    /// A sandbox is released after this long, between turns.
    #[arg(
        long,
        env = "CENTAUR_SANDBOX_MAX_LIFETIME_SECS",
        default_value_t = 86_400
    )]
    pub sandbox_max_lifetime_secs: u64,

    /// How often sandboxes are checked (dead, idle, too old, orphaned), in milliseconds.
    #[arg(long, env = "CENTAUR_REAPER_MS", default_value_t = 2000)]
    pub reaper_ms: u64,

    /// This replica's name in the database: the owner of the sandboxes it runs. Default: the
    /// backend, the host's name and a digest of the data folder, the same across restarts.
    #[arg(long, env = "CENTAUR_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// A replica not heard from for this long is dead: any other replica releases its
    /// sandboxes (their turns fail, the threads get new sandboxes on their next turn).
    #[arg(long, env = "CENTAUR_REPLICA_DEAD_AFTER_SECS", default_value_t = 30)]
    pub replica_dead_after_secs: u64,

    /// When harnesses ask before acting: `never`, `on-request` or `always`.
    #[arg(long, env = "CENTAUR_APPROVAL_POLICY", default_value = "on-request", value_parser = parse_approval_policy)]
    pub approval_policy: ApprovalPolicy,

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

    /// Event streams one caller (an API key, a sandbox token, the admin key) may have open on
    /// this server at once; past it a new one is answered `429`.
    #[arg(long, env = "CENTAUR_MAX_STREAMS_PER_TOKEN", default_value_t = 64)]
    pub max_streams_per_token: usize,

    /// Event streams this server holds open at once, all callers together; past it a new one
    /// is answered `429`.
    #[arg(long, env = "CENTAUR_MAX_STREAMS", default_value_t = 10_000)]
    pub max_streams: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    Local,
    External,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Pretty,
    Json,
}

pub(crate) fn parse_harness(s: &str) -> Result<Harness, UnknownName> {
    s.parse()
}

/// A `KEY=VALUE` setting that is not one.
#[derive(Debug, thiserror::Error)]
pub enum KeyValueError {
    #[error("`{0}` is not KEY=VALUE")]
    NoEquals(String),
    #[error("`{0}` is not an environment variable name")]
    BadName(String),
}

pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), KeyValueError> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| KeyValueError::NoEquals(s.to_owned()))?;
    let valid = !key.is_empty()
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !key.as_bytes()[0].is_ascii_digit();
    if !valid {
        return Err(KeyValueError::BadName(key.to_owned()));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A `harness=reason` hint that is not one.
#[derive(Debug, thiserror::Error)]
pub enum HarnessHintError {
    #[error("`{0}` is not harness=reason")]
    NoEquals(String),
    #[error("`{0}`: {1}")]
    UnknownHarness(String, UnknownName),
    #[error("the hint for {0} is empty")]
    Empty(Harness),
}

fn parse_harness_hint(s: &str) -> Result<(Harness, String), HarnessHintError> {
    let (name, reason) = s
        .split_once('=')
        .ok_or_else(|| HarnessHintError::NoEquals(s.to_owned()))?;
    let harness: Harness = name
        .trim()
        .parse()
        .map_err(|e| HarnessHintError::UnknownHarness(s.to_owned(), e))?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(HarnessHintError::Empty(harness));
    }
    Ok((harness, reason.to_owned()))
}

/// An approval policy that is none of `never`, `on-request`, `always`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApprovalPolicyError(String);

fn parse_approval_policy(s: &str) -> Result<ApprovalPolicy, ApprovalPolicyError> {
    s.parse().map_err(ApprovalPolicyError)
}

/// Settings that do not go together, or are out of range.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("CENTAUR_ADMIN_API_KEY must be at least 16 characters")]
    ShortAdminKey,
    #[error("CENTAUR_PROXY_TOKEN must be at least 16 characters")]
    ShortProxyToken,
    #[error("CENTAUR_DEFAULT_EXECUTION_MS must be positive and at most CENTAUR_MAX_EXECUTION_MS")]
    DefaultExecution,
    #[error("CENTAUR_PROXY_CONTROL_URL needs CENTAUR_PROXY_TOKEN")]
    ProxyControlWithoutToken,
    #[error("{0} must be positive")]
    NotPositive(&'static str),
    #[error("CENTAUR_SSE_KEEPALIVE_SECS must be between 1 and 15")]
    SseKeepalive,
    #[error("CENTAUR_MAX_STREAMS_PER_TOKEN and CENTAUR_MAX_STREAMS must be positive")]
    MaxStreams,
    #[error(transparent)]
    Slack(#[from] crate::slack::settings::SlackSettingsError),
}

impl Config {
    /// A configuration with defaults, for embedding the server (tests, `centaur dev`).
    pub fn new(database_url: impl Into<String>) -> Config {
        Config::parse_from(["centaur-server", "--database-url", &database_url.into()])
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.admin_api_key
            && key.expose().len() < 16
        {
            return Err(ConfigError::ShortAdminKey);
        }
        if let Some(token) = &self.proxy_token
            && token.expose().len() < 16
        {
            return Err(ConfigError::ShortProxyToken);
        }
        if self.default_execution_ms == 0 || self.default_execution_ms > self.max_execution_ms {
            return Err(ConfigError::DefaultExecution);
        }
        if self.proxy_control_url.is_some() && self.proxy_token.is_none() {
            return Err(ConfigError::ProxyControlWithoutToken);
        }
        if self.reaper_ms == 0 {
            return Err(ConfigError::NotPositive("CENTAUR_REAPER_MS"));
        }
        if self.replica_dead_after_secs == 0 {
            return Err(ConfigError::NotPositive("CENTAUR_REPLICA_DEAD_AFTER_SECS"));
        }
        if self.egress_sync_ms == 0 {
            return Err(ConfigError::NotPositive("CENTAUR_EGRESS_SYNC_MS"));
        }
        if self.sse_keepalive_secs == 0 || self.sse_keepalive_secs > 15 {
            return Err(ConfigError::SseKeepalive);
        }
        if self.max_streams_per_token == 0 || self.max_streams == 0 {
            return Err(ConfigError::MaxStreams);
        }
        self.slack.validate()?;
        Ok(())
    }

    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.bind_addr))
    }

    /// The harnesses with a warm pool.
    pub fn warm_harnesses(&self) -> Vec<Harness> {
        if self.warm_harnesses.is_empty() {
            vec![self.default_harness]
        } else {
            self.warm_harnesses.clone()
        }
    }

    /// The runner binary for local sandboxes.
    pub fn runner_bin(&self) -> PathBuf {
        if let Some(path) = &self.runner_bin {
            return path.clone();
        }
        let beside = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("centaur-runner")));
        match beside {
            Some(path) if path.is_file() => path,
            _ => PathBuf::from("centaur-runner"),
        }
    }

    pub fn sse_keepalive(&self) -> Duration {
        Duration::from_secs(self.sse_keepalive_secs)
    }

    /// How many event streams may be open at once.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            per_caller: self.max_streams_per_token,
            total: self.max_streams,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(hints: &str) -> Result<Config, clap::Error> {
        Config::try_parse_from([
            "centaur-server",
            "--database-url",
            "postgres://x",
            "--harness-hints",
            hints,
        ])
    }

    #[test]
    fn harness_hints_are_harness_reason_pairs_separated_by_semicolons() {
        let config = parse(
            "codex=needs an OpenAI key (`centaur dev keys`);claude-code= needs an Anthropic key, \
             then a restart ",
        )
        .unwrap();
        assert_eq!(
            config.harness_hints,
            vec![
                (
                    Harness::Codex,
                    "needs an OpenAI key (`centaur dev keys`)".to_owned()
                ),
                (
                    Harness::ClaudeCode,
                    "needs an Anthropic key, then a restart".to_owned()
                ),
            ]
        );
        assert!(parse("cobol=needs a mainframe").is_err());
        assert!(parse("codex needs a key").is_err());
        assert!(parse("codex=  ").is_err());
    }
}
