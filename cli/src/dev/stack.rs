//! The running stack (`centaur dev serve`, started in the background by `centaur dev`): a
//! private PostgreSQL, the egress proxy and the server with the local sandbox backend, in one
//! process. It writes `stack.json` once it serves, restarts PostgreSQL and the proxy when they
//! die (see [`super::supervise`]), and on SIGTERM or Ctrl-C stops the
//! sandboxes, the server, the proxy and PostgreSQL, in that order, and removes the file.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use centaur_protocol::Harness;
use centaur_proxy::secrets::SecretSource;
use centaur_proxy::service::{self, ServiceError, Settings, load_or_create_key};
use centaur_server::StartError;
use centaur_server::pg_cluster::{ClusterError, ClusterOptions, PgCluster};
use centaur_server::slack::settings::SlackMode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

use super::endpoints::Endpoints;
use super::home::{Home, StackState};
use super::setup::MODEL_KEYS;
use super::supervise::{Postgres, ProxyApi, RestartError, Supervisor};
use centaur_client::private_file::{WriteError, write_atomic};

/// Why the stack did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("PostgreSQL did not start: {0}")]
    PostgresStart(#[source] ClusterError),
    #[error("PostgreSQL did not stop: {0}")]
    PostgresStop(#[source] ClusterError),
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("the proxy's key {}: {source}", .path.display())]
    ProxyKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the proxy: {0}")]
    Proxy(#[source] ServiceError),
    #[error("the proxy's control API: {0}")]
    ControlListener(#[source] std::io::Error),
    #[error("the proxy's control API: {0}")]
    ControlApi(#[source] RestartError),
    #[error("this program's path: {0}")]
    OwnPath(#[source] std::io::Error),
    #[error("port {0} is in use: pass --port, or stop what listens there")]
    PortInUse(u16),
    #[error("the server did not start: {0}")]
    Server(#[source] StartError),
    #[error("cannot open {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a stack already runs on {}: `centaur dev status`", .0.display())]
    AlreadyRunning(PathBuf),
    #[error("no SIGTERM handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("the server did not become ready in 60 s (see logs/server.log)")]
    NotReady,
    #[error("logging: {0}")]
    Logging(#[source] tracing_subscriber::util::TryInitError),
    /// Writing `stack.json`.
    #[error(transparent)]
    State(WriteError),
}

pub struct Options {
    pub port: u16,
    pub warm_pool: usize,
    /// Stop when stdin closes: the `centaur dev` that started the stack (and holds the other
    /// end) has gone, whatever ended it.
    pub tied: bool,
    /// Tool folders after the checkout's `tools/` (absolute).
    pub tool_dirs: Vec<PathBuf>,
}

/// Runs the stack until SIGTERM, Ctrl-C or (when `tied`) its parent goes. Whatever happens
/// after PostgreSQL started, everything started is stopped on the way out.
pub async fn serve(home: Home, options: Options) -> Result<(), StackError> {
    // TLS through ring, like the rest of Centaur (the proxy's upstreams, readiness checks).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let stop = stop_signal(options.tied)?;
    let _lock = lock(&home)?;
    init_logging(&home)?;
    let shutdown = CancellationToken::new();
    let database = Database::start(&home).await?;
    tracing::info!(address = %database.address(), "PostgreSQL is up");
    let (server, state, proxy) = match start_services(&home, &options, &database, &shutdown).await {
        Ok(started) => started,
        Err(error) => {
            shutdown.cancel();
            let _ = database.stop().await;
            return Err(error);
        }
    };
    let serving = async {
        until_ready(&state.api_url, &stop).await?;
        if !stop.is_cancelled() {
            write_atomic(
                &home.state_file(),
                &serde_json::to_string_pretty(&state).expect("json"),
            )
            .map_err(StackError::State)?;
            tracing::info!(url = %state.api_url, "the stack is up");
        }
        Ok::<(), StackError>(())
    };
    let outcome = serving.await;
    // From here on, PostgreSQL and the proxy are restarted when they die.
    let supervisor = (outcome.is_ok() && !stop.is_cancelled()).then(|| {
        let postgres = match &database {
            Database::Private(cluster) => Some(Postgres {
                root: cluster.root().to_path_buf(),
                port: cluster.port(),
            }),
            Database::External(_) => None,
        };
        Supervisor::start(&home, state.clone(), postgres, proxy)
    });
    if outcome.is_ok() {
        let stopped_elsewhere = server.shutdown_token();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = stopped_elsewhere.cancelled() => {}
        }
    }
    tracing::info!("stopping the stack");
    if let Some(supervisor) = supervisor {
        supervisor.stop().await;
    }
    let _ = std::fs::remove_file(home.state_file());
    server.shutdown().await;
    shutdown.cancel();
    database.stop().await?;
    tracing::info!("the stack is down");
    outcome
}

/// Where the stack keeps its data: the server at `DATABASE_URL` if one is given, else a
/// private cluster in the home, kept across runs.
enum Database {
    Private(PgCluster),
    External(String),
}

impl Database {
    async fn start(home: &Home) -> Result<Database, StackError> {
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            return Ok(Database::External(url));
        }
        let root = home.postgres();
        let cluster = tokio::task::spawn_blocking(move || {
            PgCluster::start(&ClusterOptions {
                root,
                durable: true,
                max_connections: 100,
            })
        })
        .await
        .expect("the PostgreSQL start-up task")
        .map_err(StackError::PostgresStart)?;
        Ok(Database::Private(cluster))
    }

    fn url(&self) -> String {
        match self {
            Database::Private(cluster) => cluster.url("postgres"),
            Database::External(url) => url.clone(),
        }
    }

    /// `host:port`, without credentials.
    fn address(&self) -> String {
        match self {
            Database::Private(cluster) => format!("127.0.0.1:{}", cluster.port()),
            Database::External(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
                let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
                let host = rest.split(['/', '?']).next().unwrap_or(rest);
                if host.contains(':') {
                    host.to_owned()
                } else {
                    format!("{host}:5432")
                }
            }
        }
    }

    /// Stops a private cluster (an external server is not ours to stop).
    async fn stop(self) -> Result<(), StackError> {
        let Database::Private(cluster) = self else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || cluster.stop())
            .await
            .expect("the PostgreSQL stop task")
            .map_err(StackError::PostgresStop)
    }
}

/// The proxy, then the server that uses it; and what `stack.json` will say about them.
async fn start_services(
    home: &Home,
    options: &Options,
    database: &Database,
    shutdown: &CancellationToken,
) -> Result<(centaur_server::RunningServer, StackState, ProxyApi), StackError> {
    let tokens = Tokens::read(home)?;
    let api_url = format!("http://127.0.0.1:{}", options.port);
    let proxy = start_proxy(home, &api_url, &tokens, shutdown).await?;
    let proxy_control_url = format!("http://{}", proxy.addr());
    tracing::info!(target: "centaur_proxy", url = %proxy_control_url, "proxy control API listening");

    // Harnesses whose CLI is installed and whose key is given, then those that need neither.
    let ready: Vec<Harness> = MODEL_KEYS
        .iter()
        .filter(|k| k.present(home) && k.installed(home))
        .map(|k| k.harness)
        .chain([Harness::Shell, Harness::Echo])
        .collect();
    let config = server_config(home, options, database, &tokens, &proxy_control_url, &ready)?;
    let server = centaur_server::start(config).await.map_err(|error| {
        let in_use = matches!(&error, StartError::Bind { source, .. }
            if source.kind() == std::io::ErrorKind::AddrInUse);
        if in_use {
            StackError::PortInUse(options.port)
        } else {
            StackError::Server(error)
        }
    })?;
    let state = StackState {
        pid: std::process::id(),
        api_url: server.url(),
        proxy_control_url,
        postgres_address: database.address(),
        postgres_private: matches!(database, Database::Private(_)),
        started_at: chrono::Utc::now(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        harnesses_ready: ready,
        warm_pool: options.warm_pool,
        postgres_health: Default::default(),
        proxy_health: Default::default(),
    };
    Ok((server, state, proxy))
}

/// The tokens made by setup: the dev token (the API's admin key) and the one the server and
/// the proxy share.
struct Tokens {
    dev: String,
    proxy: String,
}

impl Tokens {
    fn read(home: &Home) -> Result<Tokens, StackError> {
        Ok(Tokens {
            dev: read_trimmed(home.dev_token())?,
            proxy: read_trimmed(home.proxy_token())?,
        })
    }
}

fn read_trimmed(path: PathBuf) -> Result<String, StackError> {
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| StackError::Read { path, source })
}

/// The proxy: control API on a free loopback port, one socket per sandbox, audit to the
/// server at `api_url`, model keys from the files only it reads.
async fn start_proxy(
    home: &Home,
    api_url: &str,
    tokens: &Tokens,
    shutdown: &CancellationToken,
) -> Result<ProxyApi, StackError> {
    let key = load_or_create_key(&home.proxy_key()).map_err(|source| StackError::ProxyKey {
        path: home.proxy_key(),
        source,
    })?;
    // The tools' secrets (`secrets/tools/NAME`), then the model keys.
    let mut secrets: HashMap<String, SecretSource> = super::tools::secret_sources(home);
    secrets.extend(MODEL_KEYS.iter().map(|k| {
        (
            k.secret.to_owned(),
            SecretSource::File { path: k.path(home) },
        )
    }));
    let (_, control) = service::build(
        Settings {
            key,
            secrets,
            secret_ttl: Duration::from_secs(60),
            ca: Some((read_trimmed(home.ca_cert())?, read_trimmed(home.ca_key())?)),
            extra_roots: Vec::new(),
            audit: Some((api_url.to_owned(), tokens.proxy.clone())),
            control_token: Some(tokens.proxy.clone()),
            socket_dir: Some(home.proxy_sockets()),
            limits: Default::default(),
        },
        shutdown,
    )
    .map_err(StackError::Proxy)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(StackError::ControlListener)?;
    ProxyApi::start(control, listener, shutdown.clone()).map_err(StackError::ControlApi)
}

/// The server's settings: the local backend (`centaur` itself is the runner in sandboxes),
/// the proxy, and a warm pool of the first ready harness.
fn server_config(
    home: &Home,
    options: &Options,
    database: &Database,
    tokens: &Tokens,
    proxy_control_url: &str,
    ready: &[Harness],
) -> Result<centaur_server::Config, StackError> {
    let mut config = centaur_server::Config::new(database.url());
    config.bind_addr = ([127, 0, 0, 1], options.port).into();
    config.admin_api_key = Some(tokens.dev.as_str().into());
    config.proxy_token = Some(tokens.proxy.as_str().into());
    config.proxy_control_url = Some(proxy_control_url.to_owned());
    config.egress_policy = Some(home.egress_policy());
    config.data_dir = home.server_data();
    config.sandbox_backend = centaur_server::config::BackendKind::Local;
    config.runner_bin = Some(std::env::current_exe().map_err(StackError::OwnPath)?);
    config.proxy_ca = Some(home.ca_cert());
    // Always there, even empty: a CLI `centaur dev keys` installs while the stack runs is
    // found there (and mounted into sandboxes) without a restart.
    let harness_bin = home.harnesses().join("bin");
    std::fs::create_dir_all(&harness_bin).map_err(|source| StackError::Write {
        path: harness_bin,
        source,
    })?;
    config.harness_dir = Some(home.harnesses());
    config.codex_config = Some(home.codex_config());
    // Claude Code's endpoint, when `centaur dev keys` set one other than Anthropic's API: in a
    // file the server reads again when it changes. Written now for homes from before it existed.
    if !home.harness_env().exists() {
        let endpoints = Endpoints::read(home).unwrap_or_else(|error| {
            tracing::warn!(%error, "Claude Code talks to Anthropic's API");
            Endpoints::default()
        });
        std::fs::write(home.harness_env(), endpoints.harness_env()).map_err(|source| {
            StackError::Write {
                path: home.harness_env(),
                source,
            }
        })?;
    }
    config.harness_env_file = Some(home.harness_env());
    config.harness_hints = harness_hints(home);
    config.default_harness = ready[0];
    config.warm_pool = options.warm_pool;
    config.warm_harnesses = vec![ready[0]];
    apply_slack(&mut config, super::slack::stored(home));
    apply_tools(&mut config, home, &options.tool_dirs);
    Ok(config)
}

/// The tools: the checkout's `tools/` then the overlays, `uv` where it was installed, the
/// home's egress additions, and the grant of `secrets/tools/` to every tool. The stack's
/// settings are its own: `TOOL_DIRS` and the other tool variables of the environment are not
/// used, but for `CENTAUR_TOOL_SETTINGS` (no setting is granted without it).
fn apply_tools(config: &mut centaur_server::Config, home: &Home, overlays: &[PathBuf]) {
    let builtin = super::tools::builtin_dir();
    if builtin.is_none() {
        tracing::info!("no checkout's tools/ folder here: only the --tool-dir folders are used");
    }
    config.tools.dirs = super::tools::tool_dirs(builtin, overlays);
    tracing::info!(dirs = ?config.tools.dirs, "tool folders");
    match super::tools::find_uv() {
        Some(uv) => config.tools.uv = uv,
        None => tracing::warn!(
            "uv is not installed: tools cannot be built (pip install --user uv; `centaur dev doctor`)"
        ),
    }
    config.tools.egress = super::tools::egress_file(home);
    // The files in secrets/tools/ are the tools' secrets: every tool may use them.
    config.tools.secrets = super::tools::secret_grants(home);
    // The server runs in this process, with the whole shell's environment: a tool reads only the
    // variables granted here.
    config.tools.settings =
        super::tools::setting_grants(std::env::var("CENTAUR_TOOL_SETTINGS").ok().as_deref());
}

/// `centaur dev slack`'s tokens, when given: the bot in Socket Mode (the server checks them
/// with `auth.test` as it starts, and a refused one stops it with the fix). Without them, Slack
/// is off whatever the environment says: the stack's settings are its own.
fn apply_slack(config: &mut centaur_server::Config, slack: Option<super::slack::StackSlack>) {
    let Some(slack) = slack else {
        config.slack.mode = SlackMode::Off;
        return;
    };
    config.slack.mode = SlackMode::Socket;
    config.slack.bot_token = Some(slack.tokens.bot.into());
    config.slack.app_token = Some(slack.tokens.app.into());
    if let Some(url) = slack.api_url {
        config.slack.api_url = url;
    }
}

/// Why a harness cannot run on this stack, in words that follow its name and end with the fix
/// (the server says them when the harness's CLI is missing: `GET /agent/harnesses`, and the
/// refusal of a turn). Codex and Claude Code need their key, and `centaur dev keys` installs
/// their CLI when given it (as `centaur dev` does at start); the server looks for the CLI on
/// every list and turn, so the hint stops being said once it is there. Amp is not set up by
/// `centaur dev` at all.
pub fn harness_hints(home: &Home) -> Vec<(Harness, String)> {
    let mut hints: Vec<(Harness, String)> = MODEL_KEYS
        .iter()
        .map(|key| {
            let hint = if key.present(home) {
                // npm could not install the CLI when the stack started.
                "is not installed: give its key again with `centaur dev keys` to install it, or restart the stack (`centaur dev down`, then `centaur dev`)".to_owned()
            } else {
                format!("needs an {} key (`centaur dev keys`)", key.provider.name())
            };
            (key.harness, hint)
        })
        .collect();
    hints.push((
        Harness::Amp,
        "is not set up by `centaur dev`: use codex, claude-code, shell or echo".to_owned(),
    ));
    hints
}

/// One stack per `CENTAUR_HOME`: held until the process ends, with its pid inside.
fn lock(home: &Home) -> Result<std::fs::File, StackError> {
    use std::io::{Seek, Write};
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.lock_file())
        .map_err(|source| StackError::Open {
            path: home.lock_file(),
            source,
        })?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(StackError::AlreadyRunning(home.root.clone()));
    }
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .and_then(|()| file.flush());
    written.map_err(|source| StackError::Write {
        path: home.lock_file(),
        source,
    })?;
    Ok(file)
}

/// Resolves when the stack should stop: SIGTERM, Ctrl-C, or (when `tied`) stdin closing
/// because the `centaur dev` that started it is gone.
fn stop_signal(tied: bool) -> Result<CancellationToken, StackError> {
    let stop = CancellationToken::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(StackError::Signal)?;
    let on_signal = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    if tied {
        let on_eof = stop.clone();
        std::thread::Builder::new()
            .name("parent-watch".into())
            .spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                on_eof.cancel();
            })
            .expect("a thread");
    }
    Ok(stop)
}

