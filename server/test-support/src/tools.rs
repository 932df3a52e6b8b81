//! Tool folders written for a test, `uv` found, a server with tools (being written: issue 16).
