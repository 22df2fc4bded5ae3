//! Configuration: settings as read, then validated once.
//!
//! Layers, later ones winning: the defaults, a TOML file (`--config`),
//! environment variables `MEETINGD_<SECTION>__<KEY>` (e.g.
//! `MEETINGD_REDIS__URL`, lists comma-separated), then the command line
//! (`--socket`, `--redis`). The raw settings ([`RawConfig`], every key with
//! its default, unknown keys refused) are checked once into a [`Config`]
//! whose values are ready to use; a bad value stops start-up with one
//! sentence naming the key. `config/meetingd.toml` documents every key.
//!
//! Nothing here knows the rest of the daemon: the daemon maps a [`Config`]
//! onto its parts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durability::Durability;

/// Why a configuration was refused: one sentence naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(key: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {problem}"))
}

/// The settings as read: every key with its default.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[socket]`
    pub socket: RawSocket,
    /// `[redis]`
    pub redis: RawRedis,
    /// `[limits]`
    pub limits: RawLimits,
    /// `[scheduler]`
    pub scheduler: RawScheduler,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[log]`
    pub log: RawLog,
    /// `[embedded]`
    pub embedded: RawEmbedded,
    /// `[shutdown]`
    pub shutdown: RawShutdown,
    /// `[retention]`
    pub retention: RawRetention,
    /// `[watch]`
    pub watch: RawWatch,
    /// `[stats]`
    pub stats: RawStats,
    /// `[archive]`
    pub archive: RawArchive,
    /// `[http]`
    pub http: RawHttp,
}

/// `[socket]`: the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSocket {
    /// Where it lives.
    pub path: String,
    /// Permission bits, octal.
    pub mode: String,
    /// Group owning it (name or gid); empty: the daemon's group.
    pub group: String,
    /// Most clients at once.
    pub max_connections: u64,
    /// Most clients of one uid at once (admins are exempt); unset: a
    /// quarter of `max_connections`.
    pub max_connections_per_uid: Option<u64>,
    /// Slots of `max_connections` only admins may take; unset: 1/64 of it
    /// (at least 1 when it is over 1).
    pub admin_reserved_connections: Option<u64>,
    /// Longest request line, bytes.
    pub max_line_bytes: u64,
    /// Close a connection idle this long.
    pub idle_timeout_secs: u64,
    /// Most requests of one connection read ahead.
    pub pipeline_depth: u64,
}

impl Default for RawSocket {
    fn default() -> Self {
        RawSocket {
            path: "/run/meetingd/meetingd.sock".into(),
            mode: "0660".into(),
            group: String::new(),
            max_connections: 1024,
            max_connections_per_uid: None,
            admin_reserved_connections: None,
            max_line_bytes: 65536,
            idle_timeout_secs: 300,
            pipeline_depth: 256,
        }
    }
}

/// `[redis]`: where the data lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRedis {
    /// `redis://[:password@]host:port/db` or `redis+unix:///path`; empty:
    /// the embedded redis-server.
    pub url: String,
    /// A Redis Cluster's nodes (`redis://host:port`, a few are enough to
    /// find the rest); when given, `url` must be empty.
    pub cluster: Vec<String>,
    /// How long a call may take before the request is `unavailable`, ms.
    pub timeout_ms: u64,
    /// Partitions meetings are spread over; unset: the count the data
    /// records, or 64 for new data. Changed by `meetingd repartition`.
    pub partitions: Option<u64>,
    /// What an acknowledged write survives: `fsync`, `everysec` or
    /// `memory`; unset: `fsync`, and an external Redis that keeps less is
    /// warned about rather than refused.
    pub durability: Option<String>,
}

impl Default for RawRedis {
    fn default() -> Self {
        RawRedis {
            url: String::new(),
            cluster: Vec::new(),
            timeout_ms: 1000,
            partitions: None,
            durability: None,
        }
    }
}

/// `[limits]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Longest chat text, bytes.
    pub chat_text_bytes: u64,
    /// Largest LIMIT of a page (and the default), at most 1000.
    pub page: u64,
    /// The most a page reply (PARTICIPANTS, MESSAGES, EVENTS) may take,
    /// bytes: a page stops before it (at least one entry), `next` set.
    pub reply_bytes: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            chat_text_bytes: 4096,
            page: 1000,
            reply_bytes: 1024 * 1024,
        }
    }
}

/// `[scheduler]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawScheduler {
    /// Cron expression with seconds, UTC.
    pub cron: String,
    /// Instances per tick step (one Lua call).
    pub tick_batch: u64,
    /// Timeout events per Lua call when instances end.
    pub timeout_budget: u64,
}

impl Default for RawScheduler {
    fn default() -> Self {
        RawScheduler {
            cron: "0 * * * * *".into(),
            tick_batch: 100,
            timeout_budget: 500,
        }
    }
}

/// `[admin]`: who may use admin commands besides root and the daemon's
/// own user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Admin uids.
    #[serde(deserialize_with = "id_list")]
    pub uids: Vec<u32>,
    /// Admin gids (the peer's primary group).
    #[serde(deserialize_with = "id_list")]
    pub gids: Vec<u32>,
}

/// A list of ids as TOML writes it (`[1, 2]`) or as the environment gives
/// it (`1` or `1,2`).
fn id_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        Numbers(Vec<u32>),
        Texts(Vec<String>),
        One(u32),
        Text(String),
    }
    let texts = match Ids::deserialize(deserializer)? {
        Ids::Numbers(ids) => return Ok(ids),
        Ids::One(id) => return Ok(vec![id]),
        Ids::Texts(texts) => texts,
        Ids::Text(text) => text.split(',').map(str::to_string).collect(),
    };
    texts
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            t.trim()
                .parse::<u32>()
                .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a numeric id")))
        })
        .collect()
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// A tracing filter: `info`, `debug`, `meetingd=debug,info`...
    /// `RUST_LOG`, when set, wins.
    pub level: String,
    /// `human` or `json` (on stderr; under systemd, logs go to journald).
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "human".into(),
        }
    }
}

/// `[embedded]`: the redis-server meetingd runs itself when no Redis is
/// configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEmbedded {
    /// The redis-server binary (searched on PATH when not a path).
    pub redis_server: String,
    /// Its data directory (AOF, socket); empty: `$STATE_DIRECTORY`, else
    /// /var/lib/meetingd for root, else ~/.local/state/meetingd.
    pub data_dir: String,
    /// Deprecated: `always`, `everysec` or `no`, read as
    /// `redis.durability` `fsync`, `everysec` or `memory`.
    pub appendfsync: Option<String>,
}

