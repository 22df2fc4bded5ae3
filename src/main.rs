//! The `meetingd` binary: parse the command line, run, map errors to an exit
//! status (0 fine, 1 failed while running, 2 a bad configuration).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use meetingd::config::{self, Overrides};
use meetingd::daemon::{self, Source};

/// mimalloc: the daemon allocates and frees small buffers for every
/// request, and glibc's malloc showed as a fifth of its CPU in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Serve(Settings),
    /// Validate the configuration and print it as it would run (secrets
    /// masked).
    CheckConfig(Settings),
    /// Check everything stored for consistency (read-only; exit 0 clean,
    /// 1 with one line per problem).
    Check(Settings),
    /// Print the assembled Lua library, for
    /// `meetingd library | redis-cli -x FUNCTION LOAD REPLACE`. It knows
    /// the number of partitions (every meeting key is checked against it):
    /// --partitions, or redis.partitions of the configuration (16 by
    /// default).
    Library(LibraryArgs),
}

#[derive(Args)]
struct LibraryArgs {
    /// The number of partitions the data is laid out with.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    partitions: Option<u64>,
    /// A TOML configuration file whose redis.partitions to use.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct Settings {
    /// A TOML configuration file (config/meetingd.toml lists every key).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The control socket (overrides socket.path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Redis: redis://host:port/db or redis+unix:///path/to/redis.sock
    /// (overrides redis.url; without any, meetingd runs its own Redis).
    #[arg(long, conflicts_with = "redis_cluster")]
    redis: Option<String>,
    /// A Redis Cluster: some of its nodes, comma-separated
    /// (redis://127.0.0.1:7000,redis://127.0.0.1:7001); overrides redis.cluster.
    #[arg(long, value_delimiter = ',')]
    redis_cluster: Option<Vec<String>>,
}

impl Settings {
    fn source(self) -> Source {
        Source {
            file: self.config,
            overrides: Overrides {
                socket: self.socket,
                redis: self.redis,
                redis_cluster: self.redis_cluster,
            },
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Library(args) => {
            let partitions = match args.partitions {
                Some(partitions) => partitions,
                None => match config::load(args.config.as_deref(), &Overrides::default()) {
                    Ok((_, config)) => config.partitions,
                    Err(err) => {
                        eprintln!("meetingd: {err}");
                        return ExitCode::from(2);
                    }
                },
            };
            print!("{}", meetingd::store::Library::new(partitions).source);
            ExitCode::SUCCESS
        }
        Command::Check(settings) => check(settings.source()),
        Command::CheckConfig(settings) => {
            let source = settings.source();
            match config::RawConfig::load(source.file.as_deref(), &source.overrides)
                .and_then(|raw| raw.validate().map(|_| raw))
            {
                Ok(raw) => {
                    print!("{}", raw.redacted_toml());
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("meetingd: {err}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(settings) => {
            let source = settings.source();
            let config = match config::load(source.file.as_deref(), &source.overrides) {
                Ok((_, config)) => config,
                Err(err) => {
                    eprintln!("meetingd: {err}");
                    return ExitCode::from(2);
                }
            };
            let log = meetingd::logging::init(&config.log_level, config.log_json);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(err) => {
                    eprintln!("meetingd: cannot start the runtime: {err}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(daemon::run(source, config, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!(error = %err, "meetingd stopped");
                    eprintln!("meetingd: {err}");
                    if err.is_configuration() {
                        ExitCode::from(2)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }
}

/// `meetingd check`: connect to the configured Redis (the embedded one's
/// socket when none is configured: the daemon must be running) and check.
fn check(source: Source) -> ExitCode {
    let config = match config::load(source.file.as_deref(), &source.overrides) {
        Ok((_, config)) => config,
        Err(err) => {
            eprintln!("meetingd: {err}");
            return ExitCode::from(2);
        }
    };
    let embedded_socket = config.embedded.data_dir.join("redis.sock");
    let url = config
        .redis_url
        .clone()
        .unwrap_or_else(|| format!("redis+unix://{}", embedded_socket.display()));
    // what was tried, and what to do when nothing answers there
    let unreachable = if !config.redis_cluster.is_empty() {
        format!(
            "cannot reach the Redis Cluster at {} (are its nodes up? --redis-cluster or redis.cluster lists them)",
            config
                .redis_cluster
                .iter()
                .map(|u| config::redact_url(u))
                .collect::<Vec<_>>()
                .join(",")
        )
    } else if config.redis_url.is_some() {
        format!(
            "cannot reach Redis at {} (is it running? --redis or redis.url sets the address)",
            config::redact_url(&url)
        )
    } else {
        format!(
            "cannot reach the embedded Redis at {}",
            embedded_socket.display()
        )
    };
    let what_to_do = if config.redis_url.is_none() && config.redis_cluster.is_empty() {
        format!(
            ". With no Redis configured, check reads the one `meetingd serve` runs in \
             embedded.data_dir ({}): start meetingd with the same configuration first, or name \
             the Redis it uses (--config FILE, --redis URL or --redis-cluster URL,...)",
            config.embedded.data_dir.display()
        )
    } else {
        String::new()
    };
    let mut options = meetingd::store::StoreOptions::new(url);
    options.cluster = config.redis_cluster.clone();
    options.partitions = config.partitions;
    options.timeout = std::time::Duration::from_secs(10);
    // read-only: never load (or replace) the library
    options.load_library = false;
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("meetingd: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let store = meetingd::store::Store::connect(options).await?;
        store.check().await
    });
    match result {
        Ok(problems) if problems.is_empty() => {
            println!("clean");
            ExitCode::SUCCESS
        }
        Ok(problems) => {
            for problem in &problems {
                println!("{problem}");
            }
            eprintln!("meetingd: {} problems", problems.len());
            ExitCode::from(1)
        }
        Err(meetingd::store::StoreError::Unavailable(why)) => {
            eprintln!("meetingd: {unreachable}: {why}{what_to_do}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("meetingd: {err}");
            ExitCode::from(2)
        }
    }
}
