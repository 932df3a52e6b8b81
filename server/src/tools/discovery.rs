//! Finding tools: each `TOOL_DIRS` folder's subfolders with a `pyproject.toml` holding a
//! `[tool.centaur]` table; a later folder's tool shadows an earlier one of the same name.
//!
//! A folder whose `pyproject.toml` has no `[tool.centaur]` table (the SDK's own) is not a tool.
//! A tool whose `pyproject.toml` cannot be read, or whose table is not a valid
//! [`Manifest`], is still found: it is reported broken with the reason, and hides no other.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use centaur_protocol::tools::Manifest;
use serde::Deserialize;

/// The longest tool name.
pub const MAX_NAME: usize = 64;

/// Why a tool found cannot be loaded (shown as its `error`, one line).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{}: the folder name must be [a-z][a-z0-9_-]*, at most {MAX_NAME} characters: rename the folder",
        dir.display()
    )]
    BadName { dir: PathBuf },
    #[error("{}: cannot be read: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// A tool's `pyproject.toml`: what the server needs of it.
#[derive(Clone, Debug)]
pub struct Pyproject {
    pub manifest: Manifest,
    /// `[project].dependencies`: when empty, the environment is a bare virtual environment.
    pub dependencies: Vec<String>,
    /// The file's text (its hash names the environment).
    pub text: String,
}

/// One tool found.
#[derive(Clone, Debug)]
pub struct Found {
    pub name: String,
    /// The tool's folder.
    pub dir: PathBuf,
    /// The `TOOL_DIRS` entry it came from.
    pub source: PathBuf,
    /// Earlier `TOOL_DIRS` entries that hold a tool of the same name.
    pub shadows: Vec<PathBuf>,
    pub pyproject: Result<Pyproject, ManifestError>,
    /// A fingerprint of the folder's files (paths, sizes, modification times) and of where it
    /// was found: a change means the tool must be loaded again.
    pub fingerprint: u64,
}

/// What a look through the folders found.
#[derive(Debug, Default)]
pub struct Discovery {
    pub tools: BTreeMap<String, Found>,
    /// `TOOL_DIRS` entries that are not folders.
    pub missing: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct PyprojectFile {
    #[serde(default)]
    project: Option<ProjectTable>,
    #[serde(default)]
    tool: Option<ToolTable>,
}

#[derive(Deserialize)]
struct ProjectTable {
    #[serde(default)]
    dependencies: Vec<String>,
}

#[derive(Deserialize)]
struct ToolTable {
    #[serde(default)]
    centaur: Option<toml::Value>,
}

/// Whether `name` may name a tool: `[a-z][a-z0-9_-]*`, at most [`MAX_NAME`] characters.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name.len() <= MAX_NAME
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

/// Looks through `dirs` in order; a later folder's tool replaces an earlier one of the same
/// name, which it then shadows. Blocking (reads the file system).
pub fn discover(dirs: &[PathBuf]) -> Discovery {
    let mut discovery = Discovery::default();
    let mut seen_sources = BTreeSet::new();
    for source in dirs {
        let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.clone());
        if !seen_sources.insert(source.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&source) else {
            discovery.missing.push(source);
            continue;
        };
        let mut folders: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        folders.sort();
        for dir in folders {
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let pyproject_path = dir.join("pyproject.toml");
            if !pyproject_path.is_file() {
                continue;
            }
            let pyproject = match read_pyproject(&pyproject_path) {
                Read::NotATool => continue,
                Read::Tool(pyproject) => Ok(pyproject),
                Read::Broken(error) => Err(error),
            };
            let pyproject = if valid_name(&name) {
                pyproject
            } else {
                Err(ManifestError::BadName { dir: dir.clone() })
            };
            let mut shadows = Vec::new();
            if let Some(earlier) = discovery.tools.remove(&name) {
                shadows = earlier.shadows;
                shadows.push(earlier.source);
            }
            let fingerprint = fingerprint(&dir, &source, &shadows);
            discovery.tools.insert(
                name.clone(),
                Found {
                    name,
                    dir,
                    source: source.clone(),
                    shadows,
                    pyproject,
                    fingerprint,
                },
            );
        }
    }
    discovery
}

enum Read {
    NotATool,
    Tool(Pyproject),
    Broken(ManifestError),
}

