//! `centaur-runner`: see [`centaur_runner::command`]. Started as `centaur-tool` (the name it
//! has on a sandbox's `PATH`), it is that command: see [`centaur_runner::tools::command`].

fn main() -> std::process::ExitCode {
    let name = std::env::args_os().next().map(std::path::PathBuf::from);
    if name.as_deref().and_then(|n| n.file_name()) == Some("centaur-tool".as_ref()) {
        return centaur_runner::tools::command::main();
    }
    centaur_runner::command::main()
}
