//! `centaur dev slack`: a Slack app's tokens for the local stack, asked for in a terminal or
//! read from stdin, kept in 0600 files in `secrets/` (read by the stack's server only: the
//! proxy takes only the model keys, and sandboxes never see the folder). With both tokens
//! there, the stack runs its server in Socket Mode (`CENTAUR_SLACK_MODE=socket`), so a Slack
//! app and `centaur dev` make a working bot with no public URL. `--off` removes them.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use super::home::Home;
use super::setup::{self, SetupError};
use centaur_client::private_file::{WriteError, write_atomic};

#[derive(Clone, Debug, Default, clap::Args)]
pub struct SlackArgs {
    /// Read both tokens from stdin, one a line, in either order (told apart by their
    /// `xoxb-` and `xapp-` prefixes): `printf '%s\n%s\n' "$BOT" "$APP" | centaur dev slack
    /// --tokens-stdin`.
    #[arg(long, conflicts_with = "off")]
    pub tokens_stdin: bool,
    /// Where the stack's server finds Slack's Web API (a fake Slack in tests) [default:
    /// https://slack.com/api]. Also CENTAUR_DEV_SLACK_API_URL.
    #[arg(
        long,
        env = "CENTAUR_DEV_SLACK_API_URL",
        hide_env = true,
        value_name = "URL",
        conflicts_with = "off"
    )]
    pub api_url: Option<String>,
    /// Forget the tokens: the stack runs without Slack from its next start.
    #[arg(long)]
    pub off: bool,
}

/// Why `centaur dev slack` changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    #[error(
        "`centaur dev slack` asks in a terminal, and stdin is not one: pipe both tokens in with --tokens-stdin, e.g. `printf '%s\\n%s\\n' \"$SLACK_BOT_TOKEN\" \"$SLACK_APP_TOKEN\" | centaur dev slack --tokens-stdin`"
    )]
    NoTerminal,
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(
        "--api-url `{0}` is not an http(s) URL such as https://slack.com/api or http://127.0.0.1:9000/api"
    )]
    ApiUrl(String),
    #[error("cannot read the tokens from stdin: {0}")]
    ReadStdin(#[source] std::io::Error),
    #[error("cannot ask: {0}")]
    Prompt(#[source] dialoguer::Error),
    #[error("cannot remove {}: {source}", .path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Private(#[from] WriteError),
}

impl SlackError {
    /// 2 for what the command line got wrong, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            SlackError::NoTerminal | SlackError::Token(_) | SlackError::ApiUrl(_) => 2,
            SlackError::ReadStdin(_)
            | SlackError::Prompt(_)
            | SlackError::Remove { .. }
            | SlackError::Setup(_)
            | SlackError::Private(_) => 1,
        }
    }
}

/// A token that is not what Slack gives for it; each names where the right one is. The token
/// itself is never said.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "no bot token: give the Bot User OAuth Token (xoxb-…) from your Slack app's OAuth & Permissions page (install the app to the workspace first)"
    )]
    NoBotToken,
    #[error(
        "no app-level token: create one with the connections:write scope under your Slack app's Basic Information → App-Level Tokens (xapp-…)"
    )]
    NoAppToken,
    #[error(
        "the bot token must start with xoxb- (OAuth & Permissions → Bot User OAuth Token), not {0}"
    )]
    NotABotToken(&'static str),
    #[error(
        "the app-level token must start with xapp- (Basic Information → App-Level Tokens, with connections:write), not {0}"
    )]
    NotAnAppToken(&'static str),
    #[error("a token is one word: the {0} has spaces or more than one line")]
    NotOneWord(&'static str),
    #[error(
        "stdin has a line that is neither a bot token (xoxb-…) nor an app-level token (xapp-…): give those two, one a line"
    )]
    Unknown,
    #[error("stdin has two {0}s: give one bot token (xoxb-…) and one app-level token (xapp-…)")]
    Twice(&'static str),
}

/// What a token that is not the one asked for looks like, for the message (never the token).
fn kind_of(token: &str) -> &'static str {
    match token.split('-').next().unwrap_or_default() {
        "xoxb" => "a bot token (xoxb-…)",
        "xapp" => "an app-level token (xapp-…)",
        "xoxp" => "a user token (xoxp-…)",
        "xoxe" => "a refresh token (xoxe-…)",
        _ => "what was given",
    }
}

/// A bot token as Slack gives it: `xoxb-`, then more, one word.
pub fn check_bot_token(token: &str) -> Result<(), TokenError> {
    check(token, "xoxb-", "bot token", TokenError::NotABotToken)
}

/// An app-level token as Slack gives it: `xapp-`, then more, one word.
pub fn check_app_token(token: &str) -> Result<(), TokenError> {
    check(token, "xapp-", "app-level token", TokenError::NotAnAppToken)
}

