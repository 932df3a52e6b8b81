//! The local stack's tools (`docs/tools.md`): the built-in `tools/` folder of the checkout
//! `centaur dev` runs from, the overlays given with `--tool-dir` (or `CENTAUR_DEV_TOOL_DIRS`),
//! the `uv` that builds their environments, and the secrets and egress additions kept in the
//! home.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use centaur_proxy::secrets::SecretSource;
use centaur_server::tools::settings::{ANY_TOOL, SecretGrants};

use super::home::Home;
use super::setup::MODEL_KEYS;

/// The file whose presence marks a checkout's `tools/` folder: the SDK's package.
const SDK_MARK: &str = "tools/sdk/centaur_tools";

/// The built-in `tools/` folder: the first folder holding `tools/sdk/centaur_tools`, walking up
/// from the current folder, then from this program's (`target/release/centaur` in a checkout).
pub fn builtin_dir() -> Option<PathBuf> {
    let here = std::env::current_dir().ok();
    let program = std::env::current_exe().ok();
    [here, program]
        .into_iter()
        .flatten()
        .find_map(|start| checkout_tools(&start))
}

/// `<ancestor>/tools` for the nearest ancestor of `start` (itself included) holding the SDK.
fn checkout_tools(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(SDK_MARK).is_dir())
        .map(|dir| dir.join("tools"))
}

/// The folders the stack's server finds tools in, in `TOOL_DIRS` order: the built-in folder
/// (when there is one), then the overlays, each shadowing the tools of the folders before it.
pub fn tool_dirs(builtin: Option<PathBuf>, overlays: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = builtin.into_iter().collect();
    for overlay in overlays {
        if !dirs.contains(overlay) {
            dirs.push(overlay.clone());
        }
    }
    dirs
}

/// `uv`: on PATH, else where `pip install --user uv` and uv's own installer put it.
pub fn find_uv() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("uv"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        [".local/bin/uv", ".cargo/bin/uv"]
            .into_iter()
            .map(|p| home.join(p))
            .find(|p| p.is_file())
    })
}

/// Secrets for tools, one file per secret in `secrets/tools/` (its name is the file's): given
/// to the proxy as its sources, so a tool's placeholder is swapped for the file's contents on
/// the hosts the tool binds it to.
pub fn secret_sources(home: &Home) -> HashMap<String, SecretSource> {
    let Ok(entries) = std::fs::read_dir(home.tool_secrets()) else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_file())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            valid.then(|| (name, SecretSource::File { path: entry.path() }))
        })
        .collect()
}

/// The stack's grants (`CENTAUR_TOOL_SECRETS`): every tool may use every secret in
/// `secrets/tools/` (a person put it there for tools: `*=<the files' names>`); the model keys
/// are never granted, even when a file there has a model key's name.
pub fn secret_grants(home: &Home) -> SecretGrants {
    let mut grants = SecretGrants::default();
    for name in secret_sources(home).keys() {
        if !MODEL_KEYS.iter().any(|k| k.secret == name) {
            grants.grant(ANY_TOOL, name);
        }
    }
    grants
}

/// The stack's settings grants (`CENTAUR_TOOL_SETTINGS`): none, unless `centaur dev` was
/// started with `CENTAUR_TOOL_SETTINGS` in its environment (`tool=NAME,NAME;*=NAME`), the one
/// tool variable the stack takes from there. The server runs in this process, with the
/// developer's whole shell environment: a tool's `[tool.centaur] env` reads only what is
/// granted here. A text that cannot be read grants nothing, with a warning saying why.
pub fn setting_grants(text: Option<&str>) -> SecretGrants {
    let Some(text) = text else {
        return SecretGrants::default();
    };
    SecretGrants::parse(text).unwrap_or_else(|error| {
        tracing::warn!(%error, "CENTAUR_TOOL_SETTINGS cannot be read; no tool is given a setting");
        SecretGrants::default()
    })
}

