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

/// The man page of `centaur`: its options, its commands with their descriptions, and the
/// examples; `centaur <command> --help` has each command's flags.
pub fn man() -> Result<ExitCode, CliError> {
    let write = |source| CliError::Write {
        what: "man page",
        source,
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .map_err(write)?;
    std::io::stdout().write_all(&page).map_err(write)?;
    Ok(ExitCode::SUCCESS)
}
