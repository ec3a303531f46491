//! Container subcommands: run (and later create/start/exec/ps/...).

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Run a command in a new microVM.
    Run {
        /// The command and its arguments.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
}

impl ContainerCommand {
    pub async fn run(self) -> anyhow::Result<i32> {
        anyhow::bail!("not implemented yet: {self:?}")
    }
}
