//! Where `centaur login` keeps the token: the login keychain on macOS; on Linux, where the
//! only keyring every machine has (the kernel's) forgets everything at reboot, a file only its
//! owner can read. `login` says which.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::client::{Client, Failure};

const KEYRING_SERVICE: &str = "centaur-cli";

fn file() -> Result<PathBuf, Failure> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .ok_or_else(|| Failure::Local("neither XDG_CONFIG_HOME nor HOME is set".into()))?;
    Ok(base.join("centaur").join("credentials.json"))
}

fn read_file() -> serde_json::Map<String, serde_json::Value> {
    file()
        .ok()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn write_file(tokens: &serde_json::Map<String, serde_json::Value>) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = file()?;
    let failed =
        |e: std::io::Error| Failure::Local(format!("cannot write {}: {e}", path.display()));
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().expect("a parent");
    std::fs::create_dir_all(dir).map_err(failed)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(failed)?;
    // A file made earlier with other permissions is tightened before the token goes in.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(failed)?;
    out.write_all(
        serde_json::to_string_pretty(tokens)
            .expect("json")
            .as_bytes(),
    )
    .map_err(failed)?;
    Ok(path)
}

/// The saved token for `url`.
pub fn load(url: &str) -> Result<String, Failure> {
    if cfg!(target_os = "macos")
        && let Ok(token) = centaur_proxy::keyring::read(KEYRING_SERVICE, url)
    {
        return Ok(token);
    }
    read_file()
        .get(url)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| Failure::NotLoggedIn(url.to_owned()))
}

pub async fn login(url: &str, token_env: Option<String>) -> Result<ExitCode, Failure> {
    let token = match token_env {
        Some(var) => {
            std::env::var(&var).map_err(|_| Failure::Usage(format!("{var} is not set")))?
        }
        None => {
            eprint!("API token for {url}: ");
            let _ = std::io::stderr().flush();
            let line = read_hidden().map_err(|e| Failure::Local(e.to_string()))?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(Failure::Usage("the token is empty".into()));
    }
    // Checked before it is kept.
    Client::new(url.to_owned(), token.clone())
        .get("/agent/threads?limit=1")
        .await?;
    let keyring = if cfg!(target_os = "macos") {
        centaur_proxy::keyring::write(KEYRING_SERVICE, url, &token)
    } else {
        Err("the kernel keyring would forget it at reboot".to_owned())
    };
    match keyring {
        Ok(()) => eprintln!("centaur: logged in to {url}; the token is in the keychain"),
        Err(reason) => {
            let mut tokens = read_file();
            tokens.insert(url.to_owned(), token.into());
            let path = write_file(&tokens)?;
            eprintln!(
                "centaur: logged in to {url}; the token is in {} (readable only by you), not in an OS keyring: {reason}",
                path.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A line from stdin, not echoed when stdin is a terminal.
fn read_hidden() -> std::io::Result<String> {
    // SAFETY: termios calls on stdin with a zeroed struct the kernel fills in.
    let saved = unsafe {
        let mut term: libc::termios = std::mem::zeroed();
        (libc::tcgetattr(0, &mut term) == 0).then_some(term)
    };
    if let Some(term) = saved {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if let Some(term) = saved {
        // SAFETY: restores what was read above.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &term) };
        eprintln!();
    }
    read.map(|_| line)
}

pub fn logout(url: &str) -> Result<ExitCode, Failure> {
    if cfg!(target_os = "macos") {
        let _ = centaur_proxy::keyring::delete(KEYRING_SERVICE, url);
    }
    let mut tokens = read_file();
    if tokens.remove(url).is_some() {
        write_file(&tokens)?;
    }
    eprintln!("centaur: logged out of {url}");
    Ok(ExitCode::SUCCESS)
}
