//! The `meetingd` binary: parse the command line, run, map errors to an exit
//! status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use meetingd::cmd::Limits;
use meetingd::daemon::{self, ServeOptions};
use meetingd::server::ServerConfig;
use meetingd::store::StoreOptions;

/// meetingd: meeting presence on Redis.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: serve the control socket on top of Redis.
    Serve(Serve),
    /// Print the assembled Lua library, for
    /// `meetingd library | redis-cli -x FUNCTION LOAD REPLACE`.
    Library,
}

#[derive(Args)]
struct Serve {
    /// The control socket.
    #[arg(long, default_value = "/run/meetingd/meetingd.sock")]
    socket: PathBuf,
    /// Redis: redis://host:port/db or redis+unix:///path/to/redis.sock.
    #[arg(long)]
    redis: String,
    /// The socket's permission bits, in octal.
    #[arg(long, default_value = "660", value_parser = octal)]
    socket_mode: u32,
    /// Uids allowed to use admin commands (besides root and the daemon's own).
    #[arg(long = "admin-uid")]
    admin_uids: Vec<u32>,
    /// Gids allowed to use admin commands.
    #[arg(long = "admin-gid")]
    admin_gids: Vec<u32>,
    /// Partitions meetings are spread over (fixed for the life of the data).
    #[arg(long, default_value_t = 16)]
    partitions: u64,
    /// How long a Redis call may take before the request is `unavailable`, ms.
    #[arg(long, default_value_t = 1000)]
    redis_timeout_ms: u64,
    /// The longest request line, bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_line: usize,
    /// The longest chat text, bytes.
    #[arg(long, default_value_t = 4096)]
    max_text: usize,
    /// Most clients at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Close a connection idle this long, seconds.
    #[arg(long, default_value_t = 300)]
    idle_timeout_secs: u64,
    /// When the scheduler ticks: a cron expression with seconds, in UTC.
    #[arg(long, default_value = "0 * * * * *")]
    cron: String,
    /// The largest LIMIT of a page (at most 1000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_page: u64,
}

fn octal(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|mode| *mode <= 0o777)
        .ok_or_else(|| format!("{text:?} is not an octal mode like 660"))
}

impl Serve {
    fn options(self) -> ServeOptions {
        let mut store = StoreOptions::new(self.redis);
        store.partitions = self.partitions;
        store.timeout = Duration::from_millis(self.redis_timeout_ms);
        let mut server = ServerConfig::new(self.socket);
        server.socket_mode = self.socket_mode;
        server.admin_uids = self.admin_uids;
        server.admin_gids = self.admin_gids;
        server.max_line = self.max_line;
        server.max_connections = self.max_connections;
        server.idle_timeout = Duration::from_secs(self.idle_timeout_secs);
        ServeOptions {
            store,
            server,
            limits: Limits {
                page: self.max_page,
                text: self.max_text,
            },
            cron: self.cron,
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Library => {
            print!("{}", meetingd::store::library().source);
            ExitCode::SUCCESS
        }
        Command::Serve(serve) => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .init();
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("meetingd: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::serve(serve.options())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("meetingd: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
