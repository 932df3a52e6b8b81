//! The runner's command line (`centaur-runner --server … [--proxy-socket …]`).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::link::{Endpoint, Link};
use crate::runner::{Runner, RunnerError};
use crate::turn::Sandbox;
use anyhow::Context;
use centaur_protocol::runner::Attachment;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Runs inside a Centaur sandbox: claims the thread's executions and drives the harness.
///
/// The attachment (thread, token, harness, environment) arrives as one JSON line on stdin,
/// when the sandbox starts or when it is claimed from the warm pool; `CENTAUR_ATTACHMENT`
/// gives it instead for runners started by hand. The runner prints `ready` on stdout once it
/// can take its attachment.
#[derive(Parser)]
#[command(name = "centaur-runner", version)]
struct Args {
    /// The server: `unix:/path/to/server.sock` or `http://host:port`.
    #[arg(long, env = "CENTAUR_SERVER")]
    server: String,
    /// The egress proxy's Unix socket, exposed to the harness on `--proxy-listen`.
    #[arg(long, env = "CENTAUR_PROXY_SOCKET")]
    proxy_socket: Option<PathBuf>,
    #[arg(long, env = "CENTAUR_PROXY_LISTEN", default_value = "127.0.0.1:3128")]
    proxy_listen: std::net::SocketAddr,
    /// The proxy's CA certificate, which the harness must trust.
    #[arg(long, env = "CENTAUR_CA_FILE")]
    ca_file: Option<String>,
    #[arg(long, env = "CENTAUR_WORKSPACE", default_value = "/workspace")]
    workspace: PathBuf,
    /// Where the sandbox's processes reach Centaur's tools (`CENTAUR_TOOLS_URL` in the harness
    /// environment); the runner forwards them to the server with its token.
    #[arg(long, env = "CENTAUR_TOOLS_LISTEN", default_value = crate::tools::DEFAULT_LISTEN)]
    tools_listen: std::net::SocketAddr,
}

/// The runner's command line: what `centaur-runner` runs (and `centaur` when started under
/// that name, so one binary can serve a whole local stack). `centaur-runner tool …` is
/// `centaur-tool …`.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "tool") {
        return crate::tools::command::main_from(
            std::iter::once(std::ffi::OsString::from("centaur-tool"))
                .chain(std::env::args_os().skip(2)),
        );
    }
    if let Err(error) = become_undumpable() {
        eprintln!("centaur-runner: cannot protect its memory: {error}");
        return ExitCode::from(2);
    }
    if let Err(error) = crate::tree::become_subreaper() {
        eprintln!("centaur-runner: cannot adopt the processes it starts: {error}");
        return ExitCode::from(2);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("centaur-runner: no runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(Args::parse())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            let broken = error
                .downcast_ref::<RunnerError>()
                .is_some_and(|e| matches!(e, RunnerError::Broken));
            ExitCode::from(if broken { 3 } else { 1 })
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let endpoint: Endpoint = args.server.parse()?;
    tokio::spawn(crate::tree::reap_on_sigchld());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    if let Some(socket) = args.proxy_socket {
        let listener = tokio::net::TcpListener::bind(args.proxy_listen)
            .await
            .with_context(|| format!("listening on {}", args.proxy_listen))?;
        let url = format!("http://{}", listener.local_addr()?);
        env.extend(crate::forward::proxy_env(&url, args.ca_file.as_deref()));
        tokio::spawn(crate::forward::serve(listener, socket));
    }
    // Bound before `ready`, served once the token is known. A port that is taken leaves the
    // sandbox without tools rather than without an agent.
    let tools_listener = match tokio::net::TcpListener::bind(args.tools_listen).await {
        Ok(listener) => {
            let url = format!("http://{}", listener.local_addr()?);
            env.insert(crate::tools::URL_VAR.into(), url);
            Some(listener)
        }
        Err(error) => {
            tracing::warn!(%error, listen = %args.tools_listen, "cannot serve tools to the sandbox; it runs without them");
            None
        }
    };
    println!("ready");
    std::io::stdout().flush()?;

    let attachment: Attachment = match std::env::var("CENTAUR_ATTACHMENT") {
        Ok(json) => {
            // It holds the runner's token: harness processes must not inherit it.
            // SAFETY: no other thread reads the environment at this point (the runtime has one
            // thread and nothing blocking has been started).
            unsafe { std::env::remove_var("CENTAUR_ATTACHMENT") };
            serde_json::from_str(&json).context("CENTAUR_ATTACHMENT")?
        }
        Err(_) => {
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().lock().read_line(&mut line).map(|_| line)
            })
            .await??;
            anyhow::ensure!(
                !line.trim().is_empty(),
                "stdin closed before an attachment arrived"
            );
            serde_json::from_str(&line).context("the attachment on stdin")?
        }
    };
    tracing::info!(thread_key = %attachment.thread_key, harness = %attachment.harness, sandbox_id = %attachment.sandbox_id, "attached");
    env.extend(attachment.env.clone());
    let sandbox = Sandbox {
        workspace: args.workspace,
        env,
        approval_policy: attachment.approval_policy,
    };
    let link = Link::new(endpoint, attachment.token.clone());
    if let Some(listener) = tools_listener {
        tokio::spawn(crate::tools::endpoint::serve(listener, link.clone()));
    }
    let runner = Runner::new(link, attachment, sandbox);
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });
    let served = runner.run(stop).await;
    // Whatever the harnesses and the agent left running goes with the runner (in a sandbox that
    // outlives it, as with a backend that does not end the sandbox's processes itself).
    let ended = crate::tree::end_all().await;
    tracing::info!(signalled = ended.signalled, "the runner's processes ended");
    served?;
    Ok(())
}

/// Makes this process non-dumpable, before it holds anything worth stealing: the processes it
/// starts (the harness and whatever the agent runs) run as the same user, and without this
/// they could read its memory (`/proc/<pid>/mem`, its token), its descriptors or environment,
/// or `ptrace` it. Programs it executes become dumpable again, so the agent's own tools keep
/// working.
fn become_undumpable() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
