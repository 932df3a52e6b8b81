//! A fake Slack for tests and benchmarks (helper A writes it; see /tmp/preamble.md).
