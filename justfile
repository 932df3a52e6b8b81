# Centaur tasks. `just --list` shows them all.

# Server, private PostgreSQL and a played runner; prints curl commands to try.
demo:
    cargo run --release -p centaur-server --example demo

# The whole test suite (starts its own PostgreSQL unless DATABASE_URL is set).
test:
    cargo test

# The spine's benchmark figures (throughput, delivery latency, replay, memory).
bench:
    cargo bench -p centaur-server --bench spine

# The proxy's figures (added latency, throughput on one core, memory). BENCH_SOAK_SECS=600 soaks.
bench-proxy:
    cargo bench -p centaur-proxy --bench proxy

# The sandboxes' figures (warm and cold spawn, echo turn, 50 sandboxes, memory).
bench-sandboxes:
    cargo bench -p centaur-server --bench sandboxes

# The Slack bridge: webhook acknowledgement at 200 events/s, mention to first progress, answers
# across server kills (against the fake Slack).
bench-slack:
    cargo bench -p centaur-server --bench slack

# The TUI's figures (frame render with 10,000 events, event to screen, start to first frame).
bench-tui:
    cargo bench -p centaur-tui --bench tui
    cargo bench -p centaur --bench startup

# `centaur dev`'s figures (first run and warm start to a served turn).
bench-dev:
    cargo bench -p centaur --bench dev

# The tools' figures (a warm call's overhead, 500 concurrent calls, a cold worker's first call).
bench-tools:
    cargo bench -p centaur-server --bench tools

# Formatting and lints (the workspace lints in Cargo.toml, ruff for the tools' Python), as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    uv run --project tools ruff check tools
    uv run --project tools ruff format --check tools

fmt:
    cargo fmt --all
    uv run --project tools ruff format tools

# What CI runs on a fresh clone.
ci:
    bash .ci/run
