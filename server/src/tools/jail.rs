//! The bubblewrap confinement of a tool worker: no network but the egress proxy's socket, the
//! host's files read-only, the server's data folder hidden, a private `/tmp`.
