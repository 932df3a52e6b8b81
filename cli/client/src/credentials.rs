//! What `centaur login` keeps: the API URL it logged in to (the default for later commands)
//! and the token. The token goes to the login keychain on macOS; on Linux, where the only
//! keyring every machine has (the kernel's) forgets everything at reboot, to a file only its
//! owner can read. `login` says which.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

use crate::api::{Client, Failure};
use crate::private_file::WriteError;

const KEYRING_SERVICE: &str = "centaur-cli";

/// Where the API is when neither `--api-url`, `CENTAUR_API_URL` nor a login says otherwise.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// `~/.config/centaur/credentials.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// The URL of the last login.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
    /// Tokens by API URL (where no keychain holds them).
    #[serde(default)]
    tokens: BTreeMap<String, String>,
}

/// Why a login or logout could not be done or kept.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("neither XDG_CONFIG_HOME nor HOME is set")]
    NoConfigFolder,
    #[error("cannot create {}: {source}", .path.display())]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot ask: {0}")]
    Prompt(#[source] dialoguer::Error),
    #[error("{0}")]
    Stdin(#[source] std::io::Error),
    /// `--token-env` names a variable that is not set.
    #[error("{0} is not set")]
    TokenVariableUnset(String),
    #[error("the token is empty")]
    EmptyToken,
}

impl CredentialsError {
    /// 2 for what the command line got wrong, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            CredentialsError::TokenVariableUnset(_) | CredentialsError::EmptyToken => 2,
            CredentialsError::NoConfigFolder
            | CredentialsError::CreateFolder { .. }
            | CredentialsError::Write(_)
            | CredentialsError::Prompt(_)
            | CredentialsError::Stdin(_) => 1,
        }
    }
}

fn file() -> Result<PathBuf, CredentialsError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or(CredentialsError::NoConfigFolder)?;
    Ok(base.join("centaur").join("credentials.json"))
}

fn read_file() -> Saved {
    file()
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn write_file(saved: &Saved) -> Result<PathBuf, CredentialsError> {
    use std::os::unix::fs::PermissionsExt;
    let path = file()?;
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).map_err(|source| CredentialsError::CreateFolder {
        path: dir.to_owned(),
        source,
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    crate::private_file::write(&path, &serde_json::to_string_pretty(saved).expect("json"))?;
    Ok(path)
}

/// The API URL of the last `centaur login`, if any.
pub fn saved_url() -> Option<String> {
    read_file().api_url
}

/// The saved token for `url`.
pub fn load(url: &str) -> Result<String, Failure> {
    if cfg!(target_os = "macos")
        && let Ok(token) = centaur_keyring::read(KEYRING_SERVICE, url)
    {
        return Ok(token);
    }
    read_file()
        .tokens
        .remove(url)
        .ok_or_else(|| Failure::NotLoggedIn(url.to_owned()))
}

/// Why a token went to the credentials file instead of an OS keyring.
#[derive(Debug, thiserror::Error)]
enum NotInKeyring {
    #[error("the kernel keyring would forget it at reboot")]
    ForgetsAtReboot,
    #[error(transparent)]
    Refused(centaur_keyring::KeyringError),
}

/// Asks for the URL (offering `url`) and the token, checks them against the server, and saves
/// them. Without a terminal, or with `token_env`, nothing is asked: the token comes from that
/// variable or from one line on stdin.
pub async fn login(url: &str, token_env: Option<String>) -> Result<ExitCode, Failure> {
    let interactive = token_env.is_none() && std::io::stdin().is_terminal();
    let prompt_failed = CredentialsError::Prompt;
    let url = if interactive {
        let answer: String = dialoguer::Input::new()
            .with_prompt("Centaur API URL")
            .with_initial_text(url)
            .interact_text()
            .map_err(prompt_failed)?;
        answer.trim().trim_end_matches('/').to_owned()
    } else {
        url.to_owned()
    };
    let token = match token_env {
        Some(var) => {
            std::env::var(&var).map_err(|_| CredentialsError::TokenVariableUnset(var.clone()))?
        }
        None if interactive => dialoguer::Password::new()
            .with_prompt(format!("API token for {url}"))
            .interact()
            .map_err(prompt_failed)?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(CredentialsError::Stdin)?;
            line
        }
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(CredentialsError::EmptyToken.into());
    }
    // Checked before it is kept.
    Client::new(url.clone(), token.clone()).check().await?;
    let keyring = if cfg!(target_os = "macos") {
        centaur_keyring::write(KEYRING_SERVICE, &url, &token).map_err(NotInKeyring::Refused)
    } else {
        Err(NotInKeyring::ForgetsAtReboot)
    };
    let mut saved = read_file();
    saved.api_url = Some(url.clone());
    let said = match keyring {
        Ok(()) => "the token is in the keychain".to_owned(),
        Err(reason) => {
            saved.tokens.insert(url.clone(), token);
            format!(
                "the token is in {} (readable only by you), not in an OS keyring: {reason}",
                file()?.display()
            )
        }
    };
    write_file(&saved)?;
    let _ = std::io::stderr().flush();
    eprintln!("centaur: logged in to {url}; {said}");
    Ok(ExitCode::SUCCESS)
}

pub fn logout(url: &str) -> Result<ExitCode, Failure> {
    if cfg!(target_os = "macos") {
        let _ = centaur_keyring::delete(KEYRING_SERVICE, url);
    }
    let mut saved = read_file();
    let had_token = saved.tokens.remove(url).is_some();
    let was_default = saved.api_url.as_deref() == Some(url);
    if was_default {
        saved.api_url = None;
    }
    if had_token || was_default {
        write_file(&saved)?;
    }
    eprintln!("centaur: logged out of {url}");
    Ok(ExitCode::SUCCESS)
}
