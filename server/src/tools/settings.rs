//! The tools' settings (flattened into [`crate::Config`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::discovery::refused_variable;

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

    /// The secrets each tool may use, granted by the operator: `tool=NAME,NAME;tool2=NAME`
    /// (`*=NAME` for every tool). A tool whose manifest declares a secret not granted to it
    /// (here or by a binding or `reveal` of its `CENTAUR_TOOL_EGRESS` entry) is broken, so a
    /// plugin cannot help itself to the model keys or another tool's token.
    #[arg(
        long = "tool-secrets",
        env = "CENTAUR_TOOL_SECRETS",
        value_parser = SecretGrants::parse,
        default_value = ""
    )]
    pub secrets: SecretGrants,

    /// The settings each tool is given, granted by the operator: the names of the server's
    /// environment variables a tool's `[tool.centaur] env` may read, `tool=NAME,NAME;*=NAME` as
    /// `CENTAUR_TOOL_SECRETS`. A declared `env` variable not granted to the tool is not passed
    /// (the tool uses its default; the server logs the grant to add once per load), so a plugin
    /// cannot read a server variable the operator did not mean for it.
    #[arg(
        long = "tool-settings",
        env = "CENTAUR_TOOL_SETTINGS",
        value_parser = SecretGrants::parse,
        default_value = ""
    )]
    pub settings: SecretGrants,

    /// The `uv` binary that builds each tool's Python environment.
    #[arg(long = "uv", env = "CENTAUR_UV", default_value = "uv")]
    pub uv: PathBuf,

    /// The Python `uv` builds tools' environments with: a version request (`>=3.11`, `3.12`) or
    /// a path. The SDK needs Python 3.11 or later; with the default, uv picks an installed one
    /// (or downloads one, as its settings allow), and a tool is broken saying so when there is
    /// none.
    #[arg(
        long = "tool-python",
        env = "CENTAUR_TOOL_PYTHON",
        default_value = DEFAULT_PYTHON
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

/// The Python tools' environments are built with unless `CENTAUR_TOOL_PYTHON` says otherwise:
/// the SDK needs 3.11 (`typing.NotRequired`).
pub const DEFAULT_PYTHON: &str = ">=3.11";

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
            secrets: SecretGrants::default(),
            settings: SecretGrants::default(),
            uv: PathBuf::from("uv"),
            python: DEFAULT_PYTHON.into(),
            isolation: ToolIsolation::Bwrap,
            reload_ms: 1000,
            memory_mb: 4096,
        }
    }
}

/// `CENTAUR_TOOL_SECRETS` and `CENTAUR_TOOL_SETTINGS`: tool name (or `*`, any tool) → the
/// names (of secrets, of settings) granted to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretGrants(BTreeMap<String, BTreeSet<String>>);

/// The tool name that stands for every tool in `CENTAUR_TOOL_SECRETS` and
/// `CENTAUR_TOOL_SETTINGS`.
pub const ANY_TOOL: &str = "*";

impl SecretGrants {
    /// Reads `tool=NAME,NAME;tool2=NAME` (spaces around the parts are ignored, a tool named
    /// twice gets both lists, an empty text grants nothing). A name is a worker's variable, so
    /// it is checked as every such name is ([`refused_variable`]): `PATH`, `LD_PRELOAD`,
    /// `PYTHONSTARTUP` and the like cannot be granted.
    pub fn parse(text: &str) -> Result<SecretGrants, String> {
        let mut grants = SecretGrants::default();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((tool, names)) = entry.split_once('=') else {
                return Err(format!(
                    "`{entry}`: each entry is tool=NAME,NAME (entries separated by `;`)"
                ));
            };
            let tool = tool.trim();
            let tool_name = tool == ANY_TOOL
                || (!tool.is_empty()
                    && tool
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            if !tool_name {
                return Err(format!(
                    "`{entry}`: `{tool}` is not a tool's name (letters, digits, `-`, `_`) or `*`"
                ));
            }
            for name in names.split(',').map(str::trim) {
                if let Some(refused) = refused_variable(name) {
                    return Err(format!(
                        "`{entry}`: `{name}` cannot be a tool's variable, {}",
                        refused.reason()
                    ));
                }
                grants.grant(tool, name);
            }
        }
        Ok(grants)
    }

