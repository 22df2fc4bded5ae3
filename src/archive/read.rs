//! Reading the archive back, for the web view's pages of ended instances:
//! an archived instance, its events and messages a page at a time (keyset
//! paging on their Redis ids, as EVENTS and MESSAGES page), its attendance
//! rows, the users named in it, and which instances of a meeting are
//! archived. Every function returns the store's types, so a page draws
//! what it read here exactly as what it reads from Redis.
//!
//! A [`Reader`] has a pool of its own, apart from the archiver's: at most
//! two connections, made on first use (none at start-up, so a database
//! that is down delays nothing) and closed after a minute unused, each
//! read-only (SQLite opens the file read-only; PostgreSQL and MySQL set
//! the session's transactions READ ONLY), so nothing read here can write,
//! page views never wait for the archiver's connections nor hold them,
//! and SQLite's readers (the file is in WAL mode) never wait for its
//! writer. Every statement is bounded: a page is at most [`MAX_ROWS`]
//! rows by the primary key's order.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::attendance::Attendance;
use super::db::{Backend, DbError, mysql_session, numbered};
use crate::store::{
    Event, EventKind, Id, Instance, InstanceId, InstanceState, Message, Millis, Page,
};

/// The most rows one read returns.
pub const MAX_ROWS: usize = 1000;

/// How long a read waits for a connection (or to make one).
const WAIT: Duration = Duration::from_secs(3);

/// A read-only pool on the archive database.
pub struct Reader {
    pool: ReadPool,
}

enum ReadPool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

/// An archived instance: its window and end as the archive has them, and
/// when it was archived (whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The instance (state: ended).
    pub instance: Instance,
    /// When it ended.
    pub ended_at: Option<Millis>,
    /// When the archive finished copying it.
    pub archived_at: Millis,
}

/// A user as the archive has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedUser {
    /// Their id.
    pub id: Id,
    /// Their name.
    pub name: String,
    /// Their e-mail.
    pub email: String,
}

/// A stream id (`ms-seq`, or `ms` for `ms-0`) as the key it is archived
/// under; `None` when it is not one (EVENTS and MESSAGES take the same).
/// Parts past what a BIGINT holds are clamped: nothing is archived after
/// them.
pub fn cursor(id: &str) -> Option<(i64, i64)> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let part = |p: &str| -> Option<i64> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: u64 = p.parse().ok()?;
        Some(i64::try_from(value).unwrap_or(i64::MAX))
    };
    Some((part(ms)?, part(seq)?))
}

