//! `centaur dev`'s figures: how long `centaur dev --detach` takes until the stack serves, on a
//! new data directory (initdb, CA, tokens) and warm (data present), and the first turn after it.
//! No model keys, so nothing is downloaded.
//!
//!     cargo bench -p centaur --bench dev
#![allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm)] // tests and benchmarks stop at the first surprise

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn centaur(home: &Path, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_centaur"))
        .args(args)
        .env("CENTAUR_HOME", home)
        .env_remove("CENTAUR_API_URL")
        .env_remove("CENTAUR_API_TOKEN")
        .output()
        .expect("centaur runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "centaur {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn free_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port().to_string()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let base = std::env::temp_dir().join(format!("centaur-dev-bench-{}", std::process::id()));
    let turn = [
        "send",
        "--harness",
        "shell",
        "--message",
        "echo hi",
        "--exit-on-terminal",
    ];
    let mut first = Vec::new();
    let mut warm = Vec::new();
    for run in 0..3 {
        let home = base.join(format!("home-{run}"));
        let port = free_port();
        let up = ["dev", "--detach", "--port", port.as_str()];
        let started = centaur(&home, &up);
        let answered = centaur(&home, &turn);
        first.push((started, answered));
        centaur(&home, &["dev", "down"]);
        for _ in 0..3 {
            let started = centaur(&home, &up);
            let answered = centaur(&home, &turn);
            warm.push((started, answered));
            centaur(&home, &["dev", "down"]);
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    let report = |name: &str, samples: &mut Vec<(Duration, Duration)>| {
        samples.sort();
        let (up, turn) = samples[samples.len() / 2];
        let worst = samples.iter().map(|(u, t)| *u + *t).max().unwrap();
        println!(
            "{name}: `centaur dev --detach` serving after {} (median of {}), first turn answered {} later; worst up + turn {}",
            ms(up),
            samples.len(),
            ms(turn),
            ms(worst)
        );
    };
    report("new data directory", &mut first);
    report("warm (data present)", &mut warm);
}
