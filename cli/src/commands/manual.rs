//! `centaur completions` and `centaur man`: shell completion scripts and the man page, made
//! from the command line's own definition so they never disagree with it.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use crate::args::Cli;
use crate::error::CliError;

pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "centaur",
        &mut std::io::stdout(),
    );
    ExitCode::SUCCESS
}

/// The man page of `centaur` (its options, its commands with their descriptions, the
/// examples), or of one of its commands as `centaur-<command>(1)`; with `list`, the commands
/// that have one.
pub fn man(command: Option<&str>, list: bool) -> Result<ExitCode, CliError> {
    let write = |source| CliError::Write {
        what: "man page",
        source,
    };
    let centaur = Cli::command();
    let commands = || {
        centaur
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name() != "help")
    };
    let mut out = Vec::new();
    if list {
        for sub in commands() {
            writeln!(out, "{}", sub.get_name()).map_err(write)?;
        }
    } else {
        let page = match command {
            None => centaur.clone(),
            Some(name) => {
                let sub = commands().find(|c| c.get_name() == name).ok_or_else(|| {
                    CliError::NoSuchCommand {
                        name: name.to_owned(),
                        commands: commands().map(|c| c.get_name().to_owned()).collect(),
                    }
                })?;
                sub.clone()
                    .display_name(format!("centaur-{name}"))
                    .bin_name(format!("centaur {name}"))
            }
        };
        clap_mangen::Man::new(page)
            .source(format!("centaur {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)
            .map_err(write)?;
    }
    std::io::stdout().write_all(&out).map_err(write)?;
    Ok(ExitCode::SUCCESS)
}
