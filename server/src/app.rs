//! Assembles the server: state, background work, the HTTP listener, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendKind, Config, ConfigError};
use crate::db::{self, Readiness};
use crate::egress::{self, Egress, EgressSetupError};
use crate::executions;
use crate::hub::Hub;
use crate::reloading::{
    CodexConfig, HarnessEnvError, HarnessEnvFile, read_codex_config, read_harness_env,
};
use crate::replicas;
use crate::routes;
use crate::runner_socket::{RunnerSocket, SocketPeer};
use crate::sandbox::host_user::{self, HostUsers};
use crate::sandbox::local::{LocalSetupError, ResourceLimits};
use crate::sandbox::warm::WarmPool;
use crate::sandbox::{ExternalBackend, LocalBackend, LocalOptions, SandboxBackend, reaper, warm};

const DEADLINE_CHECK_EVERY: Duration = Duration::from_millis(250);

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub hub: Hub,
    pub config: Arc<Config>,
    pub backend: Arc<dyn SandboxBackend>,
    /// The egress proxy's control API, when one is configured.
    pub egress: Option<Arc<Egress>>,
    /// Ready sandboxes, when the backend has them and the pool is configured.
    pub warm: Option<Arc<WarmPool>>,
    /// `CENTAUR_CODEX_CONFIG`, read again when the file changes.
    pub codex_config: Option<Arc<CodexConfig>>,
    /// `CENTAUR_HARNESS_ENV_FILE`, read again when it changes.
    pub harness_env_file: Option<Arc<HarnessEnvFile>>,
    pub readiness: Arc<Readiness>,
    /// The Slack bridge, unless `CENTAUR_SLACK_MODE` is `off`.
    pub slack: Option<Arc<crate::slack::Slack>>,
    /// This replica's tools ([`crate::tools`]).
    pub tools: Arc<crate::tools::Tools>,
    /// This replica's id: the owner of the sandboxes it runs ([`crate::replicas`]).
    pub replica: Arc<str>,
    /// Cancelled when the server begins to shut down; long-lived streams end on it.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("invalid configuration: CENTAUR_DATA_DIR: {0}")]
    DataDir(#[source] std::io::Error),
    #[error("invalid configuration: {0}")]
    LocalBackend(#[from] LocalSetupError),
    #[error("invalid configuration: {0}")]
    Egress(#[from] EgressSetupError),
    #[error("invalid configuration: CENTAUR_CODEX_CONFIG {}: {source}", path.display())]
    CodexConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    HarnessEnvFile(#[from] HarnessEnvError),
    #[error("invalid configuration: runner socket {}: {source}", path.display())]
    RunnerSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Slack(#[from] crate::slack::identity::IdentityError),
    #[error("invalid configuration: tools: {0}")]
    Tools(#[from] crate::tools::registry::ToolSetupError),
    #[error("invalid DATABASE_URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error(
        "cannot listen on {addr}: {source} (is another server running there? set CENTAUR_BIND_ADDR)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A server running in this process.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    served: JoinHandle<()>,
    pool: PgPool,
}

impl RunningServer {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves when shutdown has begun (from [`RunningServer::shutdown`] or elsewhere).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting connections, ends streams, lets in-flight requests finish (up to the
    /// configured grace period), then closes the database pool.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.served.await;
        self.pool.close().await;
    }
}

/// Starts the server with the backend named in `config`.
pub async fn start(config: Config) -> Result<RunningServer, StartError> {
    let backend: Arc<dyn SandboxBackend> = match config.sandbox_backend {
        BackendKind::External => Arc::new(ExternalBackend),
        BackendKind::Local => Arc::new(local_backend(&config)?),
    };
    start_with_backend(config, backend).await
}

/// The local backend as `config` describes it.
pub fn local_backend(config: &Config) -> Result<LocalBackend, StartError> {
    let data_dir = std::path::absolute(&config.data_dir).map_err(StartError::DataDir)?;
    let uid_base = config
        .sandbox_uid_base
        .unwrap_or_else(|| host_user::default_base(&data_dir));
    let host_users = HostUsers::for_this_process(&data_dir, uid_base, config.sandbox_uid_count);
    let options = LocalOptions {
        server_socket_dir: data_dir.join("run"),
        data_dir,
        runner_bin: config.runner_bin(),
        bwrap: "bwrap".into(),
        ca_file: config.proxy_ca.clone(),
        harness_dir: config.harness_dir.clone(),
        limits: ResourceLimits {
            memory_bytes: config.sandbox_memory_mb << 20,
            open_files: config.sandbox_open_files,
            processes: config.sandbox_processes,
            tmpfs_bytes: config.sandbox_tmpfs_mb << 20,
            file_bytes: config.sandbox_file_mb << 20,
            workspace_bytes: config.sandbox_workspace_mb << 20,
        },
        host_users,
        allow_unlimited_processes: config.sandbox_allow_unlimited_processes,
        cgroup_root: config.cgroup_root.clone(),
    };
    Ok(LocalBackend::new(options)?)
}

/// Starts the server with a given sandbox backend (tests, embedders): checks the
/// configuration, binds, assembles the state, starts the background work, then serves.
pub async fn start_with_backend(
    config: Config,
    backend: Arc<dyn SandboxBackend>,
) -> Result<RunningServer, StartError> {
    config.validate()?;
    let egress = Egress::from_config(&config)?;
    let codex_config = match &config.codex_config {
        Some(path) => Some(Arc::new(
            CodexConfig::open(path, read_codex_config).map_err(|error| {
                StartError::CodexConfig {
                    path: error.path,
                    source: error.source,
                }
            })?,
        )),
        None => None,
    };
    let harness_env_file = match &config.harness_env_file {
        Some(path) => Some(Arc::new(HarnessEnvFile::open(path, read_harness_env)?)),
        None => None,
    };
    let warm = (config.warm_pool > 0 && backend.supports_warm())
        .then(|| Arc::new(WarmPool::new(config.warm_pool, config.warm_harnesses())));
    let runner_listener = match backend.runner_socket() {
        Some(path) => Some(
            RunnerSocket::bind(&path)
                .map_err(|source| StartError::RunnerSocket { path, source })?,
        ),
        None => None,
    };
    let slack = crate::slack::Slack::connect(&config).await?;
    let tools = crate::tools::Tools::new(&config)?;
    let pool = db::lazy_pool(&config).map_err(StartError::DatabaseUrl)?;
    let listener = TcpListener::bind(config.bind_addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind_addr,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind_addr,
        source,
    })?;
    let mut config = config;
    config.bind_addr = addr;

    let shutdown = CancellationToken::new();
    let replica: Arc<str> = replicas::id_for(&config, backend.kind().as_str()).into();
    let state = AppState {
        hub: Hub::start(pool.clone(), shutdown.child_token()),
        pool: pool.clone(),
        config: Arc::new(config),
        backend,
        egress,
        warm,
        codex_config,
        harness_env_file,
        readiness: Arc::new(Readiness::default()),
        replica,
        slack,
        tools,
        shutdown: shutdown.clone(),
    };
    spawn_background(&state);
    if let Some(listener) = runner_listener {
        serve_runner_socket(&state, listener);
    }
    let served = serve_http(&state, listener);
    tracing::info!(%addr, backend = %state.backend.kind(), "centaur-server listening");
    Ok(RunningServer {
        addr,
        shutdown,
        served,
        pool,
    })
}

/// Migrations, the database probe, deadlines, egress sync, the replica heartbeat, the reaper
/// and the warm pool, each until shutdown.
fn spawn_background(state: &AppState) {
    tokio::spawn({
        let (pool, readiness, shutdown) = (
            state.pool.clone(),
            state.readiness.clone(),
            state.shutdown.clone(),
        );
        async move { db::migrate_until_done(pool, &readiness, shutdown).await }
    });
    tokio::spawn(db::probe_until_shutdown(
        state.pool.clone(),
        state.readiness.clone(),
        state.shutdown.clone(),
    ));
    tokio::spawn(enforce_deadlines(state.clone()));
    egress::policy::spawn_sync(state.clone());
    replicas::spawn_heartbeat(state.clone());
    reaper::spawn(state.clone());
    warm::spawn_filler(state.clone());
    crate::slack::spawn(state);
    crate::tools::Tools::spawn(state);
    crate::tools::calls::spawn_sweep(state);
}

/// The runner API on the backend's runner socket, until shutdown.
fn serve_runner_socket(state: &AppState, listener: RunnerSocket) {
    let router = routes::runner_socket_router(state.clone())
        .into_make_service_with_connect_info::<SocketPeer>();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        let serve =
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(error) = serve.await {
            tracing::error!(%error, "runner socket failed");
        }
    });
}

/// The HTTP API until shutdown, then at most the grace period for requests still running;
/// then the backend stops its sandboxes.
fn serve_http(state: &AppState, listener: TcpListener) -> JoinHandle<()> {
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let router = routes::router(state.clone());
    let backend = state.backend.clone();
    let shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        // Event frames are small writes that must leave at once.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        let serve = std::pin::pin!(serve.into_future());
        tokio::select! {
            result = serve => {
                if let Err(error) = result {
                    tracing::error!(%error, "HTTP server failed");
                }
            }
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_secs = grace.as_secs(), "requests still running after the grace period; closing them");
            }
        }
        backend.shutdown().await;
    })
}

/// Fails executions that ran past `max_duration_ms`, on every replica (they share the work).
async fn enforce_deadlines(state: AppState) {
    let mut tick = tokio::time::interval(DEADLINE_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !state.readiness.is_migrated() {
            continue;
        }
        if let Err(error) = executions::fail_overdue(&state).await {
            tracing::debug!(%error, "deadline check failed; will retry");
        }
    }
}