/// The operator's additions to the tools' egress (`CENTAUR_TOOL_EGRESS`): `tool-egress.json` in
/// the home, made empty (`{}`) when missing so that the server watches it from the start and
/// an edit applies without a restart. `None` when it cannot be written.
pub fn egress_file(home: &Home) -> Option<PathBuf> {
    let path = home.tool_egress();
    if !path.exists()
        && let Err(error) = std::fs::write(&path, "{}\n")
    {
        tracing::warn!(path = %path.display(), %error, "cannot write the tools' egress additions");
        return None;
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checkout_is_found_from_below_it() {
        let root = std::env::temp_dir().join(format!("centaur-dev-tools-{}", std::process::id()));
        let deep = root.join("target/release");
        std::fs::create_dir_all(root.join(SDK_MARK)).unwrap();
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(checkout_tools(&deep), Some(root.join("tools")));
        assert_eq!(checkout_tools(&root), Some(root.join("tools")));
        assert_eq!(checkout_tools(Path::new("/")), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The built-in folder first, overlays after it in the order given, none twice.
    #[test]
    fn overlays_come_after_the_builtin_folder() {
        let builtin = PathBuf::from("/src/centaur/tools");
        let overlays = [PathBuf::from("/srv/acme-tools"), builtin.clone()];
        assert_eq!(
            tool_dirs(Some(builtin.clone()), &overlays),
            [builtin, PathBuf::from("/srv/acme-tools")]
        );
        assert_eq!(
            tool_dirs(None, &overlays[..1]),
            [PathBuf::from("/srv/acme-tools")]
        );
    }

    #[test]
    fn tool_secrets_are_files_named_for_the_secret() {
        let root = std::env::temp_dir().join(format!("centaur-dev-secrets-{}", std::process::id()));
        let home = Home { root: root.clone() };
        assert!(secret_sources(&home).is_empty());
        std::fs::create_dir_all(home.tool_secrets()).unwrap();
        std::fs::write(home.tool_secrets().join("GITHUB_TOKEN"), "ghp_x\n").unwrap();
        std::fs::write(home.tool_secrets().join("not a name"), "x").unwrap();
        let sources = secret_sources(&home);
        assert_eq!(sources.keys().collect::<Vec<_>>(), ["GITHUB_TOKEN"]);
        assert!(matches!(
            &sources["GITHUB_TOKEN"],
            SecretSource::File { path } if path.ends_with("secrets/tools/GITHUB_TOKEN")
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// No setting is granted unless `CENTAUR_TOOL_SETTINGS` says so; one that cannot be read
    /// grants nothing.
    #[test]
    fn settings_are_granted_only_by_centaur_tool_settings() {
        assert_eq!(setting_grants(None), SecretGrants::default());
        let grants = setting_grants(Some("github=GITHUB_API_URL;*=SENTRY_ENVIRONMENT"));
        assert!(grants.allows("github", "GITHUB_API_URL"));
        assert!(grants.allows("slack", "SENTRY_ENVIRONMENT"));
        assert!(!grants.allows("slack", "GITHUB_API_URL"));
        assert_eq!(
            setting_grants(Some("github=LD_PRELOAD")),
            SecretGrants::default()
        );
    }

    /// Every tool may use the secrets in `secrets/tools/`, none a model key.
    #[test]
    fn the_tools_secrets_are_granted_to_every_tool_but_not_the_model_keys() {
        let root = std::env::temp_dir().join(format!("centaur-dev-grants-{}", std::process::id()));
        let home = Home { root: root.clone() };
        assert_eq!(secret_grants(&home), SecretGrants::default());
        std::fs::create_dir_all(home.tool_secrets()).unwrap();
        for name in ["GITHUB_TOKEN", "SLACK_BOT_TOKEN", "OPENAI_API_KEY"] {
            std::fs::write(home.tool_secrets().join(name), "x\n").unwrap();
        }
        let grants = secret_grants(&home);
        assert!(grants.allows("github", "GITHUB_TOKEN"));
        assert!(grants.allows("my-overlay-tool", "SLACK_BOT_TOKEN"));
        assert!(!grants.allows("github", "OPENAI_API_KEY"));
        assert!(!grants.allows("github", "ANTHROPIC_API_KEY"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
