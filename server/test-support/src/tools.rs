//! Tools under test: `uv` found, tool folders written for a test, and the server in this
//! process with `TOOL_DIRS` and the other tool settings.
//!
//! ```ignore
//! let dir = temp_dir("tools-x");
//! let tools = dir.join("tools");
//! write_tool(&tools, "echo", &pyproject("echo", ""), "from centaur_tools import Tool\n…");
//! let stack = ToolStack::start(&dir, vec![tools], |_| {}).await;
//! stack.wait_ready("echo").await;
//! let (status, answer) = stack.call_tool("echo", "say", json!({"text": "hi"})).await;
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use centaur_server::Config;
use centaur_server::tools::settings::{DEFAULT_PYTHON, ToolIsolation};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::pg::fresh_database;
use crate::server::TestServer;

/// The `uv` binary: on `PATH`, else `~/.local/bin/uv` (where `pip install --user uv` puts it).
pub fn uv() -> PathBuf {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("uv");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let candidate = Path::new(&home).join(".local/bin/uv");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("install uv: pip install --user uv");
}

/// A `pyproject.toml` for tool `name` without dependencies, whose `[tool.centaur]` table holds
/// `centaur` (TOML lines such as `concurrency = 2`; a description is added when it has none).
pub fn pyproject(name: &str, centaur: &str) -> String {
    let description = if centaur.contains("description") {
        String::new()
    } else {
        format!("description = \"The {name} tool under test\"\n")
    };
    format!(
        "[project]\nname = \"{name}\"\nversion = \"0.1.0\"\nrequires-python = \">=3.11\"\ndependencies = []\n\n[tool.centaur]\n{description}{centaur}\n"
    )
}

/// Writes tool `name` into `tools_dir` (`<tools_dir>/<name>/{pyproject.toml,client.py}`);
/// returns the tool's folder. Writing again replaces both files.
pub fn write_tool(tools_dir: &Path, name: &str, pyproject: &str, client: &str) -> PathBuf {
    let dir = tools_dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pyproject.toml"), pyproject).unwrap();
    std::fs::write(dir.join("client.py"), client).unwrap();
    dir
}

/// A server configuration for tools: data under `dir/data`, tools from `tool_dirs`, `uv` found
/// by [`uv`], the default Python (`>=3.11`), bubblewrap isolation, the folders checked every
/// 200 ms; no secret and no setting granted to any tool.
pub fn tool_config(database_url: &str, dir: &Path, tool_dirs: Vec<PathBuf>) -> Config {
    let mut config = Config::new(database_url);
    config.data_dir = dir.join("data");
    config.tools.dirs = tool_dirs;
    config.tools.uv = uv();
    config.tools.python = DEFAULT_PYTHON.into();
    config.tools.isolation = ToolIsolation::Bwrap;
    config.tools.reload_ms = 200;
    config
}

/// The server in this process with tools, and the test's folder.
pub struct ToolStack {
    pub server: TestServer,
    pub dir: PathBuf,
}

impl ToolStack {
    /// A server (fresh database, recording backend) with [`tool_config`] for `dir` and
    /// `tool_dirs`, given a last word on the configuration by `tweak`.
    pub async fn start(
        dir: &Path,
        tool_dirs: Vec<PathBuf>,
        tweak: impl FnOnce(&mut Config),
    ) -> ToolStack {
        let mut config = tool_config(&fresh_database().await, dir, tool_dirs);
        tweak(&mut config);
        let server = TestServer::start_with(config, true).await;
        ToolStack {
            server,
            dir: dir.to_owned(),
        }
    }

    /// Stops the server gracefully (its workers end).
    pub async fn shutdown(&mut self) {
        self.server.shutdown().await;
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `GET /tools` as admin.
    pub async fn list(&self) -> Value {
        let (status, body) = self.server.admin(Method::GET, "/tools", Value::Null).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The tool `name` as `GET /tools` shows it, if listed.
    pub async fn listed(&self, name: &str) -> Option<Value> {
        self.list().await["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
    }

    /// Waits (up to 120 s: a first environment build may be slow) until `pred` holds for the
    /// tool as `GET /tools` lists it (`None` when it is not listed); returns it.
    pub async fn wait_for(&self, name: &str, pred: impl Fn(Option<&Value>) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let listed = self.listed(name).await;
            if pred(listed.as_ref()) {
                return listed.unwrap_or(Value::Null);
            }
            assert!(
                Instant::now() < deadline,
                "tool {name} never got there; last seen: {listed:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the tool is `status` (`ready`, `broken`, `loading`); returns it.
    pub async fn wait_status(&self, name: &str, status: &str) -> Value {
        self.wait_for(name, |t| t.is_some_and(|t| t["status"] == status))
            .await
    }

    /// Waits until the tool is ready; returns it.
    pub async fn wait_ready(&self, name: &str) -> Value {
        self.wait_status(name, "ready").await
    }

    /// `POST /tools/{tool}/{method}` with `arguments` as admin.
    pub async fn call_tool(
        &self,
        tool: &str,
        method: &str,
        arguments: Value,
    ) -> (StatusCode, Value) {
        self.server
            .admin(Method::POST, &format!("/tools/{tool}/{method}"), arguments)
            .await
    }
}

impl Drop for ToolStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Processes running a tool worker (`centaur_tools.worker`) of a tool under `tools_dir`: the
/// pids whose command line names both.
pub fn worker_processes(tools_dir: &Path) -> Vec<i32> {
    let needle = tools_dir.display().to_string();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.iter().any(|a| a == "centaur_tools.worker")
            && args.iter().any(|a| a.starts_with(&needle))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Waits (up to 30 s) until no worker of a tool under `tools_dir` runs; panics naming them.
pub async fn wait_no_workers(tools_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids = worker_processes(tools_dir);
        if pids.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tool workers still running: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