impl Default for RawEmbedded {
    fn default() -> Self {
        RawEmbedded {
            redis_server: "redis-server".into(),
            data_dir: String::new(),
            appendfsync: None,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawShutdown {
    /// How long a drain may take before the daemon exits anyway, seconds.
    pub drain_timeout_secs: u64,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown {
            drain_timeout_secs: 10,
        }
    }
}

/// `[retention]`: how long history is kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    /// Days after an instance's scheduled end when its event log and chat
    /// are deleted; 0 keeps them for ever.
    pub days: u64,
}

/// `[watch]`: WATCH's fan-out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWatch {
    /// Entries a watcher may fall behind its instance before it is
    /// dropped (the size of each watched instance's ring).
    pub buffer: u64,
    /// The kernel send buffer of a watching connection, bytes; 0 keeps the
    /// system's default.
    pub send_buffer_bytes: u64,
    /// Retired (WATCH reads through pub/sub now, one connection per
    /// master): a configuration that sets it is refused with a message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lane_size: Option<u64>,
}

impl Default for RawWatch {
    fn default() -> Self {
        RawWatch {
            buffer: 1024,
            send_buffer_bytes: 65_536,
            lane_size: None,
        }
    }
}

/// `[stats]`: the counters outside the socket.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStats {
    /// Deprecated: read as `http.listen` (which serves `/metrics` and the
    /// web view); empty (the default) sets nothing.
    pub prometheus: String,
}

/// `[http]`: the one HTTP listener: `/metrics` and the operator's web view.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    /// `127.0.0.1:PORT` (or `[::1]:PORT`) serves Prometheus text on
    /// `/metrics` and the read-only web view on `/`; empty (the default)
    /// serves nothing. An address that is not loopback needs `token`.
    pub listen: String,
    /// The bearer token asked of every HTTP request (a header, or the
    /// login form's cookie); empty: none, and loopback only.
    pub token: String,
}

/// The validated `[http]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: std::net::SocketAddr,
    /// The token every request must bring, if any.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The shortest and longest `http.token`.
pub const TOKEN_LENGTH: std::ops::RangeInclusive<usize> = 16..=256;

impl RawConfig {
    /// `[http]`, with the deprecated `stats.prometheus` read as
    /// `http.listen`: the listener if any, and the lines to log about it.
    fn http(&self) -> Result<(Option<HttpConfig>, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let listen = self.http.listen.trim();
        let old = self.stats.prometheus.trim();
        let (key, address) = match (listen, old) {
            ("", "") => ("http.listen", ""),
            (listen, "") => ("http.listen", listen),
            ("", old) => {
                warnings.push(format!(
                    "stats.prometheus is deprecated: {old:?} is read as http.listen (which \
                     serves /metrics and the web view); set that instead and remove \
                     stats.prometheus"
                ));
                ("stats.prometheus", old)
            }
            (listen, old) if listen == old => {
                warnings.push(format!(
                    "stats.prometheus is deprecated and http.listen = {listen:?} says the \
                     same: remove stats.prometheus"
                ));
                ("http.listen", listen)
            }
            (listen, old) => {
                return Err(bad(
                    "stats.prometheus",
                    format!(
                        "{old:?} contradicts http.listen = {listen:?}; this key is deprecated \
                         (one listener serves /metrics and the web view): remove it"
                    ),
                ));
            }
        };
        let token = match self.http.token.as_str() {
            "" => None,
            token => {
                if !TOKEN_LENGTH.contains(&token.len()) {
                    return Err(bad(
                        "http.token",
                        format!(
                            "is {} characters; it must be {}..{} (a random one: \
                             openssl rand -hex 32)",
                            token.len(),
                            TOKEN_LENGTH.start(),
                            TOKEN_LENGTH.end()
                        ),
                    ));
                }
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(bad(
                        "http.token",
                        "must be printable ASCII without spaces (it travels in a header and a cookie)",
                    ));
                }
                Some(token.to_string())
            }
        };
        if address.is_empty() {
            if token.is_some() {
                warnings.push(
                    "http.token is set but http.listen is not: nothing is served over HTTP"
                        .to_string(),
                );
            }
            return Ok((None, warnings));
        }
        let listen: std::net::SocketAddr = address.parse().map_err(|_| {
            bad(
                key,
                format!("{address:?} is not an address like 127.0.0.1:9464"),
            )
        })?;
        if !listen.ip().is_loopback() && token.is_none() {
            return Err(bad(
                key,
                format!(
                    "{address:?} is not a loopback address: serving beyond this machine needs \
                     http.token (every request must then bring it); or listen on 127.0.0.1"
                ),
            ));
        }
        Ok((Some(HttpConfig { listen, token }), warnings))
    }
}

/// `[archive]`: the copy of history in a SQL database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawArchive {
    /// `postgres://...`, `mysql://...`, `mariadb://...` or `sqlite://PATH`;
    /// empty: SQLite in the data directory with the embedded Redis, none
    /// with a Redis of one's own; `off`: none.
    pub url: String,
    /// Seconds an entry another daemon holds unarchived waits before this
    /// one takes it over.
    pub claim_after_secs: u64,
    /// The longest pause between attempts while the database is down, ms.
    pub retry_max_ms: u64,
    /// How often every outbox is looked at without a wake-up, ms (new
    /// entries wake the archiver at once; this finds what a lost wake-up
    /// left).
    pub poll_ms: u64,
    /// The most of its time the archiver spends copying an instance's
    /// history while requests keep the daemon busy, percent (1..100; 100:
    /// as fast as it can; an idle daemon's archiver runs flat out).
    pub busy_percent: u32,
}

impl Default for RawArchive {
    fn default() -> Self {
        RawArchive {
            url: String::new(),
            claim_after_secs: 60,
            retry_max_ms: 30_000,
            poll_ms: 30_000,
            busy_percent: 10,
        }
    }
}

impl RawArchive {
    /// The archive's options, given where the Redis is (`embedded`) and
    /// its data directory; `None` when there is no archive.
    fn validate(
        &self,
        embedded: bool,
        data_dir: &std::path::Path,
        retention: Duration,
    ) -> Result<Option<crate::archive::ArchiveOptions>, ConfigError> {
        let url = match self.url.trim() {
            "off" => return Ok(None),
            "" if embedded => format!("sqlite://{}", data_dir.join("archive.sqlite").display()),
            "" => return Ok(None),
            url => {
                if let Err(crate::archive::DbError::Url(why)) = crate::archive::Backend::of_url(url)
                {
                    return Err(bad("archive.url", format!("{}: {why}", redact_url(url))));
                }
                url.to_string()
            }
        };
        let claim_after = self.claim_after_secs;
        if !(1..=86_400).contains(&claim_after) {
            return Err(bad("archive.claim_after_secs", "must be 1..86400"));
        }
        if !(10..=3_600_000).contains(&self.retry_max_ms) {
            return Err(bad("archive.retry_max_ms", "must be 10..3600000"));
        }
        if !(10..=600_000).contains(&self.poll_ms) {
            return Err(bad("archive.poll_ms", "must be 10..600000"));
        }
        if !(1..=100).contains(&self.busy_percent) {
            return Err(bad("archive.busy_percent", "must be 1..100"));
        }
        Ok(Some(crate::archive::ArchiveOptions {
            url,
            retention,
            claim_after: Duration::from_secs(claim_after),
            retry_max: Duration::from_millis(self.retry_max_ms),
            poll: Duration::from_millis(self.poll_ms),
            busy_percent: self.busy_percent,
        }))
    }
}