fn read_pyproject(path: &Path) -> Read {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) => {
            return Read::Broken(ManifestError::Unreadable {
                path: path.to_owned(),
                reason: error.to_string(),
            });
        }
    };
    let invalid = |reason: String| {
        Read::Broken(ManifestError::Invalid {
            path: path.to_owned(),
            reason: one_line(&reason),
        })
    };
    let file: PyprojectFile = match toml::from_str(&text) {
        Ok(file) => file,
        Err(error) => return invalid(format!("not valid TOML: {}", error.message())),
    };
    let Some(table) = file.tool.and_then(|t| t.centaur) else {
        return Read::NotATool;
    };
    let manifest: Manifest = match table.try_into() {
        Ok(manifest) => manifest,
        Err(error) => return invalid(format!("[tool.centaur]: {}", error.message())),
    };
    if manifest.concurrency == Some(0) {
        return invalid("[tool.centaur] concurrency must be at least 1".into());
    }
    if manifest.timeout_secs == Some(0) {
        return invalid("[tool.centaur] timeout_secs must be at least 1".into());
    }
    for name in &manifest.env {
        if let Some(why) = refused_setting(name) {
            return invalid(format!("[tool.centaur] env names {name:?}, {why}"));
        }
    }
    Read::Tool(Pyproject {
        manifest,
        dependencies: file.project.map(|p| p.dependencies).unwrap_or_default(),
        text,
    })
}

/// Words that make a variable's name a secret's (`GITHUB_TOKEN`, `DB_PASSWORD`): contained.
const SECRET_PARTS: [&str; 6] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "PRIVATE",
];
/// Words that make a variable's name a secret's when they are a word of it (`API_KEY`,
/// `KEY_FILE`, not `MONKEY`).
const SECRET_WORDS: [&str; 2] = ["KEY", "KEYS"];
/// The server's own settings and secrets that [`SECRET_PARTS`] and `CENTAUR_*` do not cover.
const SERVER_VARIABLES: [&str; 2] = ["DATABASE_URL", "TOOL_DIRS"];
/// Variables the jail sets, which a tool's would replace.
const JAIL_VARIABLES: [&str; 10] = [
    "PATH",
    "HOME",
    "LANG",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// Why a name may not be one of a worker's variables (a secret's or a setting's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedVariable {
    /// Not `[A-Za-z_][A-Za-z0-9_]*`.
    NotAName,
    /// One the jail sets itself, or one that changes how a program starts (`LD_*`, `PYTHON*`,
    /// `LC_*`): given to bubblewrap on the host as its environment, an `LD_*` would load into
    /// bubblewrap itself, outside the jail.
    JailSets,
}

impl RefusedVariable {
    /// Why, as a clause following the name ("`X`, which …").
    pub fn reason(self) -> &'static str {
        match self {
            RefusedVariable::NotAName => "which is not a variable name ([A-Za-z_][A-Za-z0-9_]*)",
            RefusedVariable::JailSets => {
                "which the jail sets itself or which changes how programs start (PATH, HOME, LANG, LC_*, LD_*, PYTHON*, the proxy and CA variables, CENTAUR_*)"
            }
        }
    }
}

