//! The harnesses' real CLIs (Claude Code, Codex) from npm, installed once into a cache folder
//! (`CENTAUR_HARNESS_CACHE`, default `target/harness-cache` in the workspace).

use std::path::PathBuf;
use std::sync::OnceLock;

/// The folder with Claude Code's Linux binary (`claude`), from npm.
pub fn claude_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            npm_package(
                "@anthropic-ai/claude-code@2.1.197",
                "@anthropic-ai/claude-code-linux-x64/claude",
            )
            .parent()
            .unwrap()
            .to_owned()
        })
        .clone()
}

/// The folder with the Codex CLI's Linux binary (`bin/codex`), from npm.
pub fn codex_dir() -> PathBuf {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            npm_package(
                "@openai/codex@0.169.0",
                "@openai/codex-linux-x64/vendor/x86_64-unknown-linux-musl/bin/codex",
            )
            .ancestors()
            .nth(2)
            .unwrap()
            .to_owned()
        })
        .clone()
}

/// An npm package installed into the cache folder unless `probe` (relative to its
/// `node_modules`) is there already; the path of `probe`.
fn npm_package(package: &str, probe: &str) -> PathBuf {
    let cache = std::env::var_os("CENTAUR_HARNESS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // This crate lives in server/test-support of the workspace.
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/harness-cache")
        });
    let path = cache.join("node_modules").join(probe);
    if !path.exists() {
        std::fs::create_dir_all(&cache).unwrap();
        let status = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&cache)
            .arg(package)
            .status()
            .expect("npm runs (install Node.js and npm)");
        assert!(status.success(), "npm install {package} failed");
    }
    assert!(
        path.exists(),
        "{} is missing after npm install {package}",
        path.display()
    );
    path
}
