//! The workspace's binaries that tests run as processes (`centaur`, `centaur-runner`), built
//! on demand by this workspace's cargo, and their output as text.
//!
//! Cargo builds an integration test's own package's binaries, not other packages': these are
//! built here, once per test run, so a fresh clone needs nothing but `cargo test`. Cargo names
//! the executable it built, wherever its target folder is.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// The `centaur-runner` binary, built once per test run.
pub fn runner_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| built("centaur-runner", "centaur-runner"))
        .clone()
}

/// The `centaur` binary, built once per test run.
pub fn cli_binary() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| built("centaur", "centaur")).clone()
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Cargo, without the variables it sets for a running test: build scripts (ring's) watch
/// `CARGO_MANIFEST_DIR`, and a different value rebuilds them and everything above them.
fn cargo() -> Command {
    let mut command = Command::new(env!("CARGO"));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
            "CARGO_PRIMARY_",
            "CARGO_TARGET_TMPDIR",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// `bin` of `package`, built (debug) with this workspace's cargo; the path cargo reports.
fn built(package: &str, bin: &str) -> PathBuf {
    let output = cargo()
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        // Diagnostics go to the terminal as usual; artifacts come as JSON on stdout.
        .arg("--message-format=json-render-diagnostics")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(output.status.success(), "building {bin} failed");
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == bin
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo built no executable named {bin}"));
    assert!(path.is_file(), "{} is missing", path.display());
    path
}