/// Why `name` may not be a variable of a worker's, if it may not: the one check of every name
/// a worker's environment takes from the manifest or the operator (`env`, a secret's name,
/// `CENTAUR_TOOL_SECRETS` and `CENTAUR_TOOL_SETTINGS`). Not a variable name, or one the jail
/// sets (`PATH`, `HOME`, `LANG`, the proxy's and CA bundle's, `CENTAUR_*`), which it would
/// replace, or one that changes how a program starts (`LC_*`, `LD_*`, `PYTHON*`). Case is
/// ignored.
pub fn refused_variable(name: &str) -> Option<RefusedVariable> {
    let mut chars = name.chars();
    let variable = matches!(chars.next(), Some('A'..='Z' | 'a'..='z' | '_'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !variable {
        return Some(RefusedVariable::NotAName);
    }
    let upper = name.to_ascii_uppercase();
    let jail = JAIL_VARIABLES.contains(&upper.as_str())
        || ["LC_", "LD_", "PYTHON", "CENTAUR_"]
            .iter()
            .any(|prefix| upper.starts_with(prefix));
    jail.then_some(RefusedVariable::JailSets)
}

/// Why `name` may not be in `[tool.centaur] env`, if it may not: besides what
/// [`refused_variable`] refuses, the server's own settings and secrets (`CENTAUR_*`,
/// `DATABASE_URL`, `TOOL_DIRS`, the Slack bridge's) and any name of a secret's (`*TOKEN*`,
/// `*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*CREDENTIAL*`, `*PRIVATE*`, `KEY` as a word). `env`
/// hands the server's values to the worker as they are: settings only.
pub fn refused_setting(name: &str) -> Option<&'static str> {
    const SECRET: &str = "which names a secret: declare it under [tool.centaur.secrets] (the proxy swaps a placeholder, or `reveal = true`), env is for settings";
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("CENTAUR_") || SERVER_VARIABLES.contains(&upper.as_str()) {
        return Some("a setting of the server's own, which a tool is never given");
    }
    if let Some(refused) = refused_variable(name) {
        return Some(refused.reason());
    }
    let secret = SECRET_PARTS.iter().any(|part| upper.contains(part))
        || upper.split('_').any(|word| SECRET_WORDS.contains(&word));
    secret.then_some(SECRET)
}

/// `text` on one line (TOML's errors span several, with a caret under the fault).
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether a file or folder name takes no part in a tool's fingerprint: caches, environments
/// and dotfiles change without the tool changing.
fn ignored(name: &str) -> bool {
    name.starts_with('.') || name == "__pycache__"
}

/// A fingerprint of `dir`'s files (paths, sizes, modification times, ignoring `__pycache__`,
/// `.venv` and dotfiles) and of where the tool was found.
pub fn fingerprint(dir: &Path, source: &Path, shadows: &[PathBuf]) -> u64 {
    let mut hasher = DefaultHasher::new();
    dir.hash(&mut hasher);
    source.hash(&mut hasher);
    shadows.hash(&mut hasher);
    let mut files = Vec::new();
    walk(dir, dir, &mut files, 0);
    files.sort();
    files.hash(&mut hasher);
    hasher.finish()
}

/// Folders deeper than this are not looked into (a tool is a few files).
const MAX_DEPTH: usize = 8;

fn walk(root: &Path, dir: &Path, files: &mut Vec<(PathBuf, u64, u128)>, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_str().is_none_or(ignored) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, files, depth + 1);
            continue;
        }
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let relative = path.strip_prefix(root).unwrap_or(&path).to_owned();
        files.push((relative, meta.len(), modified));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    fn folder(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "centaur-discovery-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn tool(root: &Path, name: &str, pyproject: &str) {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("pyproject.toml"), pyproject).unwrap();
        std::fs::write(root.join(name).join("client.py"), "").unwrap();
    }

    #[test]
    fn names() {
        assert!(valid_name("github"));
        assert!(valid_name("a1_b-c"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("Abc"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(valid_name(&"a".repeat(64)));
    }

    #[test]
    fn env_takes_settings_only() {
        for allowed in [
            "GITHUB_API_URL",
            "SLACK_API_URL",
            "WEATHER_API_URL",
            "MONKEY_MODE",
        ] {
            assert_eq!(refused_setting(allowed), None, "{allowed}");
        }
        for refused in [
            "CENTAUR_ADMIN_API_KEY",
            "CENTAUR_PROXY_TOKEN",
            "centaur_data_dir",
            "DATABASE_URL",
            "TOOL_DIRS",
            "SLACK_SIGNING_SECRET",
            "SLACK_BOT_TOKEN",
            "SLACK_APP_TOKEN",
            "GITHUB_TOKEN",
            "DB_PASSWORD",
            "FTP_PASSWD",
            "AWS_CREDENTIALS",
            "SSH_PRIVATE",
            "OPENAI_API_KEY",
            "KEY_FILE",
            "api_keys",
            "LD_PRELOAD",
            "PYTHONPATH",
            "PYTHONSTARTUP",
            "PATH",
            "HOME",
            "LANG",
            "LC_ALL",
            "HTTP_PROXY",
            "https_proxy",
            "ALL_PROXY",
            "no_proxy",
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "A=B",
            "1X",
            "",
        ] {
            assert!(refused_setting(refused).is_some(), "{refused}");
        }
        // The jail's own variables, whatever the variable is for.
        for allowed in ["DATABASE_URL", "GITHUB_TOKEN", "WEATHER_API_KEY"] {
            assert_eq!(refused_variable(allowed), None, "{allowed}");
        }
        for refused in [
            "PATH",
            "PYTHONPATH",
            "LD_PRELOAD",
            "CENTAUR_PROXY_SOCKET",
            "HTTPS_PROXY",
        ] {
            assert!(refused_variable(refused).is_some(), "{refused}");
        }
    }

    #[test]
    fn a_manifest_handing_over_server_secrets_is_broken() {
        let base = folder("env");
        tool(
            &base,
            "greedy",
            "[tool.centaur]\nenv = [\"GITHUB_API_URL\", \"CENTAUR_ADMIN_API_KEY\"]\n",
        );
        tool(&base, "sneaky", "[tool.centaur]\nenv = [\"PYTHONPATH\"]\n");
        tool(
            &base,
            "fine",
            "[tool.centaur]\nenv = [\"GITHUB_API_URL\"]\n",
        );
        let found = discover(std::slice::from_ref(&base));
        let greedy = found.tools["greedy"]
            .pyproject
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(
            greedy.contains("\"CENTAUR_ADMIN_API_KEY\"") && greedy.contains("server's own"),
            "{greedy}"
        );
        assert!(!greedy.contains('\n'), "{greedy}");
        let sneaky = found.tools["sneaky"]
            .pyproject
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(
            sneaky.contains("\"PYTHONPATH\"") && sneaky.contains("jail sets"),
            "{sneaky}"
        );
        assert!(found.tools["fine"].pyproject.is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn later_folders_shadow_and_broken_tools_are_found() {
        let base = folder("base");
        let overlay = folder("overlay");
        tool(&base, "one", "[tool.centaur]\ndescription = \"base one\"\n");
        tool(&base, "two", "[tool.centaur]\ndescription = \"base two\"\n");
        tool(&base, "sdk", "[project]\nname = \"centaur-tools\"\n");
        tool(
            &overlay,
            "one",
            "[project]\ndependencies = [\"httpx\"]\n[tool.centaur]\ndescription = \"overlay one\"\n",
        );
        tool(&overlay, "bad", "[tool.centaur]\nhostz = []\n");
        tool(&overlay, "worse", "[tool.centaur\n");
        tool(&overlay, "Caps", "[tool.centaur]\n");
        let found = discover(&[base.clone(), overlay.clone(), base.join("nowhere")]);
        assert_eq!(
            found.tools.keys().collect::<Vec<_>>(),
            ["Caps", "bad", "one", "two", "worse"]
        );
        let one = &found.tools["one"];
        assert_eq!(one.source, overlay.canonicalize().unwrap());
        assert_eq!(one.shadows, vec![base.canonicalize().unwrap()]);
        let pyproject = one.pyproject.as_ref().unwrap();
        assert_eq!(pyproject.manifest.description, "overlay one");
        assert_eq!(pyproject.dependencies, ["httpx"]);
        let bad = found.tools["bad"]
            .pyproject
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("pyproject.toml") && bad.contains("hostz"),
            "{bad}"
        );
        let worse = found.tools["worse"]
            .pyproject
            .as_ref()
            .unwrap_err()
            .to_string();
        assert!(
            worse.contains("not valid TOML") && !worse.contains('\n'),
            "{worse}"
        );
        assert!(matches!(
            found.tools["Caps"].pyproject,
            Err(ManifestError::BadName { .. })
        ));
        assert_eq!(found.missing, vec![base.join("nowhere")]);
        std::fs::remove_dir_all(&base).unwrap();
        std::fs::remove_dir_all(&overlay).unwrap();
    }

    #[test]
    fn the_fingerprint_follows_files_but_not_caches() {
        let base = folder("fingerprint");
        tool(&base, "one", "[tool.centaur]\n");
        let dir = base.join("one");
        let before = fingerprint(&dir, &base, &[]);
        std::fs::create_dir_all(dir.join("__pycache__")).unwrap();
        std::fs::write(dir.join("__pycache__/client.pyc"), "x").unwrap();
        std::fs::create_dir_all(dir.join(".venv")).unwrap();
        std::fs::write(dir.join(".venv/x"), "x").unwrap();
        assert_eq!(before, fingerprint(&dir, &base, &[]));
        std::fs::write(dir.join("client.py"), "changed").unwrap();
        assert_ne!(before, fingerprint(&dir, &base, &[]));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