    /// Grants `secret` to `tool` (or to every tool, `*`).
    pub fn grant(&mut self, tool: &str, secret: &str) {
        self.0
            .entry(tool.to_owned())
            .or_default()
            .insert(secret.to_owned());
    }

    /// Of `names`, those granted to `tool` and those not, each in the order given.
    pub fn partition(&self, tool: &str, names: &[String]) -> (Vec<String>, Vec<String>) {
        names
            .iter()
            .cloned()
            .partition(|name| self.allows(tool, name))
    }

    /// Whether `tool` may use `secret`: granted to it by name or to every tool.
    pub fn allows(&self, tool: &str, secret: &str) -> bool {
        [tool, ANY_TOOL]
            .iter()
            .any(|t| self.0.get(*t).is_some_and(|names| names.contains(secret)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    #[test]
    fn grants_name_a_tool_or_every_tool() {
        let grants = SecretGrants::parse(
            " github = GITHUB_TOKEN ; slack=SLACK_BOT_TOKEN,SLACK_USER_TOKEN;*=SHARED;github=EXTRA",
        )
        .unwrap();
        assert!(grants.allows("github", "GITHUB_TOKEN"));
        assert!(grants.allows("github", "EXTRA"));
        assert!(grants.allows("slack", "SLACK_USER_TOKEN"));
        assert!(grants.allows("postgres", "SHARED"));
        assert!(!grants.allows("slack", "GITHUB_TOKEN"));
        assert!(!grants.allows("postgres", "GITHUB_TOKEN"));
        assert_eq!(SecretGrants::parse("").unwrap(), SecretGrants::default());
        assert_eq!(SecretGrants::parse(" ; ").unwrap(), SecretGrants::default());
    }

    /// A tool's declared `env` settings are passed only when granted to it (by name or `*`);
    /// by default none is.
    #[test]
    fn settings_are_passed_only_when_granted() {
        let declared: Vec<String> = ["GITHUB_API_URL", "DB_PASS", "SENTRY_DSN"]
            .map(String::from)
            .to_vec();
        let (granted, ungranted) = SecretGrants::default().partition("github", &declared);
        assert!(granted.is_empty());
        assert_eq!(ungranted, declared);
        let grants =
            SecretGrants::parse("github=GITHUB_API_URL;*=SENTRY_DSN;slack=DB_PASS").unwrap();
        let (granted, ungranted) = grants.partition("github", &declared);
        assert_eq!(granted, ["GITHUB_API_URL", "SENTRY_DSN"]);
        assert_eq!(ungranted, ["DB_PASS"]);
        let (granted, _) = grants.partition("my-github", &declared);
        assert_eq!(granted, ["SENTRY_DSN"]);
        assert_eq!(ToolSettings::defaults().settings, SecretGrants::default());
    }

    #[test]
    fn a_grant_that_cannot_be_read_says_why() {
        for (text, expected) in [
            ("github", "tool=NAME,NAME"),
            ("git hub=X", "not a tool's name"),
            ("=X", "not a tool's name"),
            ("github=", "not a variable name"),
            ("github=A,,B", "not a variable name"),
            ("github=BAD-NAME", "not a variable name"),
            // Given to the worker (and to bubblewrap on the host): never one of these.
            ("github=LD_PRELOAD", "the jail sets itself"),
            ("*=PYTHONSTARTUP", "the jail sets itself"),
            ("github=LC_ALL", "the jail sets itself"),
            ("github=path", "the jail sets itself"),
            ("github=CENTAUR_ADMIN_API_KEY", "the jail sets itself"),
        ] {
            let error = SecretGrants::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