/// What the command line overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--socket`
    pub socket: Option<PathBuf>,
    /// `--redis`
    pub redis: Option<String>,
    /// `--redis-cluster`
    pub redis_cluster: Option<Vec<String>>,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The control socket.
    pub socket: SocketConfig,
    /// `None` (and no cluster): run the embedded redis-server.
    pub redis_url: Option<String>,
    /// A Redis Cluster's nodes; empty: not a cluster.
    pub redis_cluster: Vec<String>,
    /// A Redis call's time limit.
    pub redis_timeout: Duration,
    /// Partitions of the key layout; `None`: the recorded count, or the
    /// default for new data.
    pub partitions: Option<u64>,
    /// Longest chat text, bytes.
    pub chat_text_bytes: usize,
    /// Largest page.
    pub page: u64,
    /// The most a page reply may take, bytes.
    pub reply_bytes: usize,
    /// The scheduler's cron expression.
    pub cron: String,
    /// Instances per tick step.
    pub tick_batch: usize,
    /// Timeout events per call.
    pub timeout_budget: usize,
    /// Admin uids.
    pub admin_uids: Vec<u32>,
    /// Admin gids.
    pub admin_gids: Vec<u32>,
    /// The tracing filter.
    pub log_level: String,
    /// JSON logs instead of human ones.
    pub log_json: bool,
    /// The embedded redis-server.
    pub embedded: EmbeddedConfig,
    /// Drain deadline.
    pub drain_timeout: Duration,
    /// How long history is kept after an instance's end (zero: for ever).
    pub retention: Duration,
    /// Entries a watcher may fall behind before it is dropped.
    pub watch_buffer: usize,
    /// A watching connection's kernel send buffer (0: the default).
    pub watch_send_buffer: usize,
    /// The HTTP listener (`/metrics` and the web view), if any.
    pub http: Option<HttpConfig>,
    /// The promise of an acknowledgement as configured; `None`: the
    /// default ([`Durability::DEFAULT`]), which only warns about an
    /// external Redis that keeps less.
    pub durability: Option<Durability>,
    /// Settings that work but should change (a deprecated key): one line
    /// each, logged at start-up.
    pub warnings: Vec<String>,
    /// The archive, if any.
    pub archive: Option<crate::archive::ArchiveOptions>,
}

/// The control socket's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SocketConfig {
    /// Path.
    pub path: PathBuf,
    /// Permission bits.
    pub mode: u32,
    /// Group to own it.
    pub group: Option<u32>,
    /// Most clients at once.
    pub max_connections: usize,
    /// Most clients of one uid at once (admins are exempt).
    pub max_connections_per_uid: usize,
    /// Slots only admins may take.
    pub admin_reserved_connections: usize,
    /// Longest request line.
    pub max_line: usize,
    /// Idle time limit.
    pub idle_timeout: Duration,
    /// Read-ahead per connection.
    pub pipeline_depth: usize,
}

/// The embedded redis-server's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedConfig {
    /// The binary.
    pub redis_server: PathBuf,
    /// Its directory.
    pub data_dir: PathBuf,
    /// The promise it is started to keep (its `appendfsync`).
    pub durability: Durability,
}

