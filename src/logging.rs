//! Logs with tracing: to journald when running under systemd (it sets
//! JOURNAL_STREAM), else to stderr, human or JSON; colours only when stderr
//! is a terminal (and `NO_COLOR` is not set), so that a log file holds
//! plain text. The level comes from `RUST_LOG` when set, else from the
//! configuration, and a reload (SIGHUP) can change it.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

/// Changes the level of the running subscriber.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// RUST_LOG was set: it wins over the configuration, reloads too.
    from_env: bool,
}

impl LogHandle {
    /// Apply the configuration's level (unless RUST_LOG decides).
    pub fn set_level(&self, level: &str) {
        if self.from_env {
            return;
        }
        match filter_for(level) {
            Ok(filter) => {
                if let Err(err) = self.filter.reload(filter) {
                    tracing::warn!("cannot change the log level: {err}");
                } else {
                    tracing::info!(level, "log level changed");
                }
            }
            Err(err) => tracing::warn!("{level:?} is not a log filter: {err}"),
        }
    }
}

/// The filter of a configured level. tokio-cron-scheduler says "Uninited"
/// and "Job creator created" at info on every start: it speaks from warn
/// up unless RUST_LOG asks for more.
fn filter_for(level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    EnvFilter::try_new(format!("{level},tokio_cron_scheduler=warn"))
}

/// Install the global subscriber.
pub fn init(level: &str, json: bool) -> LogHandle {
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok());
    let env_set = from_env.is_some();
    let filter =
        from_env.unwrap_or_else(|| filter_for(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let (filter, handle) = reload::Layer::new(filter);
    let journald = std::env::var_os("JOURNAL_STREAM")
        .is_some()
        .then(tracing_journald::layer)
        .and_then(Result::ok);
    let to_stderr = journald.is_none();
    let colours = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let human =
        (to_stderr && !json).then(|| fmt::layer().with_ansi(colours).with_writer(std::io::stderr));
    let machine = (to_stderr && json).then(|| fmt::layer().json().with_writer(std::io::stderr));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(human)
        .with(machine)
        .try_init();
    LogHandle {
        filter: handle,
        from_env: env_set,
    }
}
