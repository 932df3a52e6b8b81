use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use centaur_proxy::SandboxConfig;
use centaur_proxy::secrets::SecretSource;
use centaur_proxy::service::{self, Settings, load_or_create_key};
use centaur_proxy::tls::generate_ca;
use clap::{Parser, Subcommand};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "centaur-proxy", version, about = "Centaur's egress proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the sandboxes of a configuration file.
    Serve {
        /// JSON configuration: listeners, secret sources, sandboxes (see docs/proxy.md).
        #[arg(long, env = "CENTAUR_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Inside a sandbox: expose the proxy's Unix socket on a loopback address.
    Forward {
        #[arg(long, default_value = "127.0.0.1:3128")]
        listen: std::net::SocketAddr,
        #[arg(long)]
        socket: PathBuf,
    },
    /// Manage the CA that intercepted TLS connections are signed with.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create `ca.pem` (give it to sandboxes) and `ca-key.pem` (keep it secret) in DIR.
    Init {
        #[arg(long, env = "CENTAUR_PROXY_CA_DIR")]
        dir: PathBuf,
        /// Replace an existing CA (sandboxes must then trust the new one).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// TCP listener for sandboxes that authenticate with a proxy credential.
    #[serde(default)]
    listen: Option<std::net::SocketAddr>,
    /// TCP listener for the control API, through which the server pushes sandboxes and their
    /// policies (authenticated with CENTAUR_PROXY_TOKEN).
    #[serde(default)]
    control_listen: Option<std::net::SocketAddr>,
    /// Folder for the per-sandbox Unix sockets (`<hash of the id>/proxy.sock`).
    #[serde(default)]
    socket_dir: Option<PathBuf>,
    /// File holding the key placeholders are derived from (created if missing).
    key_file: PathBuf,
    #[serde(default)]
    secrets: HashMap<String, SecretSource>,
    #[serde(default = "default_ttl")]
    secret_ttl_secs: u64,
    #[serde(default)]
    sandboxes: Vec<SandboxConfig>,
    /// The CA for interception (from `centaur-proxy ca init`); without it, hosts that must be
    /// intercepted are refused.
    #[serde(default)]
    ca_cert: Option<PathBuf>,
    #[serde(default)]
    ca_key: Option<PathBuf>,
    /// Extra PEM files of roots trusted for upstream servers (private CAs, tests).
    #[serde(default)]
    extra_roots: Vec<PathBuf>,
    /// The Centaur server that stores audit records (`http://host:port`); the token comes from
    /// CENTAUR_PROXY_TOKEN. Without it, records are written to the log.
    #[serde(default)]
    audit_server_url: Option<String>,
    /// Caps per sandbox and for the whole proxy, and timeouts (see docs/proxy.md); each one
    /// left out keeps its default.
    #[serde(default)]
    limits: centaur_proxy::Limits,
}

fn default_ttl() -> u64 {
    300
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Serve { config } => serve(&config).await,
        Command::Forward { listen, socket } => forward(listen, socket).await,
        Command::Ca {
            command: CaCommand::Init { dir, force },
        } => ca_init(&dir, force),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("centaur-proxy: {error:#}");
            ExitCode::from(1)
        }
    }
}

async fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let config: FileConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let key = load_or_create_key(&config.key_file)
        .with_context(|| format!("the key file {}", config.key_file.display()))?;
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    let ca = match (&config.ca_cert, &config.ca_key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        (None, None) => None,
        _ => anyhow::bail!("set both ca_cert and ca_key, or neither"),
    };
    let extra_roots = config
        .extra_roots
        .iter()
        .map(read)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token = std::env::var("CENTAUR_PROXY_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let audit = match config.audit_server_url {
        Some(url) => Some((
            url,
            token.clone().context(
                "audit_server_url is set: set CENTAUR_PROXY_TOKEN to the server's proxy token",
            )?,
        )),
        None => None,
    };
    if config.control_listen.is_some() && token.is_none() {
        anyhow::bail!("control_listen is set: set CENTAUR_PROXY_TOKEN to the server's proxy token");
    }
    let shutdown = CancellationToken::new();
    let (proxy, control) = service::build(
        Settings {
            key,
            secrets: config.secrets,
            secret_ttl: Duration::from_secs(config.secret_ttl_secs),
            ca,
            extra_roots,
            audit,
            control_token: token,
            socket_dir: config.socket_dir.clone(),
            limits: config.limits,
        },
        &shutdown,
    )?;
    let mut tasks = tokio::task::JoinSet::new();
    for sandbox in config.sandboxes {
        let id = sandbox.sandbox_id.clone();
        let applied = control
            .register_static(sandbox)
            .with_context(|| format!("sandbox `{id}` in {}", path.display()))?;
        for (name, placeholder) in &applied.placeholders {
            println!("{id}\t{name}\t{placeholder}");
        }
        if let Some(socket) = &applied.socket {
            tracing::info!(sandbox_id = %id, socket = %socket.display(), "listening");
        }
    }
    if let Some(addr) = config.control_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for the control API"))?;
        tracing::info!(%addr, "control API listening");
        let (control, shutdown) = (control.clone(), shutdown.clone());
        tasks.spawn(async move { control.serve(listener, shutdown).await });
    }
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, "listening");
        let (proxy, shutdown) = (proxy.clone(), shutdown.clone());
        tasks.spawn(async move { proxy.serve_tcp(listener, shutdown).await });
    }
    tokio::signal::ctrl_c().await?;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    // The audit still queued goes to the server before the process ends (bounded: a server
    // that is gone does not hold the exit).
    if tokio::time::timeout(AUDIT_DRAIN_LIMIT, proxy.audit_drained())
        .await
        .is_err()
    {
        tracing::warn!(
            "the audit was not delivered within {} s of shutdown; what remained is lost",
            AUDIT_DRAIN_LIMIT.as_secs()
        );
    }
    Ok(())
}

/// How long the proxy's exit waits for the audit still queued to reach the server.
const AUDIT_DRAIN_LIMIT: Duration = Duration::from_secs(10);

async fn forward(listen: std::net::SocketAddr, socket: PathBuf) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    centaur_proxy::forward::serve(listener, socket).await?;
    Ok(())
}

fn ca_init(dir: &std::path::Path, force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if !force && (cert_path.exists() || key_path.exists()) {
        anyhow::bail!(
            "{} already holds a CA; pass --force to replace it",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (cert, key) = generate_ca()?;
    std::fs::write(&cert_path, cert)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)?;
    file.write_all(key.as_bytes())?;
    println!("{}", cert_path.display());
    Ok(())
}
