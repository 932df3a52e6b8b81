//! The command line: every command, flag and value `centaur` takes, with the help and examples
//! `--help` shows. What each command does lives in [`crate::commands`].

use centaur_protocol::Harness;
use centaur_protocol::runner::ApprovalPolicy;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use centaur_cli::dev::{DevCommand, UpArgs};

#[derive(Parser)]
#[command(
    name = "centaur",
    version,
    about = "Talk to Centaur's agent: the TUI, turns from scripts, approvals, and `centaur dev`",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// The Centaur server (also CENTAUR_API_URL) [default: the stack `centaur dev` runs for
    /// this CENTAUR_HOME, else the URL of the last `centaur login`]
    #[arg(
        long,
        global = true,
        env = "CENTAUR_API_URL",
        hide_env = true,
        value_name = "URL",
        display_order = 900
    )]
    pub api_url: Option<String>,
    /// An API token (also CENTAUR_API_TOKEN) [default: the `centaur dev` stack's, else the one
    /// `centaur login` saved for the URL]
    #[arg(
        long,
        global = true,
        env = "CENTAUR_API_TOKEN",
        hide_env = true,
        value_name = "TOKEN",
        display_order = 901
    )]
    pub api_token: Option<String>,
    /// Without a command: the TUI.
    #[command(subcommand)]
    pub command: Option<Command>,
}

const EXAMPLES: &str = "\
Examples:
  centaur dev                                   # the whole stack on this machine, and the TUI
  centaur                                       # the TUI, on the server of `centaur dev` or `centaur login`
  centaur send --harness shell --message 'echo hello'
  centaur threads
  centaur attach api:nightly --exit-on-terminal

Exit codes: 0 success, 1 the turn or operation failed, 2 usage error, 3 cannot reach the server
or not authorised.";

#[derive(Subcommand)]
pub enum Command {
    /// The terminal interface: threads, a live transcript, a composer and approvals.
    #[command(after_help = "\
Examples:
  centaur tui                                   # the thread list
  centaur tui --harness shell                   # a new shell thread
  centaur tui --thread-key api:nightly          # that thread (created by its first message)")]
    Tui {
        /// Open this thread (created by its first message if it does not exist), or the thread
        /// of a Slack message link.
        #[arg(long, value_name = "KEY")]
        thread_key: Option<String>,
        /// Start a new thread with this harness.
        #[arg(long, value_name = "HARNESS", value_parser = harness_parser())]
        harness: Option<Harness>,
    },
    /// One turn from a script: prints `thread_key=<key>` once the turn is accepted, then the
    /// agent's answer.
    #[command(after_help = "\
Examples:
  centaur send --harness shell --message 'echo hello'      # thread_key=cli:…, then \"hello\"
  centaur send --thread-key api:nightly --message 'run the tests' --json | jq -r .type
  centaur send --harness codex --approval-policy always --message 'tidy the README'
  K=$(centaur send --message 'hi' | sed -n 's/^thread_key=//p')

An approval the turn waits for is printed on stderr with the `centaur approve …` command that
decides it; `send` keeps waiting. Exit 1 when the turn fails or is cancelled.")]
    Send {
        /// The thread [default: a new `cli:<uuid>` thread]; a Slack message link names the
        /// existing thread holding that message.
        #[arg(long, value_name = "KEY")]
        thread_key: Option<String>,
        /// The harness of a new thread [default: the server's].
        #[arg(long, value_name = "HARNESS", value_parser = harness_parser())]
        harness: Option<Harness>,
        /// What to ask.
        #[arg(long, value_name = "TEXT")]
        message: String,
        /// When the harness asks before acting: applies from this turn on and is kept for the
        /// thread; without it, the thread's earlier choice, else the server's default.
        #[arg(long, value_name = "POLICY", value_parser = approval_policy_parser())]
        approval_policy: Option<ApprovalPolicy>,
        /// Return when the turn ends (what `send` does anyway; kept for scripts).
        #[arg(long)]
        exit_on_terminal: bool,
        /// Cancel the turn after this many milliseconds [default: the server's limit].
        #[arg(long, value_name = "MS")]
        max_duration_ms: Option<u64>,
        /// Print every event of the turn as one JSON line instead of the answer.
        #[arg(long)]
        json: bool,
    },
    /// Follow a thread (a Slack thread too), from the start or after an event.
    #[command(after_help = "\
Examples:
  centaur attach api:nightly                                 # follow until Ctrl-C
  centaur attach api:nightly --after-event-id 40 --exit-on-terminal && echo done
  centaur attach api:nightly --all-events | jq -r .type
  centaur attach api:nightly --tui
  centaur attach 'https://acme.slack.com/archives/C0123ABC/p1700000000000100'   # a Slack thread
  K=api:job-$RANDOM; centaur attach \"$K\" --exit-on-terminal --timeout 30 & centaur send --thread-key \"$K\" --message 'run it'")]
    Attach {
        /// The thread, e.g. `api:nightly` or `slack:C0123ABC:1700000000.000100`, or a Slack
        /// message link (`https://<team>.slack.com/archives/<channel>/p<digits>`, a reply's
        /// too): the thread holding that message. A link to no thread of Centaur's: exit 1.
        #[arg(value_name = "THREAD_KEY")]
        thread_key: String,
        /// Start after this event (0: from the start).
        #[arg(long, default_value_t = 0, value_name = "ID")]
        after_event_id: i64,
        /// Every event as one JSON line.
        #[arg(long)]
        all_events: bool,
        /// Stop after the next execution ends (exit 1 if it failed).
        #[arg(long)]
        exit_on_terminal: bool,
        /// Follow it in the terminal interface instead.
        #[arg(long)]
        tui: bool,
        /// A thread that does not exist yet is waited for (a script may attach before its
        /// `send` created it): for at most this many seconds [default: as long as it takes].
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        timeout: Option<std::time::Duration>,
    },
    /// Stop a thread's running (or queued) turn; `--all` also withdraws the messages waiting
    /// for its next turn. The TUI's Esc does the same as without `--all`.
    #[command(after_help = "\
