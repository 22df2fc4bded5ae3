//! The `meetingd` binary: parse the command line, run, map errors to an exit
//! status.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// meetingd: meeting presence on Redis.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the assembled Lua library, for
    /// `meetingd library | redis-cli -x FUNCTION LOAD REPLACE`.
    Library,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Library => {
            print!("{}", meetingd::store::library().source);
            ExitCode::SUCCESS
        }
    }
}
