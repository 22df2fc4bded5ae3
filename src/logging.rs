//! Logs with tracing: to journald when running under systemd (it sets
//! JOURNAL_STREAM), else to stderr, human or JSON; colours only when stderr
//! is a terminal (and `NO_COLOR` is not set), so that a log file holds
//! plain text. The level comes from `RUST_LOG` when set, else from the
//! configuration, and a reload (SIGHUP) can change it.
//!
//! Warnings that come in storms are rate-limited ([`Repeats`]): while a
//! Redis node is down, redis-rs warns "Failed to connect" at every call
//! that would go there (hundreds a second). The first of a kind is logged;
//! the others are counted, and a summary with the count and the last one's
//! text (its reason) is logged at most every [`SUMMARY_EVERY`].

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

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
    let repeats = Repeats::new(STORMS);
    repeats.summarize_in_background();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(repeats)
        .with(journald)
        .with(human)
        .with(machine)
        .try_init();
    LogHandle {
        filter: handle,
        from_env: env_set,
    }
}

/// How often a summary of the warnings held back is logged, at most.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The warnings that come in storms: (target prefix, message prefix).
const STORMS: &[(&str, &str)] = &[
    // redis-rs, at every call for a node it cannot reach
    ("redis", "Failed to connect"),
    // the user cache, at most every 500 ms a master
    ("meetingd::store", "cannot connect to Redis node"),
    // the socket, at every client while descriptors lack
    ("meetingd::server", "out of file descriptors"),
    ("meetingd::server", "accept failed"),
];

/// One kind of warning: when one was last let through, how many were held
/// back since, and the last of those.
#[derive(Debug, Default)]
pub struct Window {
    shown_at: Option<Instant>,
    held: u64,
    last: String,
}

impl Window {
    /// A warning of this kind at `now`: whether to log it (the first, and
    /// the first after a quiet [`SUMMARY_EVERY`]); else it is counted.
    pub fn offer(&mut self, now: Instant, message: &str) -> bool {
        let quiet = self
            .shown_at
            .is_none_or(|at| now.duration_since(at) >= SUMMARY_EVERY);
        if quiet && self.held == 0 {
            self.shown_at = Some(now);
            return true;
        }
        self.held += 1;
        self.last.clear();
        self.last.push_str(message);
        false
    }

    /// At `now`: the count held back and the last one, once
    /// [`SUMMARY_EVERY`] passed since the last line of this kind.
    pub fn summary(&mut self, now: Instant) -> Option<(u64, String)> {
        let due = self
            .shown_at
            .is_none_or(|at| now.duration_since(at) >= SUMMARY_EVERY);
        if !due || self.held == 0 {
            return None;
        }
        self.shown_at = Some(now);
        let held = std::mem::take(&mut self.held);
        Some((held, std::mem::take(&mut self.last)))
    }
}

/// A layer that holds back warnings of the [`STORMS`] kinds past the first
/// (see [`Window`]).
#[derive(Clone)]
pub struct Repeats {
    kinds: Arc<Vec<(&'static str, &'static str, Mutex<Window>)>>,
}

impl Repeats {
    fn new(kinds: &[(&'static str, &'static str)]) -> Repeats {
        Repeats {
            kinds: Arc::new(
                kinds
                    .iter()
                    .map(|(target, prefix)| (*target, *prefix, Mutex::new(Window::default())))
                    .collect(),
            ),
        }
    }

    /// Log the summaries as they fall due, from a thread of their own (the
    /// layer cannot log from inside itself).
    fn summarize_in_background(&self) {
        let repeats = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-summaries".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    repeats.summarize(Instant::now());
                }
            });
        if let Err(err) = spawned {
            eprintln!("meetingd: repeated warnings will not be summarized: {err}");
        }
    }

    fn summarize(&self, now: Instant) {
        for (target, _, window) in self.kinds.iter() {
            let due = window
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .summary(now);
            if let Some((held, last)) = due {
                tracing::warn!(
                    source = target,
                    "{held} more warnings like this one in the last {} s, held back: {last}",
                    SUMMARY_EVERY.as_secs()
                );
            }
        }
    }
}

/// The `message` field of an event, and the target a record of the log
/// crate gives (`log.target`).
#[derive(Default)]
struct Message {
    text: String,
    log_target: Option<String>,
}

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.text.push_str(value),
            "log.target" => self.log_target = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            use std::fmt::Write;
            let _ = write!(self.text, "{value:?}");
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Repeats {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() != Level::WARN {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        // records of the log crate (redis-rs) name theirs in a field
        let target = message.log_target.as_deref().unwrap_or(meta.target());
        for (t, prefix, window) in self.kinds.iter() {
            if target.starts_with(t) && message.text.starts_with(prefix) {
                return window
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .offer(Instant::now(), &message.text);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_is_one_line_then_a_summary_per_window() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut window = Window::default();
        assert!(window.offer(at(0), "Failed to connect: refused (1)"));
        for i in 1..=1807u64 {
            assert!(!window.offer(at(i * 4), &format!("Failed to connect: refused ({i})")));
        }
        assert_eq!(window.summary(at(7_300)), None, "not before a window");
        assert_eq!(
            window.summary(at(10_000)),
            Some((1807, "Failed to connect: refused (1807)".to_string()))
        );
        assert_eq!(window.summary(at(10_500)), None, "nothing held since");
        // still within the window of the summary: held back
        assert!(!window.offer(at(12_000), "Failed to connect: refused (again)"));
        assert_eq!(window.summary(at(15_000)), None);
        assert_eq!(
            window.summary(at(20_000)),
            Some((1, "Failed to connect: refused (again)".to_string()))
        );
        // quiet for a window: the next is logged at once
        assert!(window.offer(at(31_000), "Failed to connect: refused (later)"));
        assert_eq!(window.summary(at(45_000)), None);
    }
}
