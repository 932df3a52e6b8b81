//! The `centaur-server` binary as its own process, so a test can kill it and start it again:
//! its environment (the local backend behind a [`TestProxy`]) and a free port for it.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use crate::binaries::runner_binary;
use crate::http::http;
use crate::pg::fresh_database;
use crate::proxy::{PROXY_TOKEN, TestProxy};
use crate::server::ADMIN_KEY;

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The environment of a `centaur-server` process with the local backend, data under `dir`,
/// and `proxy` as its egress proxy (with an empty policy).
pub async fn process_env(dir: &Path, proxy: &TestProxy) -> Vec<(String, String)> {
    std::fs::write(dir.join("policy.json"), "{}").unwrap();
    [
        ("DATABASE_URL", fresh_database().await),
        ("CENTAUR_ADMIN_API_KEY", ADMIN_KEY.to_owned()),
        ("CENTAUR_DATA_DIR", dir.join("data").display().to_string()),
        ("CENTAUR_SANDBOX_BACKEND", "local".to_owned()),
        ("CENTAUR_RUNNER_BIN", runner_binary().display().to_string()),
        ("CENTAUR_PROXY_TOKEN", PROXY_TOKEN.to_owned()),
        (
            "CENTAUR_PROXY_CONTROL_URL",
            format!("http://{}", proxy.addr),
        ),
        (
            "CENTAUR_EGRESS_POLICY",
            dir.join("policy.json").display().to_string(),
        ),
        ("CENTAUR_REAPER_MS", "200".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// The `centaur-server` binary as its own process, so it can be killed.
pub struct ServerProcess {
    child: std::process::Child,
    pub url: String,
}

impl ServerProcess {
    /// Starts `binary` (the test's `CARGO_BIN_EXE_centaur-server`) with `env`, on `port`.
    pub fn start(binary: impl AsRef<OsStr>, env: &[(String, String)], port: u16) -> ServerProcess {
        let child = std::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("CENTAUR_BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("CENTAUR_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the server binary starts");
        ServerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub async fn wait_ready(&self) {
        let http = http().build().unwrap();
        for _ in 0..400 {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status() == StatusCode::OK
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the server process never became ready");
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        // SAFETY: plain signal delivery to our child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}
