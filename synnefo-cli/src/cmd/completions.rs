//! `synnefo completions SHELL`: shell completion scripts.

use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;

/// Options of `synnefo completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell (bash, zsh, fish, elvish, powershell)
    pub shell: Shell,
}

/// Prints the completion script for `shell` to stdout.
pub fn run<C: CommandFactory>(args: Args) -> ExitCode {
    let mut cmd = C::command();
    clap_complete::generate(args.shell, &mut cmd, "synnefo", &mut std::io::stdout());
    ExitCode::SUCCESS
}