impl RawConfig {
    /// Read the layers: defaults, the file (if any), the environment, the
    /// command line. Every key of the file and every `MEETINGD_` variable
    /// is checked against the known ones first, so that a misspelt one is
    /// named with what to do about it.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<RawConfig, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(ConfigError(format!(
                        "{}: no such configuration file (config/meetingd.toml of the source \
                         is one to start from)",
                        file.display()
                    )));
                }
                Err(e) => {
                    return Err(ConfigError(format!(
                        "{}: cannot read it: {e}",
                        file.display()
                    )));
                }
            };
            check_file_keys(file, &text)?;
            builder = builder.add_source(config::File::from(file).format(config::FileFormat::Toml));
        }
        check_env_keys(std::env::vars_os().filter_map(|(name, value)| {
            Some((
                name.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        }))?;
        if let Some(filter) = std::env::var_os("RUST_LOG") {
            check_log_filter(&filter.to_string_lossy()).map_err(|why| bad("RUST_LOG", why))?;
        }
        builder = builder.add_source(
            config::Environment::with_prefix("MEETINGD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .list_separator(",")
                .with_list_parse_key("admin.uids")
                .with_list_parse_key("admin.gids")
                .with_list_parse_key("redis.cluster"),
        );
        let built = builder.build().map_err(|e| layer_error(&e, file))?;
        let mut raw: RawConfig = built.try_deserialize().map_err(|e| layer_error(&e, file))?;
        if let Some(socket) = &overrides.socket {
            raw.socket.path = socket.display().to_string();
        }
        if let Some(redis) = &overrides.redis {
            raw.redis.url = redis.clone();
            raw.redis.cluster.clear();
        }
        if let Some(cluster) = &overrides.redis_cluster {
            raw.redis.cluster = cluster.clone();
            raw.redis.url.clear();
        }
        Ok(raw)
    }

    /// Check every value; the configuration the daemon runs with.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let mut config = self.validate_but_archive()?;
        let embedded = config.redis_url.is_none() && config.redis_cluster.is_empty();
        config.archive =
            self.archive
                .validate(embedded, &config.embedded.data_dir, config.retention)?;
        Ok(config)
    }

    fn validate_but_archive(&self) -> Result<Config, ConfigError> {
        let s = &self.socket;
        if s.path.is_empty() {
            return Err(bad("socket.path", "must not be empty"));
        }
        let mode = u32::from_str_radix(s.mode.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                bad(
                    "socket.mode",
                    format!("{:?} is not an octal mode like \"0660\"", s.mode),
                )
            })?;
        let group = match s.group.as_str() {
            "" => None,
            name => Some(
                group_id(name).ok_or_else(|| bad("socket.group", format!("no group {name:?}")))?,
            ),
        };
        let positive = |key: &str, value: u64| -> Result<u64, ConfigError> {
            if value == 0 {
                Err(bad(key, "must be at least 1"))
            } else {
                Ok(value)
            }
        };
        let max_connections = positive("socket.max_connections", s.max_connections)?;
        let (per_uid, reserved) = connection_shares(
            max_connections,
            s.max_connections_per_uid,
            s.admin_reserved_connections,
        )?;
        let socket = SocketConfig {
            path: PathBuf::from(&s.path),
            mode,
            group,
            max_connections: max_connections as usize,
            max_connections_per_uid: per_uid as usize,
            admin_reserved_connections: reserved as usize,
            max_line: positive("socket.max_line_bytes", s.max_line_bytes)? as usize,
            idle_timeout: Duration::from_secs(positive(
                "socket.idle_timeout_secs",
                s.idle_timeout_secs,
            )?),
            pipeline_depth: positive("socket.pipeline_depth", s.pipeline_depth)? as usize,
        };
        let redis_url = match self.redis.url.trim() {
            "" => None,
            url => {
                redis::IntoConnectionInfo::into_connection_info(url).map_err(|e| {
                    bad(
                        "redis.url",
                        format!("{} is not a Redis URL ({e})", redact_url(url)),
                    )
                })?;
                Some(url.to_string())
            }
        };
        let redis_cluster: Vec<String> = self
            .redis
            .cluster
            .iter()
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect();
        for url in &redis_cluster {
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|e| {
                bad(
                    "redis.cluster",
                    format!("{} is not a Redis URL ({e})", redact_url(url)),
                )
            })?;
        }
        if redis_url.is_some() && !redis_cluster.is_empty() {
            return Err(bad(
                "redis.cluster",
                "set either redis.url or redis.cluster, not both",
            ));
        }
        let page = positive("limits.page", self.limits.page)?;
        if page > 1000 {
            return Err(bad(
                "limits.page",
                format!("{page} is over 1000, the most one Lua call reads"),
            ));
        }
        let tick_batch = positive("scheduler.tick_batch", self.scheduler.tick_batch)?;
        if tick_batch > 1000 {
            return Err(bad("scheduler.tick_batch", "must be 1..1000"));
        }
        let timeout_budget = positive("scheduler.timeout_budget", self.scheduler.timeout_budget)?;
        if timeout_budget > 1000 {
            return Err(bad("scheduler.timeout_budget", "must be 1..1000"));
        }
        crate_cron_check(&self.scheduler.cron).map_err(|why| bad("scheduler.cron", why))?;
        check_log_filter(&self.log.level).map_err(|why| bad("log.level", why))?;
        let log_json = match self.log.format.as_str() {
            "human" => false,
            "json" => true,
            other => {
                return Err(bad(
                    "log.format",
                    format!("{other:?} is neither \"human\" nor \"json\""),
                ));
            }
        };
        let e = &self.embedded;
        let embedded = redis_url.is_none() && redis_cluster.is_empty();
        let (durability, mut warnings) = self.durability(embedded)?;
        let (http, http_warnings) = self.http()?;
        warnings.extend(http_warnings);
        if e.redis_server.is_empty() {
            return Err(bad("embedded.redis_server", "must not be empty"));
        }
        Ok(Config {
            socket,
            redis_url,
            redis_cluster,
            redis_timeout: Duration::from_millis(positive(
                "redis.timeout_ms",
                self.redis.timeout_ms,
            )?),
            partitions: self
                .redis
                .partitions
                .map(|p| positive("redis.partitions", p))
                .transpose()?,
            chat_text_bytes: positive("limits.chat_text_bytes", self.limits.chat_text_bytes)?
                as usize,
            page,
            reply_bytes: positive("limits.reply_bytes", self.limits.reply_bytes)? as usize,
            cron: self.scheduler.cron.clone(),
            tick_batch: tick_batch as usize,
            timeout_budget: timeout_budget as usize,
            admin_uids: self.admin.uids.clone(),
            admin_gids: self.admin.gids.clone(),
            log_level: self.log.level.clone(),
            log_json,
            embedded: EmbeddedConfig {
                redis_server: PathBuf::from(&e.redis_server),
                data_dir: match e.data_dir.as_str() {
                    "" => default_data_dir(),
                    dir => PathBuf::from(dir),
                },
                durability: durability.unwrap_or(Durability::DEFAULT),
            },
            drain_timeout: Duration::from_secs(positive(
                "shutdown.drain_timeout_secs",
                self.shutdown.drain_timeout_secs,
            )?),
            retention: {
                let days = self.retention.days;
                if days > 36_500 {
                    return Err(bad(
                        "retention.days",
                        format!("{days} is over 100 years; 0 keeps history for ever"),
                    ));
                }
                Duration::from_secs(days * 86_400)
            },
            watch_buffer: {
                if self.watch.lane_size.is_some() {
                    return Err(bad(
                        "watch.lane_size",
                        "is retired: WATCH now holds one Redis subscriber connection per Redis \
                         (per master on a cluster) however many instances are watched; remove it",
                    ));
                }
                let buffer = self.watch.buffer;
                if !(16..=1_000_000).contains(&buffer) {
                    return Err(bad(
                        "watch.buffer",
                        format!("{buffer} is not in 16..1000000"),
                    ));
                }
                buffer as usize
            },
            watch_send_buffer: usize::try_from(self.watch.send_buffer_bytes)
                .ok()
                .filter(|b| *b <= 64 << 20)
                .ok_or_else(|| bad("watch.send_buffer_bytes", "must be at most 64 MiB"))?,
            http,
            durability,
            warnings,
            archive: None,
        })
    }

    /// `redis.durability`, and the deprecated `embedded.appendfsync` it
    /// replaces (read as its promise for the embedded Redis, the only one
    /// it ever set; contradicting `redis.durability` is refused): the
    /// promise if configured, and the lines to log about it.
    fn durability(&self, embedded: bool) -> Result<(Option<Durability>, Vec<String>), ConfigError> {
        let stated = match self.redis.durability.as_deref() {
            None => None,
            Some(name) => Some(Durability::parse(name).ok_or_else(|| {
                bad(
                    "redis.durability",
                    format!(
                        "{name:?} is not {}: what an acknowledged write survives (docs/operations.md, \
                         \"Durability: what an ack means\")",
                        Durability::NAMES.join(", ")
                    ),
                )
            })?),
        };
        let Some(old) = self.embedded.appendfsync.as_deref() else {
            return Ok((stated, Vec::new()));
        };
        let read_as = Durability::of_appendfsync(old).ok_or_else(|| {
            bad(
                "embedded.appendfsync",
                format!(
                    "{old:?} is not always, everysec or no; this key is deprecated: set \
                     redis.durability ({}) instead",
                    Durability::NAMES.join(", ")
                ),
            )
        })?;
        match stated {
            Some(stated) if stated != read_as => Err(bad(
                "embedded.appendfsync",
                format!(
                    "{old:?} contradicts redis.durability = \"{stated}\"; this key is \
                     deprecated: remove it (redis.durability alone sets the embedded Redis' \
                     appendfsync)"
                ),
            )),
            Some(stated) => Ok((
                Some(stated),
                vec![format!(
                    "embedded.appendfsync is deprecated and redis.durability = \"{stated}\" \
                     says the same: remove embedded.appendfsync"
                )],
            )),
            None if !embedded => Ok((
                None,
                vec![format!(
                    "embedded.appendfsync = {old:?} is deprecated and ignored: it only ever set \
                     the embedded Redis, and this daemon uses an external one; remove it"
                )],
            )),
            None => Ok((
                Some(read_as),
                vec![format!(
                    "embedded.appendfsync is deprecated: {old:?} is read as redis.durability = \
                     \"{read_as}\"; set that instead and remove embedded.appendfsync"
                )],
            )),
        }
    }

    /// The settings as TOML, with secrets (a Redis password) masked, and
    /// the defaults that depend on the machine (the embedded Redis's data
    /// directory) written out as they would be used.
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        if shown.embedded.data_dir.is_empty() {
            shown.embedded.data_dir = default_data_dir().display().to_string();
        }
        shown.redis.url = redact_url(&shown.redis.url);
        if !shown.http.token.is_empty() {
            shown.http.token = "***".into();
        }
        shown.redis.cluster = shown.redis.cluster.iter().map(|u| redact_url(u)).collect();
        // a database URL often names a user and no password (a socket,
        // peer authentication): that is shown as it is
        let userinfo = shown
            .archive
            .url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .map(|(userinfo, _)| userinfo);
        if userinfo.is_some_and(|u| u.contains(':')) {
            shown.archive.url = redact_url(&shown.archive.url);
        }
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }
}

