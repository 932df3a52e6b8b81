//! `centaur-runner`: see [`centaur_runner::command`].

fn main() -> std::process::ExitCode {
    centaur_runner::command::main()
}