Examples:
  centaur interrupt api:nightly
  centaur interrupt api:nightly --all           # and drop the messages waiting for a turn")]
    Interrupt {
        /// The thread (its key, or a Slack message link).
        #[arg(value_name = "THREAD_KEY")]
        thread_key: String,
        /// Also withdraw the messages waiting for the thread's next turn (its queue).
        #[arg(long)]
        all: bool,
    },
    /// The egress proxy's audit (admin token): every request a sandbox made, newest last.
    #[command(after_help = "\
Examples:
  centaur audit --thread api:nightly --denied   # what the sandbox was refused
  centaur audit --follow --json | jq -r 'select(.decision != \"allowed\") | .host'
  centaur audit --after 5120 --limit 1000")]
    Audit {
        /// Only this thread's sandboxes (its key, or a Slack message link).
        #[arg(long = "thread", value_name = "THREAD_KEY")]
        thread_key: Option<String>,
        /// Only refusals (denied, leak_blocked).
        #[arg(long)]
        denied: bool,
        /// Keep printing new records as the proxy reports them.
        #[arg(long)]
        follow: bool,
        /// Start after this record (its `id` in --json; the line a lost --follow ends with
        /// names it), oldest first.
        #[arg(long, value_name = "ID")]
        after: Option<i64>,
        /// How many records (the newest, or the first after --after) [1 to 1000].
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Every record as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// List threads, most recently active first: title, harness, status, last activity.
    #[command(after_help = "\
Examples:
  centaur threads
  centaur threads --json | jq -r '.threads[] | select(.status == \"failed\") | .thread_key'")]
    Threads {
        /// The API's answer (`GET /agent/threads`) as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Decide an approval (`send` and `attach` print the command for each one asked).
    #[command(after_help = "\
Examples:
  centaur approve api:nightly 0196f1c2-7d0e-7c39-9d43-1f0f6b0f9a11
  centaur approve api:nightly 0196f1c2-7d0e-7c39-9d43-1f0f6b0f9a11 --for-session
  centaur approve api:nightly 0196f1c2-7d0e-7c39-9d43-1f0f6b0f9a11 --deny")]
    Approve {
        /// The thread that asks (its key, or a Slack message link).
        #[arg(value_name = "THREAD_KEY")]
        thread_key: String,
        /// The approval's id (from `approval needed: …`).
        #[arg(value_name = "APPROVAL_ID")]
        approval_id: String,
        /// Refuse instead.
        #[arg(long)]
        deny: bool,
        /// Approve this and the same action again for the rest of the thread's session.
        #[arg(long)]
        for_session: bool,
    },
    /// Ask for the server's URL and a token, check them, and save them (the token in the OS
    /// keyring, or a 0600 file). Without a terminal, the token is one line on stdin.
    #[command(after_help = "\
Examples:
  centaur login                                 # asks for the URL and the token
  echo \"$TOKEN\" | centaur login --api-url https://centaur.example.com
  centaur login --api-url https://centaur.example.com --token-env CENTAUR_TOKEN")]
    Login {
        /// Read the token from this variable instead of asking (the URL is --api-url's).
        #[arg(long, value_name = "VAR")]
        token_env: Option<String>,
    },
    /// Forget the saved token (for --api-url, else the last login's URL).
    #[command(after_help = "\
Examples:
  centaur logout
  centaur logout --api-url https://centaur.example.com")]
    Logout,
    /// The whole stack on this machine: PostgreSQL, the server, the proxy and sandboxes.
    #[command(
        args_conflicts_with_subcommands = true,
        after_help = "\
Examples:
  centaur dev                                   # start (or attach to) the stack, open the TUI
  centaur dev --detach --port 8181              # start it in the background on port 8181
  centaur dev status
  centaur dev logs server -f
  centaur dev keys                              # the model keys (OpenAI, Anthropic)
  centaur dev down"
    )]
    Dev {
        #[command(subcommand)]
        command: Option<DevCommand>,
        #[command(flatten)]
        up: UpArgs,
    },
    /// Print a shell's completion script for `centaur` (see docs/cli.md to install it).
    #[command(after_help = "\
