//! The Python half of tools (`tools/`: the SDK and the built-in tools) as part of `cargo test`:
//! their pytest suite, `ruff check` and `ruff format --check`, each run with uv from `tools/`
//! (the uv workspace), failing with the command's output.
#![allow(clippy::unwrap_used)] // tests stop at the first surprise

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// uv syncs one environment for all three commands: one at a time.
static UV: Mutex<()> = Mutex::new(());

fn tools_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tools")
        .canonicalize()
        .unwrap()
}

/// uv on `PATH`, or where `pip install --user uv` puts it.
fn uv() -> PathBuf {
    let works = |program: &PathBuf| {
        Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|output| output.status.success())
    };
    let on_path = PathBuf::from("uv");
    if works(&on_path) {
        return on_path;
    }
    if let Some(home) = std::env::var_os("HOME") {
        let local = PathBuf::from(home).join(".local/bin/uv");
        if works(&local) {
            return local;
        }
    }
    panic!("install uv: pip install --user uv");
}

/// Runs `uv run --locked --project <tools> <args>` in `tools/`; panics with its output if it
/// fails. `--locked`: a stale `tools/uv.lock` fails with uv's message instead of being
/// rewritten.
fn uv_run(args: &[&str]) {
    let _one_at_a_time = UV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tools = tools_dir();
    let output = Command::new(uv())
        .arg("run")
        .arg("--locked")
        .arg("--project")
        .arg(&tools)
        .args(args)
        .current_dir(&tools)
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "`uv run --locked {}` in {} failed ({}):\n{}\n{}",
        args.join(" "),
        tools.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn the_python_tests_pass() {
    uv_run(&["pytest", "-q"]);
}

#[test]
fn ruff_finds_nothing() {
    uv_run(&["ruff", "check"]);
}

#[test]
fn the_python_is_formatted() {
    uv_run(&["ruff", "format", "--check"]);
}
