//! Client commands over the Rust SDK (placeholder until the SDK lands).

/// Commands that talk to a running server.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {}

pub fn run(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {}
}
