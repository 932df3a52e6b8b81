//! The tools' settings (flattened into [`crate::Config`]).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Clone, Debug, Args)]
pub struct ToolSettings {
    /// Folders holding tools (`<dir>/<name>/pyproject.toml` with a `[tool.centaur]` table),
    /// separated by `:`. A tool in a later folder shadows one of the same name in an earlier
    /// folder, so an organisation's overlay comes after the built-in `tools/`.
    #[arg(long = "tool-dirs", env = "TOOL_DIRS", value_delimiter = ':')]
    pub dirs: Vec<PathBuf>,

    /// JSON file with the operator's additions to each tool's egress policy: `{"<tool>": <a
    /// policy as in docs/proxy.md>}` (hosts the `http` tool may fetch, where the `postgres`
    /// tool's database is, a secret's binding moved to a test server). Read again when it
    /// changes.
    #[arg(long = "tool-egress", env = "CENTAUR_TOOL_EGRESS")]
    pub egress: Option<PathBuf>,

    /// The `uv` binary that builds each tool's Python environment.
    #[arg(long = "uv", env = "CENTAUR_UV", default_value = "uv")]
    pub uv: PathBuf,

    /// The Python `uv` builds tools' environments with (a version such as `3.11`, or a path).
    #[arg(
        long = "tool-python",
        env = "CENTAUR_TOOL_PYTHON",
        default_value = "python3"
    )]
    pub python: String,

    /// How tool workers are confined: `bwrap` (no network but the egress proxy, the host's
    /// files read-only, the server's data hidden) or `none` (development only: the proxy
    /// variables are set, but nothing stops a tool that ignores them).
    #[arg(long = "tool-isolation", env = "CENTAUR_TOOL_ISOLATION", value_enum, default_value_t = ToolIsolation::Bwrap)]
    pub isolation: ToolIsolation,

    /// How often the tool folders are checked for changes, in milliseconds.
    #[arg(
        long = "tool-reload-ms",
        env = "CENTAUR_TOOL_RELOAD_MS",
        default_value_t = 1000
    )]
    pub reload_ms: u64,

    /// Address space of a tool worker's processes, in MiB (RLIMIT_AS; 0: no limit). Each of its
    /// processes may also write files of at most 1 GiB and holds at most 4,096 descriptors.
    #[arg(
        long = "tool-memory-mb",
        env = "CENTAUR_TOOL_MEMORY_MB",
        default_value_t = 4096
    )]
    pub memory_mb: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ToolIsolation {
    Bwrap,
    None,
}

impl ToolSettings {
    /// No tool folders, bubblewrap: the defaults, for tests.
    pub fn defaults() -> ToolSettings {
        ToolSettings {
            dirs: Vec::new(),
            egress: None,
            uv: PathBuf::from("uv"),
            python: "python3".into(),
            isolation: ToolIsolation::Bwrap,
            reload_ms: 1000,
            memory_mb: 4096,
        }
    }
}
