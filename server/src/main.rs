use std::process::ExitCode;

use centaur_server::{Config, logging};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(config.log_format);
    let server = match centaur_server::start(config).await {
        Ok(server) => server,
        Err(error) => {
            eprintln!("centaur-server: {error}");
            return ExitCode::from(2);
        }
    };
    let stopping = server.shutdown_token();
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: finishing in-flight requests"),
        _ = stopping.cancelled() => {}
    }
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("can install a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