fn check(
    token: &str,
    prefix: &str,
    name: &'static str,
    wrong: fn(&'static str) -> TokenError,
) -> Result<(), TokenError> {
    if token.chars().any(char::is_whitespace) {
        return Err(TokenError::NotOneWord(name));
    }
    match token.strip_prefix(prefix) {
        Some(rest) if rest.len() >= 4 => Ok(()),
        Some(_) | None => Err(wrong(kind_of(token))),
    }
}

/// The two tokens, from lines in either order.
pub fn tokens_from_lines(text: &str) -> Result<Tokens, TokenError> {
    let (mut bot, mut app) = (None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (slot, name) = if line.starts_with("xoxb-") {
            (&mut bot, "bot token")
        } else if line.starts_with("xapp-") {
            (&mut app, "app-level token")
        } else {
            return Err(TokenError::Unknown);
        };
        if slot.replace(line.to_owned()).is_some() {
            return Err(TokenError::Twice(name));
        }
    }
    let bot = bot.ok_or(TokenError::NoBotToken)?;
    let app = app.ok_or(TokenError::NoAppToken)?;
    check_bot_token(&bot)?;
    check_app_token(&app)?;
    Ok(Tokens { bot, app })
}

/// A Slack app's tokens for Socket Mode.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `xoxb-…`: the Web API.
    pub bot: String,
    /// `xapp-…`: `apps.connections.open`.
    pub app: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokens { bot: xoxb-…, app: xapp-… }")
    }
}

/// Where the tokens are kept.
fn bot_token_file(home: &Home) -> PathBuf {
    home.secrets().join("slack-bot-token")
}
fn app_token_file(home: &Home) -> PathBuf {
    home.secrets().join("slack-app-token")
}
fn api_url_file(home: &Home) -> PathBuf {
    home.secrets().join("slack-api-url")
}

/// What the stack's server gets from `centaur dev slack`: Socket Mode with these tokens (and
/// this Web API, when one was given), or nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSlack {
    pub tokens: Tokens,
    pub api_url: Option<String>,
}

/// The stored settings, when both tokens are there (a half-configured Slack is none: `dev
/// doctor` says which token is missing).
pub fn stored(home: &Home) -> Option<StackSlack> {
    let read = |path: PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    Some(StackSlack {
        tokens: Tokens {
            bot: read(bot_token_file(home))?,
            app: read(app_token_file(home))?,
        },
        api_url: read(api_url_file(home)),
    })
}

/// How Slack stands on this home, for `dev doctor`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Off,
    /// Both tokens saved: Socket Mode.
    On,
    /// One token saved, the other missing.
    Half(TokenError),
}

pub fn state(home: &Home) -> State {
    match (bot_token_file(home).exists(), app_token_file(home).exists()) {
        (true, true) => State::On,
        (false, false) => State::Off,
        (false, true) => State::Half(TokenError::NoBotToken),
        (true, false) => State::Half(TokenError::NoAppToken),
    }
}

/// Runs `centaur dev slack`.
pub fn run(home: &Home, args: SlackArgs) -> Result<ExitCode, SlackError> {
    if args.off {
        return off(home);
    }
    if let Some(url) = &args.api_url
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(SlackError::ApiUrl(url.clone()));
    }
    let tokens = if args.tokens_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(SlackError::ReadStdin)?;
        tokens_from_lines(&text)?
    } else if std::io::stdin().is_terminal() {
        ask(home)?
    } else {
        return Err(SlackError::NoTerminal);
    };
    setup::prepare(home)?;
    write_atomic(&bot_token_file(home), &tokens.bot)?;
    write_atomic(&app_token_file(home), &tokens.app)?;
    match &args.api_url {
        Some(url) => write_atomic(&api_url_file(home), url.trim())?,
        None => remove(&api_url_file(home))?,
    }
    eprintln!(
        "centaur: Slack tokens saved in {} (readable only by you; never in a sandbox)",
        home.secrets().display()
    );
    say_when(home, "runs the bot in Socket Mode");
    Ok(ExitCode::SUCCESS)
}

/// In a terminal: each token, hidden, checked as it is typed; Enter keeps one already saved.
fn ask(home: &Home) -> Result<Tokens, SlackError> {
    eprintln!(
        "A Slack app for Centaur: create it from manifests/slack-app.yaml and install it (docs/slack.md). Tokens stay in {} (readable only by you). Enter keeps a saved one.",
        home.secrets().display()
    );
    let saved = stored(home).map(|s| s.tokens);
    let prompt = |label: &str,
                  kept: Option<String>,
                  check: fn(&str) -> Result<(), TokenError>|
     -> Result<String, SlackError> {
        let has = kept.is_some();
        let value = dialoguer::Password::new()
            .with_prompt(label)
            .allow_empty_password(has)
            .validate_with(move |text: &String| -> Result<(), String> {
                if text.trim().is_empty() && has {
                    return Ok(());
                }
                check(text.trim()).map_err(|e| e.to_string())
            })
            .interact()
            .map_err(SlackError::Prompt)?;
        let value = value.trim();
        Ok(match kept {
            Some(kept) if value.is_empty() => kept,
            Some(_) | None => value.to_owned(),
        })
    };
    let bot = prompt(
        "Bot User OAuth Token (xoxb-…, OAuth & Permissions)",
        saved.as_ref().map(|t| t.bot.clone()),
        check_bot_token,
    )?;
    let app = prompt(
        "App-level token (xapp-…, Basic Information → App-Level Tokens, connections:write)",
        saved.map(|t| t.app),
        check_app_token,
    )?;
    Ok(Tokens { bot, app })
}