/// The shares of `socket.max_connections` (`max`): most per uid, and the
/// slots kept for admins, as set or by default (a quarter; 1/64, at least
/// 1). One uid may not take every slot ordinary users may use, or one
/// client could lock out the others; the reserve leaves ordinary users at
/// least one.
fn connection_shares(
    max: u64,
    per_uid: Option<u64>,
    reserved: Option<u64>,
) -> Result<(u64, u64), ConfigError> {
    let reserved = reserved.unwrap_or(if max > 1 { (max / 64).max(1) } else { 0 });
    if reserved >= max {
        return Err(bad(
            "socket.admin_reserved_connections",
            format!(
                "{reserved} leaves no connection of socket.max_connections ({max}) to users who are not admins; it must be below it"
            ),
        ));
    }
    let open_to_all = max - reserved;
    let per_uid = per_uid.unwrap_or((max / 4).max(1).min(open_to_all));
    if per_uid == 0 || per_uid > open_to_all {
        return Err(bad(
            "socket.max_connections_per_uid",
            format!(
                "{per_uid} is not in 1..{open_to_all} (socket.max_connections {max} less the {reserved} of socket.admin_reserved_connections)"
            ),
        ));
    }
    Ok((per_uid, reserved))
}

/// Keys unset by default, which the defaults below do not show.
const UNSET_BY_DEFAULT: &[(&str, &str)] = &[
    ("redis", "partitions"),
    ("socket", "max_connections_per_uid"),
    ("socket", "admin_reserved_connections"),
    ("redis", "durability"),
    ("embedded", "appendfsync"),
];

/// The sections of the configuration and the keys of each, as the
/// defaults have them (so that they never drift from [`RawConfig`]), and
/// the keys unset by default.
fn known_keys() -> Vec<(String, Vec<String>)> {
    let Ok(toml::Value::Table(sections)) = toml::Value::try_from(RawConfig::default()) else {
        return Vec::new();
    };
    sections
        .into_iter()
        .map(|(section, keys)| {
            let mut keys: Vec<String> = match keys {
                toml::Value::Table(keys) => keys.keys().cloned().collect(),
                _ => Vec::new(),
            };
            keys.extend(
                UNSET_BY_DEFAULT
                    .iter()
                    .filter(|(s, _)| *s == section)
                    .map(|(_, key)| key.to_string()),
            );
            (section, keys)
        })
        .collect()
}

/// The edit distance of two short names (for "did you mean"), a swap of
/// two neighbours counting as one edit.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The known name closest to `name`, if one is close enough to be a typo.
fn closest<'a>(name: &str, known: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    known
        .into_iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 1.max(k.chars().count() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Where a misplaced key belongs: `socket.path` for `path`.
fn home_of(key: &str, known: &[(String, Vec<String>)]) -> Option<String> {
    known
        .iter()
        .find(|(_, keys)| keys.iter().any(|k| k == key))
        .map(|(section, _)| format!("{section}.{key}"))
}

/// Every key of a TOML configuration file must be one meetingd knows: a
/// misspelt key would otherwise be a setting silently not applied.
fn check_file_keys(file: &Path, text: &str) -> Result<(), ConfigError> {
    let shown = file.display();
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigError(format!(
            "{shown}: not valid TOML: {}",
            one_line(&e.to_string())
        ))
    })?;
    let known = known_keys();
    let sections: Vec<String> = known.iter().map(|(s, _)| s.clone()).collect();
    for (section, value) in &table {
        let Some((_, keys)) = known.iter().find(|(s, _)| s == section) else {
            let hint = match (home_of(section, &known), closest(section, &sections)) {
                (Some(home), _) => format!(
                    "a key goes under its section: {home} is written [{}] {section} = ...",
                    home.split('.').next().unwrap_or_default()
                ),
                (None, Some(near)) => format!("did you mean [{near}]?"),
                (None, None) => format!("the sections are {}", sections.join(", ")),
            };
            return Err(ConfigError(format!(
                "{section}: no such section in {shown}; {hint} (config/meetingd.toml lists every key)"
            )));
        };
        let toml::Value::Table(entries) = value else {
            return Err(ConfigError(format!(
                "{section}: in {shown} it must be a section, [{section}], holding {}",
                keys.join(", ")
            )));
        };
        for key in entries.keys() {
            if keys.contains(key) {
                continue;
            }
            let hint = match closest(key, keys) {
                Some(near) => format!("did you mean {section}.{near}?"),
                None => format!("[{section}] has {}.", keys.join(", ")),
            };
            return Err(ConfigError(format!(
                "{section}.{key}: no such key in {shown}; {hint} Remove or rename it \
                 (config/meetingd.toml lists every key)"
            )));
        }
    }
    Ok(())
}

