//! `centaur dev keys`: the model keys and where the model APIs are, asked for in a terminal or
//! given by flags (and environment variables) without one. Keys go to `secrets/`, which only the
//! proxy reads; base URLs and Codex's model go through [`super::endpoints`] into `codex.toml`
//! and the egress policy together.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use super::endpoints::{self, Change, EndpointError, Endpoints, KeyHeader, Provider};
use super::home::Home;
use super::setup::{self, ModelKey, SetupError};
use centaur_client::private_file::{WriteError, write as write_private, write_atomic};

#[derive(Clone, Debug, Default, clap::Args)]
pub struct KeysArgs {
    /// Read the OpenAI key (for Codex) from stdin: `echo "$KEY" | centaur dev keys --openai-key-stdin`.
    #[arg(long)]
    pub openai_key_stdin: bool,
    /// Read the Anthropic key (for Claude Code) from stdin.
    #[arg(long, conflicts_with = "openai_key_stdin")]
    pub anthropic_key_stdin: bool,
    /// The OpenAI-compatible API Codex talks to (it POSTs to URL/responses), e.g.
    /// https://gateway.example.com/v1 or http://127.0.0.1:8000/v1; a query such as Azure's
    /// ?api-version=… is kept. Also CENTAUR_OPENAI_BASE_URL.
    #[arg(
        long,
        env = "CENTAUR_OPENAI_BASE_URL",
        hide_env = true,
        value_name = "URL"
    )]
    pub openai_base_url: Option<String>,
    /// The model Codex asks that API for (also CENTAUR_CODEX_MODEL) [default: gpt-5.5].
    #[arg(
        long,
        env = "CENTAUR_CODEX_MODEL",
        hide_env = true,
        value_name = "MODEL"
    )]
    pub codex_model: Option<String>,
    /// How that API takes the key: `authorization` (Bearer) or `api-key` (Azure OpenAI)
    /// [default: api-key for *.azure.com hosts, else authorization].
    #[arg(long, value_enum, value_name = "HEADER")]
    pub openai_key_header: Option<KeyHeader>,
    /// The Anthropic API Claude Code talks to (its ANTHROPIC_BASE_URL, without /v1). Also
    /// CENTAUR_ANTHROPIC_BASE_URL.
    #[arg(
        long,
        env = "CENTAUR_ANTHROPIC_BASE_URL",
        hide_env = true,
        value_name = "URL"
    )]
    pub anthropic_base_url: Option<String>,
}

impl KeysArgs {
    fn change(&self) -> Change {
        let mut change = Change {
            openai_base_url: self.openai_base_url.clone(),
            codex_model: self.codex_model.clone(),
            openai_key_header: self.openai_key_header,
            anthropic_base_url: self.anthropic_base_url.clone(),
        };
        if change.openai_key_header.is_none()
            && let Some(url) = &change.openai_base_url
        {
            change.openai_key_header = Some(key_header_for(url));
        }
        change
    }

    /// Whether anything was given: then nothing is asked.
    fn given(&self) -> bool {
        self.openai_key_stdin || self.anthropic_key_stdin || !self.change().is_empty()
    }
}

/// Azure OpenAI takes its keys in `api-key`; everything else in `Authorization`.
fn key_header_for(url: &str) -> KeyHeader {
    let host = reqwest::Url::parse(url.trim())
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    if host.ends_with(".azure.com") {
        KeyHeader::ApiKey
    } else {
        KeyHeader::Authorization
    }
}