fn remove(path: &std::path::Path) -> Result<(), SlackError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SlackError::Remove {
            path: path.to_owned(),
            source,
        }),
    }
}

/// `--off`: the tokens go; the stack runs without Slack from its next start.
fn off(home: &Home) -> Result<ExitCode, SlackError> {
    let had = stored(home).is_some() || bot_token_file(home).exists();
    for path in [
        bot_token_file(home),
        app_token_file(home),
        api_url_file(home),
    ] {
        remove(&path)?;
    }
    if !had {
        eprintln!("centaur: no Slack tokens were saved; nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("centaur: Slack tokens removed");
    say_when(home, "runs without Slack");
    Ok(ExitCode::SUCCESS)
}

/// When the change takes effect: the server reads its Slack settings when it starts.
fn say_when(home: &Home, what: &str) {
    if home.running().is_some() {
        eprintln!(
            "centaur: the running stack still runs as it started; restart it so it {what}: `centaur dev down && centaur dev`"
        );
    } else {
        eprintln!("centaur: the next `centaur dev` {what}");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const BOT: &str = "xoxb-1111-2222-abcdef";
    const APP: &str = "xapp-1-A111-3333-abcdef";

    #[test]
    fn tokens_are_told_apart_by_their_shape_and_never_said() {
        assert_eq!(check_bot_token(BOT), Ok(()));
        assert_eq!(check_app_token(APP), Ok(()));
        assert_eq!(
            check_bot_token(APP),
            Err(TokenError::NotABotToken("an app-level token (xapp-…)"))
        );
        assert_eq!(
            check_bot_token("xoxp-user-token"),
            Err(TokenError::NotABotToken("a user token (xoxp-…)"))
        );
        assert_eq!(
            check_app_token(BOT),
            Err(TokenError::NotAnAppToken("a bot token (xoxb-…)"))
        );
        assert_eq!(
            check_bot_token("xoxb-12 34"),
            Err(TokenError::NotOneWord("bot token"))
        );
        assert!(check_bot_token("xoxb-").is_err());
        // Either order, blank lines and spaces around them ignored.
        let tokens = tokens_from_lines(&format!("\n  {APP}\n{BOT}  \n")).unwrap();
        assert_eq!((tokens.bot.as_str(), tokens.app.as_str()), (BOT, APP));
        assert_eq!(tokens_from_lines(BOT).unwrap_err(), TokenError::NoAppToken);
        assert_eq!(tokens_from_lines(APP).unwrap_err(), TokenError::NoBotToken);
        assert_eq!(
            tokens_from_lines(&format!("{BOT}\n{BOT}\n{APP}")).unwrap_err(),
            TokenError::Twice("bot token")
        );
        assert_eq!(
            tokens_from_lines(&format!("{BOT}\nhunter2\n{APP}")).unwrap_err(),
            TokenError::Unknown
        );
        // No message, and no Debug, carries a token.
        let said: Vec<String> = [
            check_bot_token(APP).unwrap_err().to_string(),
            check_app_token(BOT).unwrap_err().to_string(),
            format!("{tokens:?}"),
        ]
        .into();
        for said in said {
            assert!(!said.contains("abcdef"), "{said}");
        }
    }

    /// Stored 0600 in the home's secrets, read back for the stack as Socket Mode settings;
    /// `--off` leaves nothing.
    #[test]
    fn stored_privately_read_for_the_stack_and_removed_with_off() {
        let home = Home {
            root: centaur_test_support::temp::temp_dir("dev-slack-store"),
        };
        assert_eq!(stored(&home), None);
        assert_eq!(state(&home), State::Off);
        std::fs::create_dir_all(home.secrets()).unwrap();
        write_atomic(&bot_token_file(&home), BOT).unwrap();
        assert_eq!(stored(&home), None, "half a configuration is none");
        assert_eq!(state(&home), State::Half(TokenError::NoAppToken));
        write_atomic(&app_token_file(&home), APP).unwrap();
        write_atomic(&api_url_file(&home), "http://127.0.0.1:9/api").unwrap();
        for file in [bot_token_file(&home), app_token_file(&home)] {
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
        assert_eq!(
            stored(&home),
            Some(StackSlack {
                tokens: Tokens {
                    bot: BOT.into(),
                    app: APP.into()
                },
                api_url: Some("http://127.0.0.1:9/api".into()),
            })
        );
        assert_eq!(state(&home), State::On);
        off(&home).unwrap();
        assert_eq!(stored(&home), None);
        assert!(!api_url_file(&home).exists());
        let _ = std::fs::remove_dir_all(&home.root);
    }
}