/// Every `MEETINGD_` variable of the environment must name a section and
/// one of its keys, `MEETINGD_<SECTION>__<KEY>`.
fn check_env_keys(vars: impl IntoIterator<Item = (String, String)>) -> Result<(), ConfigError> {
    let known = known_keys();
    let sections: Vec<String> = known.iter().map(|(s, _)| s.clone()).collect();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("MEETINGD_") else {
            continue;
        };
        let lower = rest.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split("__").collect();
        let variable = |section: &str, key: &str| {
            format!(
                "MEETINGD_{}__{}",
                section.to_ascii_uppercase(),
                key.to_ascii_uppercase()
            )
        };
        let problem = match parts.as_slice() {
            [section, key] => match known.iter().find(|(s, _)| s == section) {
                Some((_, keys)) if keys.iter().any(|k| k == key) => continue,
                Some((_, keys)) => match closest(key, keys) {
                    Some(near) => format!(
                        "[{section}] has no key {key:?}; did you mean {}?",
                        variable(section, near)
                    ),
                    None => format!(
                        "[{section}] has no key {key:?}; its keys: {}",
                        keys.join(", ")
                    ),
                },
                None => match closest(section, &sections) {
                    Some(near) => {
                        format!("there is no section [{section}]; did you mean [{near}]?")
                    }
                    None => format!(
                        "there is no section [{section}]; the sections are {}",
                        sections.join(", ")
                    ),
                },
            },
            [single] => {
                let example = match known.iter().find(|(s, _)| s == single) {
                    Some((section, keys)) => {
                        let key = ["path", "url", "level"]
                            .into_iter()
                            .find(|k| keys.iter().any(|known| known == k))
                            .or(keys.first().map(String::as_str))
                            .unwrap_or("<key>");
                        format!("{}={value}", variable(section, key))
                    }
                    None => match home_of(single, &known) {
                        Some(home) => {
                            let (section, key) = home.split_once('.').unwrap_or_default();
                            format!("{}={value}", variable(section, key))
                        }
                        None => "MEETINGD_SOCKET__PATH=/run/meetingd/meetingd.sock".to_string(),
                    },
                };
                format!(
                    "not a setting: a variable names a section and one of its keys, \
                     MEETINGD_<SECTION>__<KEY> (two underscores between), e.g. {example}"
                )
            }
            _ => "not a setting: a variable names a section and one of its keys, \
                  MEETINGD_<SECTION>__<KEY>, e.g. MEETINGD_REDIS__URL"
                .to_string(),
        };
        let stop = if problem.ends_with('?') { "" } else { "." };
        return Err(ConfigError(format!(
            "{name}: {problem}{stop} Unset it or fix its name (config/meetingd.toml lists every key)"
        )));
    }
    Ok(())
}

/// The levels a log filter may name.
const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// A log filter as `log.level` and `RUST_LOG` take it: a level, or
/// `target=level` directives, comma-separated (`meetingd=debug,info`).
/// tracing would take any bare word as the name of a module to log at
/// every level, so that a mistyped level (`loud`) silenced everything
/// else: only levels stand alone here.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |word: &str| LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word.trim()));
    let wrong = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .find(|directive| match directive.rsplit_once('=') {
            Some((target, level)) => target.trim().is_empty() || !is_level(level),
            None => !is_level(directive),
        });
    if filter.trim().is_empty()
        || wrong.is_some()
        || tracing_subscriber::EnvFilter::try_new(filter).is_err()
    {
        return Err(format!(
            "{filter:?} is not a log level: use one of {}, or per-module levels like \
             \"meetingd=debug,info\"",
            LEVELS.join(", ")
        ));
    }
    Ok(())
}

/// A configuration layer's error (a value of the wrong type...) as one
/// line that starts with the key and says where the value came from.
fn layer_error(err: &config::ConfigError, file: Option<&Path>) -> ConfigError {
    let origin = |origin: &Option<String>, key: &str| match (origin.as_deref(), file) {
        (Some(_), Some(file)) if origin.as_deref() != Some("the environment") => {
            format!("in {}", file.display())
        }
        _ => format!(
            "from {}",
            format!("MEETINGD_{}", key.replace('.', "__")).to_ascii_uppercase()
        ),
    };
    match err {
        config::ConfigError::Type {
            origin: from,
            unexpected,
            expected,
            key: Some(key),
        } => ConfigError(format!(
            "{key}: expected {expected}, got {unexpected} ({}); config/meetingd.toml shows \
             each key's kind of value",
            origin(from, key)
        )),
        config::ConfigError::At {
            error,
            origin: from,
            key: Some(key),
        } => ConfigError(format!(
            "{key}: {} ({})",
            one_line(&error.to_string()),
            origin(from, key)
        )),
        other => ConfigError(one_line(&other.to_string())),
    }
}

/// Load and validate in one go.
pub fn load(
    file: Option<&Path>,
    overrides: &Overrides,
) -> Result<(RawConfig, Config), ConfigError> {
    let raw = RawConfig::load(file, overrides)?;
    let config = raw.validate()?;
    Ok((raw, config))
}

/// The cron check, kept here so that config depends on nothing of ours.
fn crate_cron_check(cron: &str) -> Result<(), String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(cron)
        .map(drop)
        .map_err(|_| {
            format!("{cron:?} is not a cron expression with seconds, like \"0 * * * * *\"")
        })
}

/// A Redis URL with its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

/// Config errors span lines sometimes; the daemon prints one.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn group_id(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse::<u32>() {
        return Some(gid);
    }
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam reads a NUL-terminated name and returns a pointer to
    // static storage or null; we copy the gid out at once.
    let entry = unsafe { libc::getgrnam(cname.as_ptr()) };
    if entry.is_null() {
        None
    } else {
        // SAFETY: non-null pointer from getgrnam, valid until the next call.
        Some(unsafe { (*entry).gr_gid })
    }
}

fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several, colon-separated
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_string();
        return PathBuf::from(first);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/meetingd");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/state/meetingd"),
        None => PathBuf::from("meetingd-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError(one_line(&e.to_string())))?;
        raw.validate()
    }

    #[test]
    fn the_archive_defaults_to_sqlite_beside_the_embedded_redis_only() {
        let embedded = from_toml("[embedded]\ndata_dir = \"/srv/m\"").expect("valid");
        let archive = embedded.archive.expect("an archive");
        assert_eq!(archive.url, "sqlite:///srv/m/archive.sqlite");
        assert_eq!(archive.claim_after, Duration::from_secs(60));
        let own = from_toml("[redis]\nurl = \"redis://127.0.0.1:6379/0\"").expect("valid");
        assert_eq!(own.archive, None, "no archive until archive.url is set");
        let set = from_toml(
            "[redis]\nurl = \"redis://127.0.0.1/0\"\n[archive]\nurl = \"postgres://m@db/archive\"\n[retention]\ndays = 2",
        )
        .expect("valid");
        let archive = set.archive.expect("an archive");
        assert_eq!(archive.url, "postgres://m@db/archive");
        assert_eq!(archive.retention, Duration::from_secs(2 * 86_400));
        let off = from_toml("[archive]\nurl = \"off\"").expect("valid");
        assert_eq!(off.archive, None);
    }

    #[test]
    fn bad_archive_settings_name_their_key() {
        for (text, key) in [
            ("[archive]\nurl = \"redis://x\"", "archive.url"),
            ("[archive]\nurl = \"sqlite://\"", "archive.url"),
            (
                "[archive]\nclaim_after_secs = 0",
                "archive.claim_after_secs",
            ),
            ("[archive]\nretry_max_ms = 1", "archive.retry_max_ms"),
            ("[archive]\npoll_ms = 999999", "archive.poll_ms"),
            ("[archive]\nbusy_percent = 0", "archive.busy_percent"),
            ("[archive]\nbusy_percent = 101", "archive.busy_percent"),
        ] {
            let err = from_toml(text).expect_err(text);
            assert!(err.0.starts_with(key), "{text}: {err}");
        }
        // a password never shows
        let raw: RawConfig =
            toml::from_str("[archive]\nurl = \"postgres://m:secret@db/a\"").expect("toml");
        let shown = raw.redacted_toml();
        assert!(shown.contains("postgres://m:***@db/a"), "{shown}");
        let raw: RawConfig =
            toml::from_str("[archive]\nurl = \"postgres://m@db/a?host=/run\"").expect("toml");
        assert!(raw.redacted_toml().contains("postgres://m@db/a?host=/run"));
        let err = from_toml("[archive]\nurl = \"oracle://u:secret@h/d\"").expect_err("bad");
        assert!(!err.0.contains("secret"), "{err}");
    }

    #[test]
    fn defaults_are_the_spec_s() {
        let config = RawConfig::default().validate().expect("defaults are valid");
        assert_eq!(
            config.socket.path,
            PathBuf::from("/run/meetingd/meetingd.sock")
        );
        assert_eq!(config.socket.mode, 0o660);
        assert_eq!(config.socket.max_line, 64 * 1024);
        assert_eq!(config.socket.max_connections, 1024);
        assert_eq!(config.socket.max_connections_per_uid, 256);
        assert_eq!(config.socket.admin_reserved_connections, 16);
        assert_eq!(config.socket.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.chat_text_bytes, 4096);
        assert_eq!(config.page, 1000);
        assert_eq!(config.redis_timeout, Duration::from_secs(1));
        assert_eq!(config.cron, "0 * * * * *");
        assert_eq!(config.redis_url, None);
        assert_eq!(config.durability, None);
        assert_eq!(config.embedded.durability, Durability::Fsync);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn durability_and_its_deprecated_alias() {
        let config = from_toml("[redis]\ndurability = \"everysec\"").expect("everysec");
        assert_eq!(config.durability, Some(Durability::Everysec));
        assert_eq!(config.embedded.durability, Durability::Everysec);
        assert!(config.warnings.is_empty());
        // the old key, alone: read as its promise, with a warning
        let config = from_toml("[embedded]\nappendfsync = \"no\"").expect("the old key");
        assert_eq!(config.durability, Some(Durability::Memory));
        assert_eq!(config.embedded.durability, Durability::Memory);
        assert!(
            config.warnings[0].contains("redis.durability = \"memory\""),
            "{:?}",
            config.warnings
        );
        // both, agreeing: a warning; contradicting: refused, naming both
        let config =
            from_toml("[redis]\ndurability = \"fsync\"\n[embedded]\nappendfsync = \"always\"")
                .expect("agreeing");
        assert_eq!(config.durability, Some(Durability::Fsync));
        assert_eq!(config.warnings.len(), 1);
        let err =
            from_toml("[redis]\ndurability = \"fsync\"\n[embedded]\nappendfsync = \"everysec\"")
                .expect_err("contradicting");
        assert!(err.0.starts_with("embedded.appendfsync: "), "{err}");
        assert!(err.0.contains("redis.durability = \"fsync\""), "{err}");
        // with an external Redis the old key set nothing, and still does not
        let config = from_toml(
            "[redis]\nurl = \"redis://127.0.0.1:6379\"\n[embedded]\nappendfsync = \"no\"",
        )
        .expect("external");
        assert_eq!(config.durability, None);
        assert!(
            config.warnings[0].contains("ignored"),
            "{:?}",
            config.warnings
        );
        let err = from_toml("[redis]\ndurability = \"always\"").expect_err("always");
        assert_eq!(
            err.0,
            "redis.durability: \"always\" is not fsync, everysec, memory: what an acknowledged \
             write survives (docs/operations.md, \"Durability: what an ack means\")"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[socket]\nmode = \"999\"", "socket.mode"),
            ("[socket]\nmax_connections = 0", "socket.max_connections"),
            (
                "[socket]\nmax_connections_per_uid = 0",
                "socket.max_connections_per_uid",
            ),
            (
                "[socket]\nmax_connections = 10\nmax_connections_per_uid = 11",
                "socket.max_connections_per_uid",
            ),
            (
                "[socket]\nmax_connections = 10\nadmin_reserved_connections = 10",
                "socket.admin_reserved_connections",
            ),
            (
                "[socket]\nmax_connections = 10\nadmin_reserved_connections = 2\nmax_connections_per_uid = 9",
                "socket.max_connections_per_uid",
            ),
            ("[redis]\nurl = \"http://x\"", "redis.url"),
            ("[limits]\npage = 5000", "limits.page"),
            ("[watch]\nbuffer = 3", "watch.buffer"),
            ("[watch]\nlane_size = 4", "watch.lane_size"),
            ("[stats]\nprometheus = \"0.0.0.0:9464\"", "stats.prometheus"),
            ("[stats]\nprometheus = \"localhost\"", "stats.prometheus"),
            ("[http]\nlisten = \"0.0.0.0:9464\"", "http.listen"),
            ("[http]\nlisten = \"localhost:80\"", "http.listen"),
            ("[http]\ntoken = \"short\"", "http.token"),
            (
                "[http]\ntoken = \"a token with spaces in it\"",
                "http.token",
            ),
            (
                "[http]\nlisten = \"127.0.0.1:1\"\n[stats]\nprometheus = \"127.0.0.1:2\"",
                "stats.prometheus",
            ),
            ("[scheduler]\ncron = \"every minute\"", "scheduler.cron"),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[embedded]\nappendfsync = \"sometimes\"",
                "embedded.appendfsync",
            ),
            ("[redis]\ndurability = \"always\"", "redis.durability"),
            ("[redis]\ndurability = \"\"", "redis.durability"),
            ("[retention]\ndays = 99999", "retention.days"),
            ("[log]\nlevel = \"loud\"", "log.level"),
            ("[log]\nlevel = \"meetingd=loud\"", "log.level"),
            ("[log]\nlevel = \"\"", "log.level"),
        ];
        for (text, key) in cases {
            let err = from_toml(text).expect_err(text);
            assert!(err.0.starts_with(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn http_listen_its_token_and_the_deprecated_alias() {
        let none = from_toml("").expect("defaults");
        assert_eq!(none.http, None, "no HTTP listener by default");
        let local = from_toml("[http]\nlisten = \"127.0.0.1:9464\"").expect("loopback");
        let http = local.http.expect("a listener");
        assert_eq!(http.listen.to_string(), "127.0.0.1:9464");
        assert_eq!(http.token, None);
        assert!(local.warnings.is_empty());
        let v6 = from_toml("[http]\nlisten = \"[::1]:80\"").expect("IPv6 loopback");
        assert!(v6.http.is_some());
        // beyond this machine: only with a token
        let err = from_toml("[http]\nlisten = \"0.0.0.0:8080\"").expect_err("no token");
        assert!(err.0.starts_with("http.listen: "), "{err}");
        assert!(err.0.contains("http.token"), "{err}");
        let token = "0123456789abcdef0123";
        let open = from_toml(&format!(
            "[http]\nlisten = \"0.0.0.0:8080\"\ntoken = \"{token}\""
        ))
        .expect("with a token");
        assert_eq!(open.http.expect("a listener").token.as_deref(), Some(token));
        // the old key alone: read as http.listen, with a warning
        let old = from_toml("[stats]\nprometheus = \"127.0.0.1:9464\"").expect("the old key");
        assert_eq!(
            old.http.expect("a listener").listen.to_string(),
            "127.0.0.1:9464"
        );
        assert!(old.warnings[0].contains("deprecated"), "{:?}", old.warnings);
        let both = from_toml(
            "[stats]\nprometheus = \"127.0.0.1:9464\"\n[http]\nlisten = \"127.0.0.1:9464\"",
        )
        .expect("agreeing");
        assert_eq!(both.warnings.len(), 1);
        let err = from_toml("[stats]\nprometheus = \"0.0.0.0:9464\"").expect_err("old, open");
        assert!(err.0.starts_with("stats.prometheus: "), "{err}");
        // a token never shows, not even in Debug
        let raw: RawConfig = toml::from_str(&format!(
            "[http]\nlisten = \"127.0.0.1:1\"\ntoken = \"{token}\""
        ))
        .expect("toml");
        assert!(!raw.redacted_toml().contains(token));
        let config = raw.validate().expect("valid");
        assert!(!format!("{config:?}").contains(token));
        let lonely = from_toml(&format!("[http]\ntoken = \"{token}\"")).expect("token alone");
        assert!(
            lonely.warnings[0].contains("nothing is served"),
            "{:?}",
            lonely.warnings
        );
    }

    #[test]
    fn the_retired_lane_size_is_refused_with_why() {
        let err = from_toml("[watch]\nlane_size = 1000").expect_err("refused");
        assert!(err.0.contains("retired"), "{err}");
        assert!(err.0.contains("remove it"), "{err}");
    }

    #[test]
    fn log_levels_are_levels() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "meetingd=debug,info",
            "warn,redis=error",
        ] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in [
            "loud",
            "meetingd",
            "info,verbose",
            "=debug",
            "meetingd=",
            "",
        ] {
            let err = check_log_filter(bad).expect_err(bad);
            assert!(err.contains("error, warn, info"), "{bad}: {err}");
        }
    }

    fn file_keys(text: &str) -> Result<(), ConfigError> {
        check_file_keys(Path::new("/etc/meetingd/meetingd.toml"), text)
    }

    #[test]
    fn unknown_keys_in_a_file_are_named_with_a_fix() {
        assert_eq!(
            file_keys("[socket]\npath = \"/x\"\n[log]\nlevel = \"info\""),
            Ok(())
        );
        let err = file_keys("[socket]\nmod = \"0660\"").expect_err("mod");
        assert!(err.0.starts_with("socket.mod: "), "{err}");
        assert!(err.0.contains("did you mean socket.mode?"), "{err}");
        assert!(err.0.contains("/etc/meetingd/meetingd.toml"), "{err}");
        let err = file_keys("[sockett]\npath = \"/x\"").expect_err("sockett");
        assert!(err.0.contains("did you mean [socket]?"), "{err}");
        let err = file_keys("path = \"/x\"").expect_err("a key outside its section");
        assert!(err.0.contains("[socket] path"), "{err}");
        let err = file_keys("socket = \"/x\"").expect_err("a section as a value");
        assert!(err.0.starts_with("socket: "), "{err}");
        let err = file_keys("[redis]\nurl = = 1").expect_err("not TOML");
        assert!(err.0.contains("not valid TOML"), "{err}");
    }

    fn env_keys(vars: &[(&str, &str)]) -> Result<(), ConfigError> {
        check_env_keys(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn unknown_variables_are_named_with_a_fix() {
        assert_eq!(
            env_keys(&[
                ("MEETINGD_SOCKET__PATH", "/tmp/x"),
                ("MEETINGD_EMBEDDED__DATA_DIR", "/tmp/d"),
                ("MEETINGDX", "not ours"),
                ("HOME", "/root"),
            ]),
            Ok(())
        );
        let err = env_keys(&[("MEETINGD_SOCKET", "/tmp/x")]).expect_err("a bare section");
        assert!(err.0.starts_with("MEETINGD_SOCKET: not a setting"), "{err}");
        assert!(
            err.0.contains("MEETINGD_SOCKET__PATH=/tmp/x"),
            "shows the variable to set: {err}"
        );
        let err = env_keys(&[("MEETINGD_SOCKET__PAHT", "/tmp/x")]).expect_err("a typo");
        assert!(
            err.0.contains("did you mean MEETINGD_SOCKET__PATH?"),
            "{err}"
        );
        let err = env_keys(&[("MEETINGD_FOO__BAR", "1")]).expect_err("no section");
        assert!(err.0.contains("no section [foo]"), "{err}");
        assert!(err.0.contains("Unset it"), "{err}");
    }

    #[test]
    fn the_shown_configuration_names_the_data_directory() {
        let shown = RawConfig::default().redacted_toml();
        let data_dir = default_data_dir().display().to_string();
        assert!(
            shown.contains(&format!("data_dir = {:?}", data_dir)),
            "{shown}"
        );
        assert!(!shown.contains("data_dir = \"\""), "{shown}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("redis://:s3cret@db:6379/0"),
            "redis://:***@db:6379/0"
        );
        assert_eq!(redact_url("redis://app:s3cret@db"), "redis://app:***@db");
        assert_eq!(
            redact_url("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        let mut raw = RawConfig::default();
        raw.redis.url = "redis://:s3cret@db".into();
        assert!(!raw.redacted_toml().contains("s3cret"));
    }
}