/// The rows of `sql` (`?` placeholders, every argument an integer) as
/// tuples of `$row`.
macro_rules! fetch {
    ($reader:expr, $row:ty, $sql:expr, $args:expr) => {{
        let sql: &str = $sql;
        let args: &[i64] = $args;
        match &$reader.pool {
            ReadPool::Postgres(pool) => {
                let sql = numbered(sql);
                let mut query = sqlx::query_as::<_, $row>(&sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                query.fetch_all(pool).await?
            }
            ReadPool::MySql(pool) => {
                let mut query = sqlx::query_as::<_, $row>(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                query.fetch_all(pool).await?
            }
            ReadPool::Sqlite(pool) => {
                let mut query = sqlx::query_as::<_, $row>(sql);
                for arg in args {
                    query = query.bind(*arg);
                }
                query.fetch_all(pool).await?
            }
        }
    }};
}

fn ms(t: DateTime<Utc>) -> Millis {
    t.timestamp_millis()
}

/// A value the archive holds that no row of ours can (a bug, or a
/// database written by something else).
fn corrupt(what: String) -> DbError {
    DbError::Sql(sqlx::Error::Decode(what.into()))
}

fn id_of(value: i64, what: &str) -> Result<Id, DbError> {
    Id::try_from(value).map_err(|_| corrupt(format!("{what} {value} is not an id")))
}

/// The next page's cursor: the last row's id when one more row than
/// asked for came back (and is dropped).
fn paged<T>(mut items: Vec<T>, limit: usize, id: impl Fn(&T) -> String) -> Page<T> {
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(id)
    } else {
        None
    };
    Page { items, next }
}

/// The statement reading a page of the instance `id`'s entries in `table`
/// (events or messages; each row `entry_ms, entry_seq, ` then `columns`)
/// after the entry `after`, oldest first, with its arguments and the
/// page's limit (1..[`MAX_ROWS`]): it reads one row more, which tells
/// [`paged`] that a next page is there.
fn entries_after(
    table: &str,
    columns: &str,
    id: InstanceId,
    after: Option<(i64, i64)>,
    limit: usize,
) -> (String, [i64; 6], usize) {
    let sql = format!(
        "SELECT entry_ms, entry_seq, {columns} FROM {table} \
         WHERE meeting_id = ? AND order_id = ? \
         AND (entry_ms > ? OR (entry_ms = ? AND entry_seq > ?)) \
         ORDER BY entry_ms, entry_seq LIMIT ?"
    );
    let limit = limit.clamp(1, MAX_ROWS);
    let (after_ms, after_seq) = after.unwrap_or((-1, -1));
    let args = [
        id.meeting as i64,
        id.order as i64,
        after_ms,
        after_ms,
        after_seq,
        limit as i64 + 1,
    ];
    (sql, args, limit)
}

type EventRow = (
    i64,
    i64,
    String,
    i64,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

type MessageRow = (i64, i64, i64, DateTime<Utc>, String);

type AttendanceRow = (i64, DateTime<Utc>, Option<DateTime<Utc>>, f64, i32, i32);

impl Reader {
    /// A read-only pool on the database at `url` (an `archive.url`). No
    /// connection is made until the first read.
    pub fn new(url: &str) -> Result<Reader, DbError> {
        let (backend, url) = Backend::of_url(url)?;
        let idle = Some(Duration::from_secs(60));
        let pool = match backend {
            Backend::Postgres => ReadPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .acquire_timeout(WAIT)
                    .idle_timeout(idle)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                                .execute(conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect_lazy(&url)?,
            ),
            Backend::MySql => ReadPool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .acquire_timeout(WAIT)
                    .idle_timeout(idle)
                    .after_connect(|conn, _| Box::pin(mysql_session(conn, true)))
                    .connect_lazy_with(MySqlConnectOptions::from_str(&url)?),
            ),
            Backend::Sqlite => ReadPool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .min_connections(0)
                    .acquire_timeout(WAIT)
                    .idle_timeout(idle)
                    .connect_lazy_with(
                        SqliteConnectOptions::from_str(&url)?
                            .read_only(true)
                            .busy_timeout(WAIT),
                    ),
            ),
        };
        Ok(Reader { pool })
    }

    /// A text column as a string the driver decodes: MySQL's columns of
    /// the archive are `utf8mb4_bin`, which sqlx takes for bytes, so they
    /// are read converted to the connection's (non-binary) collation.
    fn text(&self, column: &str) -> String {
        match self.pool {
            ReadPool::MySql(_) => format!("CONVERT({column} USING utf8mb4)"),
            _ => column.to_string(),
        }
    }

    /// The instance, if the archive holds it whole (copied to its last
    /// row: `archived_at` is set once its attendance is).
    pub async fn instance(&self, id: InstanceId) -> Result<Option<Archived>, DbError> {
        const SQL: &str = "SELECT starts_at, ends_at, ended_at, archived_at FROM instances \
                           WHERE meeting_id = ? AND order_id = ? AND archived_at IS NOT NULL";
        let rows = fetch!(
            self,
            (
                DateTime<Utc>,
                DateTime<Utc>,
                Option<DateTime<Utc>>,
                DateTime<Utc>
            ),
            SQL,
            &[id.meeting as i64, id.order as i64]
        );
        Ok(rows
            .into_iter()
            .next()
            .map(|(from, to, ended, archived)| Archived {
                instance: Instance {
                    id,
                    from: ms(from),
                    to: ms(to),
                    state: InstanceState::Ended,
                },
                ended_at: ended.map(ms),
                archived_at: ms(archived),
            }))
    }

    /// A page of the instance's events, oldest first, after the event id
    /// `after` (a [`cursor`]): at most `limit` (1..[`MAX_ROWS`]), and the
    /// `next` to pass for the page after, as EVENTS gives them.
    pub async fn events(
        &self,
        id: InstanceId,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Page<Event>, DbError> {
        let columns = format!(
            "{}, user_id, happened_at, scheduled_end, processed_at",
            self.text("kind")
        );
        let (sql, args, limit) = entries_after("events", &columns, id, after, limit);
        let rows = fetch!(self, EventRow, &sql, &args);
        let mut events = Vec::with_capacity(rows.len());
        for (entry_ms, entry_seq, kind, user, at, scheduled_end, processed_at) in rows {
            let kind = match kind.as_str() {
                "join" => EventKind::Join,
                "leave" => EventKind::Leave,
                "timeout" => EventKind::Timeout,
                other => return Err(corrupt(format!("an event of kind {other:?}"))),
            };
            events.push(Event {
                id: format!("{entry_ms}-{entry_seq}"),
                user: Some(id_of(user, "user")?),
                kind,
                at: ms(at),
                scheduled_end: scheduled_end.map(ms),
                processed_at: processed_at.map(ms),
                reason: None,
            });
        }
        Ok(paged(events, limit, |e| e.id.clone()))
    }

    /// A page of the instance's messages, oldest first, after the message
    /// id `after`, as MESSAGES gives them.
    pub async fn messages(
        &self,
        id: InstanceId,
        after: Option<(i64, i64)>,
        limit: usize,
    ) -> Result<Page<Message>, DbError> {
        let columns = format!("user_id, posted_at, {}", self.text("body"));
        let (sql, args, limit) = entries_after("messages", &columns, id, after, limit);
        let rows = fetch!(self, MessageRow, &sql, &args);
        let mut messages = Vec::with_capacity(rows.len());
        for (entry_ms, entry_seq, user, at, text) in rows {
            messages.push(Message {
                id: format!("{entry_ms}-{entry_seq}"),
                user: id_of(user, "user")?,
                text,
                at: ms(at),
            });
        }
        Ok(paged(messages, limit, |m| m.id.clone()))
    }

    /// The instance's attendance rows, by first join (then user), at most
    /// `limit` (1..[`MAX_ROWS`]).
    pub async fn attendance(
        &self,
        id: InstanceId,
        limit: usize,
    ) -> Result<Vec<Attendance>, DbError> {
        const SQL: &str = "SELECT user_id, first_join, last_leave, seconds_present, joins, \
                           messages FROM attendance WHERE meeting_id = ? AND order_id = ? \
                           ORDER BY first_join, user_id LIMIT ?";
        let limit = limit.clamp(1, MAX_ROWS);
        let rows = fetch!(
            self,
            AttendanceRow,
            SQL,
            &[id.meeting as i64, id.order as i64, limit as i64]
        );
        rows.into_iter()
            .map(|(user, first, last, seconds, joins, messages)| {
                Ok(Attendance {
                    user: id_of(user, "user")?,
                    first_join: ms(first),
                    last_leave: last.map(ms),
                    present_ms: (seconds * 1000.0).round() as i64,
                    joins: u64::try_from(joins).unwrap_or(0),
                    messages: u64::try_from(messages).unwrap_or(0),
                })
            })
            .collect()
    }

    /// The users of `ids` the archive holds (at most [`MAX_ROWS`] asked
    /// per statement).
    pub async fn users(&self, ids: &[Id]) -> Result<HashMap<Id, ArchivedUser>, DbError> {
        let mut found = HashMap::new();
        let mut unique: Vec<i64> = ids.iter().map(|&u| u as i64).collect();
        unique.sort_unstable();
        unique.dedup();
        for chunk in unique.chunks(MAX_ROWS) {
            let sql = format!(
                "SELECT user_id, {}, {} FROM users WHERE user_id IN ({})",
                self.text("name"),
                self.text("email"),
                vec!["?"; chunk.len()].join(", ")
            );
            let rows = fetch!(self, (i64, String, String), &sql, chunk);
            for (user, name, email) in rows {
                let id = id_of(user, "user")?;
                found.insert(id, ArchivedUser { id, name, email });
            }
        }
        Ok(found)
    }

    /// Which of `orders` of `meeting` the archive holds whole.
    pub async fn archived_orders(
        &self,
        meeting: Id,
        orders: &[Id],
    ) -> Result<HashSet<Id>, DbError> {
        let mut found = HashSet::new();
        let orders: Vec<i64> = orders.iter().map(|&o| o as i64).collect();
        for chunk in orders.chunks(MAX_ROWS) {
            let sql = format!(
                "SELECT order_id FROM instances WHERE meeting_id = ? AND archived_at IS NOT NULL \
                 AND order_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(meeting as i64);
            args.extend_from_slice(chunk);
            let rows = fetch!(self, (i64,), &sql, &args);
            for (order,) in rows {
                found.insert(id_of(order, "order")?);
            }
        }
        Ok(found)
    }

    /// Close the pool.
    pub async fn close(&self) {
        match &self.pool {
            ReadPool::Postgres(pool) => pool.close().await,
            ReadPool::MySql(pool) => pool.close().await,
            ReadPool::Sqlite(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_read_as_events_and_messages_take_them() {
        assert_eq!(cursor("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(cursor("42"), Some((42, 0)));
        assert_eq!(cursor("0-0"), Some((0, 0)));
        assert_eq!(
            cursor("18446744073709551615-18446744073709551615"),
            Some((i64::MAX, i64::MAX))
        );
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1-+2",
            "18446744073709551616-0",
        ] {
            assert_eq!(cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_page_cut_short_names_its_last_row_as_next() {
        let page = paged(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, vec![1, 2]);
        assert_eq!(page.next.as_deref(), Some("2"));
        let page = paged(vec![1, 2], 2, |n| n.to_string());
        assert_eq!(page.next, None);
    }

    #[test]
    fn a_reader_opens_no_connection_until_it_reads() {
        // lazily: a database nobody serves is no error yet
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            for url in [
                "postgres://nobody@127.0.0.1:1/none",
                "mysql://nobody@127.0.0.1:1/none",
                "sqlite:///nonexistent/dir/archive.sqlite",
            ] {
                assert!(Reader::new(url).is_ok(), "{url}");
            }
            assert!(Reader::new("redis://x").is_err());
        });
    }
}