/// Waits until the server answers `/readyz` (migrations applied), or `stop`.
async fn until_ready(url: &str, stop: &CancellationToken) -> Result<(), StackError> {
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !stop.is_cancelled() {
        let ready = http
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(StackError::NotReady);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The stack's own log (starting, supervising, stopping) and the server's and the proxy's,
/// each in its own file under `logs/`.
fn init_logging(home: &Home) -> Result<(), StackError> {
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(home.log(name))
            .map_err(|source| StackError::Open {
                path: home.log(name),
                source,
            })
    };
    let is_proxy = |target: &str| target.starts_with("centaur_proxy");
    // This crate's lines are the stack's: `centaur dev logs stack`.
    let is_stack = |target: &str| target.starts_with("centaur_cli");
    let stack = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(open("stack")?))
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            is_stack(m.target())
        }));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let server = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(open("server")?))
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            !is_proxy(m.target()) && !is_stack(m.target())
        }));
    let proxy = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(open("proxy")?))
        .with_filter(tracing_subscriber::filter::filter_fn(move |m| {
            is_proxy(m.target())
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(stack)
        .with(server)
        .with(proxy)
        .try_init()
        .map_err(StackError::Logging)
}

#[cfg(test)]
mod tests {
    use super::super::slack::{StackSlack, Tokens};
    use super::*;

    /// `centaur dev slack`'s tokens make the stack's server a Socket Mode bot (with the fake
    /// Slack's Web API when one was given); without them Slack is off, whatever was set before.
    #[test]
    fn slack_tokens_turn_socket_mode_on() {
        let mut config = centaur_server::Config::new("postgres://localhost/x");
        apply_slack(
            &mut config,
            Some(StackSlack {
                tokens: Tokens {
                    bot: "xoxb-1-2-bot".into(),
                    app: "xapp-1-A1-app".into(),
                },
                api_url: Some("http://127.0.0.1:9/api".into()),
            }),
        );
        assert_eq!(config.slack.mode, SlackMode::Socket);
        assert_eq!(
            config.slack.bot_token.as_ref().map(|t| t.expose()),
            Some("xoxb-1-2-bot")
        );
        assert_eq!(
            config.slack.app_token.as_ref().map(|t| t.expose()),
            Some("xapp-1-A1-app")
        );
        assert_eq!(config.slack.api_url, "http://127.0.0.1:9/api");
        config.slack.validate().unwrap();
        apply_slack(&mut config, None);
        assert_eq!(config.slack.mode, SlackMode::Off);
    }
}