Examples:
  centaur completions bash > ~/.local/share/bash-completion/completions/centaur
  centaur completions zsh > ~/.zfunc/_centaur     # with fpath+=~/.zfunc before compinit
  centaur completions fish > ~/.config/fish/completions/centaur.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print `centaur`'s man page (roff), or a command's (`centaur-send(1)`), to stdout.
    #[command(after_help = "\
Examples:
  centaur man | man -l -
  centaur man send | man -l -
  for c in '' $(centaur man --list); do centaur man $c > ~/.local/share/man/man1/centaur${c:+-$c}.1; done")]
    Man {
        /// The command whose page to print [default: centaur's own].
        #[arg(value_name = "COMMAND", conflicts_with = "list")]
        command: Option<String>,
        /// List the commands that have a page, one a line.
        #[arg(long)]
        list: bool,
    },
    /// Tools: Python plugins that agents and people call (docs/tools.md): list them, show one's
    /// methods, call one.
    #[command(after_help = "\
Examples:
  centaur tools list
  centaur tools show github
  centaur tools call github get_issue '{\"repo\": \"acme/api\", \"number\": 42}'
  echo '{\"url\": \"https://example.com\"}' | centaur tools call http fetch -")]
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Workflows through the API: not built yet, so hidden from the help.
    #[command(hide = true)]
    Workflows {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `centaur tools …`.
#[derive(Subcommand)]
pub enum ToolsCommand {
    /// Every tool the server found: name, status, number of methods, description; a broken
    /// tool's reason on the line under it.
    #[command(after_help = "\
Examples:
  centaur tools list
  centaur tools list --json | jq -r '.tools[] | select(.status == \"broken\") | .error'")]
    List {
        /// The API's answer (`GET /tools`) as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// One tool: its description, folder, the hosts it may reach, the secrets it uses (names),
    /// and each method with its parameters (name, type, required or default, description).
    #[command(after_help = "\
Examples:
  centaur tools show github
  centaur tools show slack --json | jq '.methods[] | select(.approval) | .name'")]
    Show {
        /// The tool's name (`centaur tools list` shows them).
        #[arg(value_name = "TOOL")]
        tool: String,
        /// The API's answer (`GET /tools/{tool}`) as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Call a method with its arguments (a JSON object) and print what it returned, as JSON.
    #[command(after_help = "\
Examples:
  centaur tools call github get_issue '{\"repo\": \"acme/api\", \"number\": 42}'
  centaur tools call postgres query @query.json --raw | jq '.rows | length'
  echo '{\"url\": \"https://example.com\"}' | centaur tools call http fetch -

Exit 1 when the method fails, times out or a person denies it (the server's message on
stderr); 2 when the arguments are not a JSON object or the server refuses them (the message
names the argument).")]
    Call {
        /// The tool's name.
        #[arg(value_name = "TOOL")]
        tool: String,
        /// The method's name (`centaur tools show TOOL` lists them).
        #[arg(value_name = "METHOD")]
        method: String,
        /// The arguments, a JSON object; `-` reads them from stdin, `@FILE` from a file
        /// [default: {}].
        #[arg(value_name = "ARGUMENTS", allow_hyphen_values = true)]
        arguments: Option<String>,
        /// Print the result as one compact JSON line instead of indented.
        #[arg(long)]
        raw: bool,
    },
}

/// `--harness`: one of the harnesses' names, listed in the help and in the error.
fn harness_parser() -> impl TypedValueParser<Value = Harness> {
    PossibleValuesParser::new(Harness::ALL.map(Harness::as_str))
        .map(|name| name.parse::<Harness>().expect("a name from Harness::ALL"))
}

/// `--approval-policy`: one of the policies' names, listed in the help and in the error.
fn approval_policy_parser() -> impl TypedValueParser<Value = ApprovalPolicy> {
    PossibleValuesParser::new(ApprovalPolicy::ALL.map(ApprovalPolicy::as_str)).map(|name| {
        name.parse::<ApprovalPolicy>()
            .expect("a name from ApprovalPolicy::ALL")
    })
}

/// `--timeout`'s value: seconds, fractions allowed.
fn seconds(raw: &str) -> Result<std::time::Duration, String> {
    raw.parse::<f64>()
        .ok()
        .and_then(|s| std::time::Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("`{raw}` is not a number of seconds"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command and flag has a description, every command examples: a help page is
    /// enough to use it.
    #[test]
    fn every_command_and_flag_is_described_and_every_command_has_examples() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_hide_set() {
                    continue;
                }
                let help = arg.get_help().map(ToString::to_string);
                assert!(help.is_some(), "{path} {id} has no description");
                // A variable is named in the description, never shown as `[env: X=]`.
                if let Some(env) = arg.get_env() {
                    let env = env.to_string_lossy();
                    assert!(arg.is_hide_env_set(), "{path} {id} shows {env}'s value");
                    assert!(
                        help.is_some_and(|h| h.contains(env.as_ref())),
                        "{path} {id} does not name {env}"
                    );
                }
            }
            for sub in command.get_subcommands() {
                if sub.is_hide_set() || sub.get_name() == "help" {
                    continue;
                }
                let path = format!("{path} {}", sub.get_name());
                assert!(sub.get_about().is_some(), "{path} has no description");
                let examples = sub.get_after_help().map(ToString::to_string);
                assert!(
                    examples.is_some_and(|e| e.contains("Examples:\n  centaur ")),
                    "{path} has no examples"
                );
                check(sub, &path);
            }
        }
        let mut command = Cli::command();
        command.build();
        check(&command, "centaur");
    }

    #[test]
    fn a_harness_or_policy_not_listed_is_a_usage_error_naming_the_choices() {
        let error =
            Cli::try_parse_from(["centaur", "send", "--harness", "bogus", "--message", "x"])
                .err()
                .unwrap();
        assert_eq!(error.exit_code(), 2);
        let said = error.to_string();
        assert!(
            said.contains("codex, claude-code, amp, shell, echo"),
            "{said}"
        );
        let parsed = Cli::try_parse_from([
            "centaur",
            "send",
            "--approval-policy",
            "on-request",
            "--message",
            "x",
        ])
        .unwrap();
        assert!(matches!(
            parsed.command,
            Some(Command::Send {
                approval_policy: Some(ApprovalPolicy::OnRequest),
                ..
            })
        ));
        let error = Cli::try_parse_from([
            "centaur",
            "send",
            "--approval-policy",
            "sometimes",
            "--message",
            "x",
        ])
        .err()
        .unwrap();
        assert!(
            error.to_string().contains("never, on-request, always"),
            "{error}"
        );
    }

    /// `-` is the arguments from stdin, not a flag; a missing method is a usage error.
    #[test]
    fn tools_call_takes_stdin_a_file_or_nothing() {
        for (given, expected) in [
            (Some("-"), Some("-")),
            (Some("@args.json"), Some("@args.json")),
            (None, None),
        ] {
            let mut line = vec!["centaur", "tools", "call", "github", "get_issue"];
            line.extend(given);
            let parsed = Cli::try_parse_from(line).unwrap();
            let Some(Command::Tools {
                command: ToolsCommand::Call { arguments, .. },
            }) = parsed.command
            else {
                panic!("not a call");
            };
            assert_eq!(arguments.as_deref(), expected);
        }
        let error = Cli::try_parse_from(["centaur", "tools", "call", "github"])
            .err()
            .unwrap();
        assert_eq!(error.exit_code(), 2);
    }
}