/// Why `centaur dev keys` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(
        "`centaur dev keys` asks in a terminal, and stdin is not one: give the key on stdin with --openai-key-stdin or --anthropic-key-stdin (e.g. `echo \"$OPENAI_API_KEY\" | centaur dev keys --openai-key-stdin`), and endpoints with --openai-base-url, --codex-model, --anthropic-base-url (see `centaur dev keys --help`)"
    )]
    NoTerminal,
    #[error(
        "no {0} key on stdin: pipe it in, e.g. `echo \"$KEY\" | centaur dev keys --{1}-key-stdin`"
    )]
    EmptyKey(&'static str, &'static str),
    #[error("the {0} key on stdin is more than one line: give the key alone")]
    KeyLines(&'static str),
    #[error("cannot read the key from stdin: {0}")]
    ReadStdin(#[source] std::io::Error),
    #[error("cannot ask: {0}")]
    Prompt(#[source] dialoguer::Error),
    /// A base URL or model given on the command line.
    #[error(transparent)]
    BadEndpoint(EndpointError),
    /// The files in the home.
    #[error(transparent)]
    Files(EndpointError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Private(#[from] WriteError),
}

impl KeysError {
    /// 2 for what the command line got wrong, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            KeysError::NoTerminal
            | KeysError::EmptyKey(..)
            | KeysError::KeyLines(_)
            | KeysError::BadEndpoint(_) => 2,
            KeysError::ReadStdin(_)
            | KeysError::Prompt(_)
            | KeysError::Files(_)
            | KeysError::Setup(_)
            | KeysError::Private(_) => 1,
        }
    }
}

/// Runs `centaur dev keys`: asks in a terminal when nothing is given, else does what the flags
/// say; refuses without a terminal and without flags.
pub fn run(home: &Home, args: KeysArgs) -> Result<ExitCode, KeysError> {
    if !args.given() && !std::io::stdin().is_terminal() {
        return Err(KeysError::NoTerminal);
    }
    setup::prepare(home)?;
    let current = Endpoints::read(home).map_err(KeysError::Files)?;
    let (keys, change) = if args.given() {
        (key_from_stdin(&args)?, args.change())
    } else if std::io::stdin().is_terminal() {
        ask(home, &current)?
    } else {
        return Err(KeysError::NoTerminal);
    };
    // Everything is checked before anything is written: the endpoints (which read the policy
    // first) before the keys, each file replaced whole, so a proxy reading a key never sees
    // it half written.
    let next = current.changed(&change).map_err(KeysError::BadEndpoint)?;
    if !change.is_empty() {
        endpoints::save(home, &next).map_err(KeysError::Files)?;
    }
    for (provider, value) in &keys {
        write_atomic(&provider.key().path(home), value)?;
    }
    write_private(&home.secrets().join(".asked"), "")?;
    report(home, &keys, &change, &next);
    install_clis(home, &keys)?;
    Ok(ExitCode::SUCCESS)
}

/// The harness CLIs to install now: those whose key was just given and that are not there
/// yet. (A key kept from before whose CLI is missing waits for `centaur dev`, or for the key
/// to be given again.)
fn clis_to_install(home: &Home, keys: &[(Provider, String)]) -> Vec<&'static ModelKey> {
    keys.iter()
        .map(|(provider, _)| provider.key())
        .filter(|key| !key.installed(home))
        .collect()
}

/// Installs the CLIs of the keys just given, so that a running stack offers their harnesses
/// at once (its server looks for the CLI on every harness list and turn). A failed install
/// (no npm, no network) is said, and leaves the key saved: the next `centaur dev` tries again.
fn install_clis(home: &Home, keys: &[(Provider, String)]) -> Result<(), KeysError> {
    let wanted = clis_to_install(home, keys);
    if wanted.is_empty() {
        return Ok(());
    }
    // A `centaur dev` preparing the home may be installing too: one npm at a time.
    let _setup = setup::lock(home)?;
    let running = home.running().is_some();
    for key in wanted {
        if key.installed(home) {
            continue;
        }
        match setup::install_cli(home, key) {
            Ok(()) if running => eprintln!(
                "centaur: {} is ready: the running stack offers it now",
                key.harness
            ),
            Ok(()) => {}
            Err(error) => eprintln!(
                "  {} is not available yet: {error}; the key is saved, and the next `centaur dev` (or `centaur dev keys` with the key) tries again",
                key.harness
            ),
        }
    }
    Ok(())
}

/// The key piped in, for the provider whose `--…-key-stdin` was given.
fn key_from_stdin(args: &KeysArgs) -> Result<Vec<(Provider, String)>, KeysError> {
    let (provider, flag) = match (args.openai_key_stdin, args.anthropic_key_stdin) {
        (true, _) => (Provider::OpenAi, "openai"),
        (false, true) => (Provider::Anthropic, "anthropic"),
        (false, false) => return Ok(Vec::new()),
    };
    let name = match provider {
        Provider::OpenAi => "OpenAI",
        Provider::Anthropic => "Anthropic",
    };
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(KeysError::ReadStdin)?;
    let key = text.trim();
    if key.is_empty() {
        return Err(KeysError::EmptyKey(name, flag));
    }
    if key.lines().count() > 1 {
        return Err(KeysError::KeyLines(name));
    }
    Ok(vec![(provider, key.to_owned())])
}

/// In a terminal: each key (Enter keeps it), each base URL and Codex's model (Enter keeps the
/// value shown).
fn ask(home: &Home, current: &Endpoints) -> Result<(Vec<(Provider, String)>, Change), KeysError> {
    eprintln!(
        "Model keys stay with the proxy (in {}, readable only by you); sandboxes only ever see placeholders. Enter keeps what is there.",
        home.secrets().display()
    );
    let mut keys = Vec::new();
    let mut change = Change::default();
    for provider in [Provider::OpenAi, Provider::Anthropic] {
        let key = provider.key();
        let kept = if key.present(home) { "keep" } else { "skip" };
        let value = dialoguer::Password::new()
            .with_prompt(format!("{} (Enter to {kept})", key.label))
            .allow_empty_password(true)
            .interact()
            .map_err(KeysError::Prompt)?;
        if !value.trim().is_empty() {
            keys.push((provider, value.trim().to_owned()));
        }
        let (label, now) = match provider {
            Provider::OpenAi => (
                "OpenAI-compatible base URL (for Codex)",
                &current.openai.base_url,
            ),
            Provider::Anthropic => (
                "Anthropic base URL (for Claude Code)",
                &current.anthropic.base_url,
            ),
        };
        let url: String = dialoguer::Input::new()
            .with_prompt(label)
            .default(now.trim_end_matches('/').to_owned())
            .validate_with(|text: &String| {
                endpoints::check_base_url(provider, text).map_err(|e| e.to_string())
            })
            .interact_text()
            .map_err(KeysError::Prompt)?;
        if url.trim().trim_end_matches('/') != now.trim_end_matches('/') {
            match provider {
                Provider::OpenAi => {
                    change.openai_key_header = Some(key_header_for(&url));
                    change.openai_base_url = Some(url);
                }
                Provider::Anthropic => change.anthropic_base_url = Some(url),
            }
        }
        if provider == Provider::OpenAi {
            let model: String = dialoguer::Input::new()
                .with_prompt("Codex model")
                .default(current.openai.model.clone())
                .interact_text()
                .map_err(KeysError::Prompt)?;
            if model.trim() != current.openai.model {
                change.codex_model = Some(model);
            }
        }
    }
    Ok((keys, change))
}

/// What was saved and when it takes effect, on stderr.
fn report(home: &Home, keys: &[(Provider, String)], change: &Change, next: &Endpoints) {
    let running = home.running().is_some();
    for (provider, _) in keys {
        eprintln!("centaur: {} saved", provider.key().label);
    }
    if change.openai_base_url.is_some()
        || change.codex_model.is_some()
        || change.openai_key_header.is_some()
    {
        eprintln!(
            "centaur: Codex talks to {} (model {}); {} and {} updated",
            next.openai.base_url.trim_end_matches('/'),
            next.openai.model,
            home.codex_config().display(),
            home.egress_policy().display()
        );
    }
    if change.anthropic_base_url.is_some() {
        eprintln!(
            "centaur: Claude Code talks to {}; {} updated",
            next.anthropic.base_url.trim_end_matches('/'),
            home.egress_policy().display()
        );
    }
    if keys.is_empty() && change.is_empty() {
        eprintln!("centaur: nothing changed");
        return;
    }
    if running {
        eprintln!("centaur: the running stack uses this for new threads");
    }
}

#[cfg(test)]
mod tests {
    use centaur_protocol::Harness;

    use super::*;

    /// `centaur dev keys` installs the CLI of a key given now when it is missing, and nothing
    /// else: not one already there, not one whose key was not given this time.
    #[test]
    fn installs_the_missing_cli_of_each_key_given() {
        let home = Home {
            root: centaur_test_support::temp::temp_dir("dev-keys-install"),
        };
        let given = |providers: &[Provider]| -> Vec<(Provider, String)> {
            providers
                .iter()
                .map(|p| (*p, "sk-test".to_owned()))
                .collect()
        };
        let harnesses =
            |keys: Vec<&ModelKey>| -> Vec<Harness> { keys.iter().map(|key| key.harness).collect() };
        assert_eq!(harnesses(clis_to_install(&home, &given(&[]))), []);
        assert_eq!(
            harnesses(clis_to_install(&home, &given(&[Provider::OpenAi]))),
            [Harness::Codex]
        );
        assert_eq!(
            harnesses(clis_to_install(&home, &given(&[Provider::Anthropic]))),
            [Harness::ClaudeCode]
        );
        // Codex's CLI there (as `npm install` and the link leave it): only Claude Code's is
        // missing.
        let bin = home.harnesses().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("codex"), "").unwrap();
        assert_eq!(
            harnesses(clis_to_install(&home, &given(&[Provider::OpenAi]))),
            []
        );
        assert_eq!(
            harnesses(clis_to_install(
                &home,
                &given(&[Provider::OpenAi, Provider::Anthropic])
            )),
            [Harness::ClaudeCode]
        );
        let _ = std::fs::remove_dir_all(&home.root);
    }

    /// The hint for a harness without its key names the provider as people do.
    #[test]
    fn each_key_names_its_provider() {
        let names: Vec<&str> = setup::MODEL_KEYS
            .iter()
            .map(|key| key.provider.name())
            .collect();
        assert_eq!(names, ["OpenAI", "Anthropic"]);
        for key in &setup::MODEL_KEYS {
            assert_eq!(key.provider.key().secret, key.secret);
        }
    }
}
