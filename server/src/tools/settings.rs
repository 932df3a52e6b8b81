//! The tools' settings (flattened into [`crate::Config`]).

use std::collections::{BTreeMap, BTreeSet};
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
            secrets: SecretGrants::default(),
            uv: PathBuf::from("uv"),
            python: "python3".into(),
            isolation: ToolIsolation::Bwrap,
            reload_ms: 1000,
            memory_mb: 4096,
        }
    }
}

/// `CENTAUR_TOOL_SECRETS`: tool name (or `*`, any tool) → the secrets granted to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretGrants(BTreeMap<String, BTreeSet<String>>);

/// The tool name that stands for every tool in `CENTAUR_TOOL_SECRETS`.
pub const ANY_TOOL: &str = "*";

impl SecretGrants {
    /// Reads `tool=NAME,NAME;tool2=NAME` (spaces around the parts are ignored, a tool named
    /// twice gets both lists, an empty text grants nothing).
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
                let secret_name = name
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !secret_name {
                    return Err(format!(
                        "`{entry}`: `{name}` is not a secret's name (letters, digits and `_`)"
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

    #[test]
    fn a_grant_that_cannot_be_read_says_why() {
        for (text, expected) in [
            ("github", "tool=NAME,NAME"),
            ("git hub=X", "not a tool's name"),
            ("=X", "not a tool's name"),
            ("github=", "not a secret's name"),
            ("github=A,,B", "not a secret's name"),
            ("github=BAD-NAME", "not a secret's name"),
        ] {
            let error = SecretGrants::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
