//! The archive database: PostgreSQL, MySQL/MariaDB or SQLite through sqlx,
//! its schema (versioned migrations in `migrations/<backend>/`, run at
//! start-up; a database of a newer schema is refused), and the writes the
//! archiver makes, each idempotent: a row is keyed by what Redis gave it,
//! inserted once, and replaced only by what a later outbox entry says.
//!
//! The three backends share one schema and one set of statements; they
//! differ in placeholders (`$n` for PostgreSQL) and in how an upsert is
//! spelled (`ON CONFLICT` against MySQL's `ON DUPLICATE KEY UPDATE`), which
//! [`Db`] takes care of.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{MySql, Postgres, Sqlite, Transaction};

use crate::store::Millis;

/// The schema versions this build knows, per backend: (version, what,
/// PostgreSQL, MySQL, SQLite).
const MIGRATIONS: &[(i64, &str, &str, &str, &str)] = &[
    (
        1,
        "archive",
        include_str!("../../migrations/postgres/0001_archive.sql"),
        include_str!("../../migrations/mysql/0001_archive.sql"),
        include_str!("../../migrations/sqlite/0001_archive.sql"),
    ),
    (
        2,
        "user versions",
        include_str!("../../migrations/postgres/0002_user_versions.sql"),
        include_str!("../../migrations/mysql/0002_user_versions.sql"),
        include_str!("../../migrations/sqlite/0002_user_versions.sql"),
    ),
];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 2;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database holds a schema newer than this build knows: running
    /// against it could write what a newer meetingd would not expect.
    #[error(
        "the archive database has schema version {0}, newer than this meetingd knows ({SCHEMA_VERSION}): upgrade meetingd, or point archive.url at another database"
    )]
    Newer(i64),
    /// The URL names no backend we speak (the URL itself is not in the
    /// message: it may hold a password).
    #[error("archive.url: {0}")]
    Url(String),
    /// The database failed (unreachable, refused a statement, ...).
    #[error("archive database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A migration failed.
    #[error("archive schema: {0}")]
    Migrate(MigrateError),
    /// Rows of the wrong shape were given (a bug).
    #[error("archive rows: {0}")]
    Rows(String),
}

/// Which database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

impl Backend {
    /// The backend an `archive.url` names, and the URL sqlx takes.
    pub fn of_url(url: &str) -> Result<(Backend, String), DbError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| DbError::Url("not a URL".into()))?;
        match scheme {
            "postgres" | "postgresql" => Ok((Backend::Postgres, url.to_string())),
            "mysql" => Ok((Backend::MySql, url.to_string())),
            "mariadb" => Ok((Backend::MySql, format!("mysql://{rest}"))),
            "sqlite" if !rest.is_empty() => Ok((Backend::Sqlite, url.to_string())),
            _ => Err(DbError::Url(
                "expected postgres://..., mysql://..., mariadb://... or sqlite://PATH".into(),
            )),
        }
    }
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Text or NULL.
    MaybeText(Option<String>),
    /// A flag.
    Bool(bool),
    /// A number.
    Float(f64),
    /// A time, or NULL.
    Time(Option<DateTime<Utc>>),
}

/// A time (ms since the epoch) as a bound value.
pub fn time(ms: Millis) -> Arg {
    Arg::Time(DateTime::from_timestamp_millis(ms))
}

/// A time or NULL.
pub fn maybe_time(ms: Option<Millis>) -> Arg {
    Arg::Time(ms.and_then(DateTime::from_timestamp_millis))
}

enum Pool {
    Postgres(sqlx::PgPool),
    MySql(sqlx::MySqlPool),
    Sqlite(sqlx::SqlitePool),
}

/// A connection pool to the archive.
pub struct Db {
    backend: Backend,
    pool: Pool,
}

/// One transaction.
pub struct Tx {
    backend: Backend,
    inner: TxInner,
}

enum TxInner {
    Postgres(Transaction<'static, Postgres>),
    MySql(Transaction<'static, MySql>),
    Sqlite(Transaction<'static, Sqlite>),
}

/// `sql` with `?` placeholders as PostgreSQL's `$1, $2, ...` (the writer's
/// statements and the reader's).
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// Set up a new MySQL connection's session, the archiver's and the
/// reader's: DATETIME columns hold UTC; with `read_only`, its transactions
/// are READ ONLY.
pub(super) async fn mysql_session(
    conn: &mut sqlx::MySqlConnection,
    read_only: bool,
) -> Result<(), sqlx::Error> {
    if read_only {
        sqlx::query("SET SESSION TRANSACTION READ ONLY")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("SET time_zone = '+00:00'")
        .execute(conn)
        .await?;
    Ok(())
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::MaybeText(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Float(v) => query.bind(v),
                Arg::Time(v) => query.bind(v),
            };
        }
        query
    }};
}

impl Db {
    /// Connect to the database at `url` (a few connections; SQLite's file
    /// is created if missing, in WAL mode) and bring its schema to this
    /// build's version. A newer schema is refused ([`DbError::Newer`]).
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let (backend, url) = Backend::of_url(url)?;
        let wait = Duration::from_secs(5);
        let pool = match backend {
            Backend::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(wait)
                    .connect(&url)
                    .await?,
            ),
            Backend::MySql => Pool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(wait)
                    .after_connect(|conn, _| Box::pin(mysql_session(conn, false)))
                    .connect(&url)
                    .await?,
            ),
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(&url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(wait);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .acquire_timeout(wait)
                        .connect_with(options)
                        .await?,
                )
            }
        };
        let db = Db { backend, pool };
        db.migrate().await?;
        Ok(db)
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn migrator(&self) -> Migrator {
        let migrations = MIGRATIONS
            .iter()
            .map(|(version, what, postgres, mysql, sqlite)| {
                let sql = match self.backend {
                    Backend::Postgres => postgres,
                    Backend::MySql => mysql,
                    Backend::Sqlite => sqlite,
                };
                Migration::new(
                    *version,
                    Cow::Borrowed(what),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    false,
                )
            })
            .collect::<Vec<_>>();
        Migrator {
            migrations: Cow::Owned(migrations),
            ..Migrator::DEFAULT
        }
    }

    /// Run the migrations this database has not had.
    async fn migrate(&self) -> Result<(), DbError> {
        let migrator = self.migrator();
        let done = match &self.pool {
            Pool::Postgres(pool) => migrator.run(pool).await,
            Pool::MySql(pool) => migrator.run(pool).await,
            Pool::Sqlite(pool) => migrator.run(pool).await,
        };
        match done {
            Ok(()) => Ok(()),
            Err(MigrateError::VersionMissing(version)) => Err(DbError::Newer(version)),
            Err(MigrateError::Execute(err)) => Err(DbError::Sql(err)),
            Err(err) => Err(DbError::Migrate(err)),
        }
    }

    /// The instances archived whole, as (meeting, order).
    pub async fn archived_instances(
        &self,
    ) -> Result<std::collections::HashSet<(i64, i64)>, DbError> {
        const SQL: &str =
            "SELECT meeting_id, order_id FROM instances WHERE archived_at IS NOT NULL";
        let rows: Vec<(i64, i64)> = match &self.pool {
            Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
            Pool::MySql(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
            Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await?,
        };
        Ok(rows.into_iter().collect())
    }

    /// Which of `users` the archive holds a row of already.
    pub async fn users_known(
        &self,
        users: &[i64],
    ) -> Result<std::collections::HashSet<i64>, DbError> {
        let mut known = std::collections::HashSet::new();
        if let Pool::Postgres(pool) = &self.pool {
            let rows: Vec<(i64,)> =
                sqlx::query_as("SELECT user_id FROM users WHERE user_id = ANY($1)")
                    .bind(users)
                    .fetch_all(pool)
                    .await?;
            known.extend(rows.into_iter().map(|(u,)| u));
            return Ok(known);
        }
        for chunk in users.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT user_id FROM users WHERE user_id IN ({})",
                vec!["?"; chunk.len()].join(", ")
            );
            let rows: Vec<(i64,)> = match &self.pool {
                Pool::MySql(pool) => {
                    let mut query = sqlx::query_as(&sql);
                    for user in chunk {
                        query = query.bind(user);
                    }
                    query.fetch_all(pool).await?
                }
                Pool::Sqlite(pool) => {
                    let mut query = sqlx::query_as(&sql);
                    for user in chunk {
                        query = query.bind(user);
                    }
                    query.fetch_all(pool).await?
                }
                Pool::Postgres(_) => Vec::new(),
            };
            known.extend(rows.into_iter().map(|(u,)| u));
        }
        Ok(known)
    }

    /// Begin a transaction.
    pub async fn begin(&self) -> Result<Tx, DbError> {
        let inner = match &self.pool {
            Pool::Postgres(pool) => TxInner::Postgres(pool.begin().await?),
            Pool::MySql(pool) => TxInner::MySql(pool.begin().await?),
            Pool::Sqlite(pool) => TxInner::Sqlite(pool.begin().await?),
        };
        Ok(Tx {
            backend: self.backend,
            inner,
        })
    }

    /// Close the pool.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::MySql(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// How an insert treats a row whose key is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the row there (it was written from the same entry).
    Keep,
    /// Replace its other columns.
    Replace,
    /// Replace them if this row's `source_ms, source_seq` (its last two
    /// columns) come after the stored row's.
    Newer,
}

impl Tx {
    /// Run one statement (`?` placeholders); the rows it touched.
    pub async fn exec(&mut self, sql: &str, args: Vec<Arg>) -> Result<u64, DbError> {
        let done = match &mut self.inner {
            TxInner::Postgres(tx) => {
                let sql = numbered(sql);
                bind_all!(sqlx::query(&sql), args)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            TxInner::MySql(tx) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            TxInner::Sqlite(tx) => bind_all!(sqlx::query(sql), args)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        };
        Ok(done)
    }

    /// Insert `rows` (each as many values as `columns`) into `table`,
    /// whose key is `key`. Returns how many rows were given.
    ///
    /// PostgreSQL takes them in one statement whatever their number, a
    /// column each as an array (`INSERT ... SELECT * FROM UNNEST($1, ...)`,
    /// one prepared statement for every page of a table, a bound value per
    /// column rather than per value); MySQL and SQLite in multi-row
    /// `VALUES` of up to [`ROWS_PER_STATEMENT`] rows (and at most
    /// [`VALUES_PER_STATEMENT`] values). The conflict clause is the same
    /// either way, so writing again stays idempotent.
    pub async fn insert(
        &mut self,
        table: &str,
        columns: &[&str],
        key: &[&str],
        rows: Vec<Vec<Arg>>,
        on_conflict: OnConflict,
    ) -> Result<u64, DbError> {
        let given = rows.len() as u64;
        if rows.is_empty() {
            return Ok(0);
        }
        if let TxInner::Postgres(tx) = &mut self.inner {
            let arrays = Arrays::of_rows(columns.len(), rows)?;
            let types = arrays.types();
            if on_conflict != OnConflict::Keep {
                let sql = unnest_sql(table, columns, key, &types, Some(on_conflict));
                arrays.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
                return Ok(given);
            }
            // Rows that are there already are rare (a page written again
            // after a failure), and a plain INSERT costs PostgreSQL about a
            // quarter less than one ON CONFLICT DO NOTHING (its speculative
            // insertion): try it first, behind a savepoint, and only when a
            // row is there already, insert the page again skipping those.
            sqlx::query("SAVEPOINT archive_rows")
                .execute(&mut **tx)
                .await?;
            let plain = unnest_sql(table, columns, key, &types, None);
            let kept = arrays.clone();
            match arrays.bind(sqlx::query(&plain)).execute(&mut **tx).await {
                Ok(_) => {
                    sqlx::query("RELEASE SAVEPOINT archive_rows")
                        .execute(&mut **tx)
                        .await?;
                }
                Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
                    sqlx::query("ROLLBACK TO SAVEPOINT archive_rows")
                        .execute(&mut **tx)
                        .await?;
                    let sql = unnest_sql(table, columns, key, &types, Some(OnConflict::Keep));
                    kept.bind(sqlx::query(&sql)).execute(&mut **tx).await?;
                }
                Err(err) => return Err(err.into()),
            }
            return Ok(given);
        }
        let per_statement = (VALUES_PER_STATEMENT / columns.len()).clamp(1, ROWS_PER_STATEMENT);
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per_statement).collect();
            let sql = insert_sql(self.backend, table, columns, key, chunk.len(), on_conflict);
            self.exec(&sql, chunk.into_iter().flatten().collect())
                .await?;
        }
        Ok(given)
    }

    /// Set the POST keys of messages of instance (`meeting`, `order`),
    /// each named by its stream id (`ms`, `seq`), in one statement
    /// (PostgreSQL: arrays; MySQL: a join with the values; SQLite:
    /// `UPDATE ... FROM (VALUES ...)`), chunked as inserts are.
    pub async fn set_post_ids(
        &mut self,
        meeting: i64,
        order: i64,
        keys: Vec<(i64, i64, String)>,
    ) -> Result<(), DbError> {
        if keys.is_empty() {
            return Ok(());
        }
        if let TxInner::Postgres(tx) = &mut self.inner {
            let (mut ms, mut seq, mut key) = (Vec::new(), Vec::new(), Vec::new());
            for (m, s, k) in keys {
                ms.push(m);
                seq.push(s);
                key.push(k);
            }
            sqlx::query(
                "UPDATE messages SET post_id = v.k \
                 FROM UNNEST($3::bigint[], $4::bigint[], $5::text[]) AS v(ms, seq, k) \
                 WHERE meeting_id = $1 AND order_id = $2 AND entry_ms = v.ms AND entry_seq = v.seq",
            )
            .bind(meeting)
            .bind(order)
            .bind(ms)
            .bind(seq)
            .bind(key)
            .execute(&mut **tx)
            .await?;
            return Ok(());
        }
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            let chunk: Vec<(i64, i64, String)> =
                keys.by_ref().take(VALUES_PER_STATEMENT / 3).collect();
            let sql = post_ids_sql(self.backend, chunk.len());
            let mut args = Vec::with_capacity(3 * chunk.len() + 2);
            for (ms, seq, key) in chunk {
                args.extend([Arg::Int(ms), Arg::Int(seq), Arg::Text(key)]);
            }
            args.extend([Arg::Int(meeting), Arg::Int(order)]);
            self.exec(&sql, args).await?;
        }
        Ok(())
    }

    /// Commit.
    pub async fn commit(self) -> Result<(), DbError> {
        match self.inner {
            TxInner::Postgres(tx) => tx.commit().await?,
            TxInner::MySql(tx) => tx.commit().await?,
            TxInner::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// Most rows in one multi-row `INSERT ... VALUES` (MySQL, SQLite): a
/// page of events or messages in one statement.
pub const ROWS_PER_STATEMENT: usize = 1000;

/// Most values bound to one statement (MySQL allows 65,535, SQLite
/// 32,766).
pub const VALUES_PER_STATEMENT: usize = 16_000;

/// The PostgreSQL array type a column's values are bound as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayType {
    Int,
    Text,
    Bool,
    Float,
    Time,
}

impl ArrayType {
    fn sql(self) -> &'static str {
        match self {
            ArrayType::Int => "bigint[]",
            ArrayType::Text => "text[]",
            ArrayType::Bool => "boolean[]",
            ArrayType::Float => "float8[]",
            ArrayType::Time => "timestamptz[]",
        }
    }
}

/// Rows turned into one array per column, for PostgreSQL's UNNEST.
#[derive(Clone)]
enum Array {
    Int(Vec<i64>),
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
    Float(Vec<f64>),
    Time(Vec<Option<DateTime<Utc>>>),
}

#[derive(Clone)]
struct Arrays(Vec<Array>);

impl Arrays {
    /// `rows` of `width` values each, column by column; a column takes
    /// the type of its first row's value (Text and MaybeText are one).
    fn of_rows(width: usize, rows: Vec<Vec<Arg>>) -> Result<Arrays, DbError> {
        let count = rows.len();
        let mut arrays: Vec<Array> = match rows.first() {
            Some(first) if first.len() == width => first
                .iter()
                .map(|arg| match arg {
                    Arg::Int(_) => Array::Int(Vec::with_capacity(count)),
                    Arg::Text(_) | Arg::MaybeText(_) => Array::Text(Vec::with_capacity(count)),
                    Arg::Bool(_) => Array::Bool(Vec::with_capacity(count)),
                    Arg::Float(_) => Array::Float(Vec::with_capacity(count)),
                    Arg::Time(_) => Array::Time(Vec::with_capacity(count)),
                })
                .collect(),
            _ => return Err(DbError::Rows(format!("a row of other than {width} values"))),
        };
        for row in rows {
            if row.len() != width {
                return Err(DbError::Rows(format!("a row of other than {width} values")));
            }
            for (array, arg) in arrays.iter_mut().zip(row) {
                match (array, arg) {
                    (Array::Int(a), Arg::Int(v)) => a.push(v),
                    (Array::Text(a), Arg::Text(v)) => a.push(Some(v)),
                    (Array::Text(a), Arg::MaybeText(v)) => a.push(v),
                    (Array::Bool(a), Arg::Bool(v)) => a.push(v),
                    (Array::Float(a), Arg::Float(v)) => a.push(v),
                    (Array::Time(a), Arg::Time(v)) => a.push(v),
                    (_, arg) => {
                        return Err(DbError::Rows(format!("a column of mixed types ({arg:?})")));
                    }
                }
            }
        }
        Ok(Arrays(arrays))
    }

    fn types(&self) -> Vec<ArrayType> {
        self.0
            .iter()
            .map(|array| match array {
                Array::Int(_) => ArrayType::Int,
                Array::Text(_) => ArrayType::Text,
                Array::Bool(_) => ArrayType::Bool,
                Array::Float(_) => ArrayType::Float,
                Array::Time(_) => ArrayType::Time,
            })
            .collect()
    }

    fn bind<'q>(
        self,
        mut query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        for array in self.0 {
            query = match array {
                Array::Int(v) => query.bind(v),
                Array::Text(v) => query.bind(v),
                Array::Bool(v) => query.bind(v),
                Array::Float(v) => query.bind(v),
                Array::Time(v) => query.bind(v),
            };
        }
        query
    }
}

/// PostgreSQL's INSERT of a column per array parameter into `table`, with
/// `on_conflict` (as [`insert_sql`] spells it; `None`: a plain INSERT).
fn unnest_sql(
    table: &str,
    columns: &[&str],
    key: &[&str],
    types: &[ArrayType],
    on_conflict: Option<OnConflict>,
) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{}", i + 1, t.sql()))
        .collect();
    let mut sql = format!(
        "INSERT INTO {table} ({}) SELECT * FROM UNNEST({})",
        columns.join(", "),
        arrays.join(", ")
    );
    if let Some(on_conflict) = on_conflict {
        sql.push_str(&conflict_sql(
            Backend::Postgres,
            table,
            columns,
            key,
            on_conflict,
        ));
    }
    sql
}

/// The UPDATE of `count` messages' POST keys (`?` placeholders, MySQL's
/// or SQLite's): (ms, seq, key) per message, then meeting and order.
fn post_ids_sql(backend: Backend, count: usize) -> String {
    match backend {
        Backend::MySql => {
            let first = "SELECT ? AS ms, ? AS seq, ? AS k";
            let rest = vec![" UNION ALL SELECT ?, ?, ?"; count.saturating_sub(1)].concat();
            format!(
                "UPDATE messages m JOIN ({first}{rest}) v ON m.entry_ms = v.ms AND m.entry_seq = v.seq \
                 SET m.post_id = v.k WHERE m.meeting_id = ? AND m.order_id = ?"
            )
        }
        Backend::Sqlite | Backend::Postgres => {
            let values = vec!["(?, ?, ?)"; count].join(", ");
            format!(
                "UPDATE messages SET post_id = v.column3 FROM (VALUES {values}) AS v \
                 WHERE messages.meeting_id = ? AND messages.order_id = ? \
                 AND messages.entry_ms = v.column1 AND messages.entry_seq = v.column2"
            )
        }
    }
}

/// The INSERT of `count` rows into `table` with `on_conflict` (`?`
/// placeholders; the version columns of [`OnConflict::Newer`] are the last
/// two, `source_ms, source_seq`).
fn insert_sql(
    backend: Backend,
    table: &str,
    columns: &[&str],
    key: &[&str],
    count: usize,
    on_conflict: OnConflict,
) -> String {
    let row = format!("({})", vec!["?"; columns.len()].join(", "));
    let mut sql = format!(
        "INSERT INTO {table} ({}) VALUES {}",
        columns.join(", "),
        vec![row; count].join(", ")
    );
    sql.push_str(&conflict_sql(backend, table, columns, key, on_conflict));
    sql
}

/// An INSERT's conflict clause: what a row whose `key` is there already
/// does (see [`OnConflict`]).
fn conflict_sql(
    backend: Backend,
    table: &str,
    columns: &[&str],
    key: &[&str],
    on_conflict: OnConflict,
) -> String {
    let mut sql = String::new();
    let others: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !key.contains(c))
        .collect();
    match backend {
        Backend::Postgres | Backend::Sqlite => {
            sql.push_str(&format!(" ON CONFLICT ({}) ", key.join(", ")));
            match on_conflict {
                OnConflict::Keep => sql.push_str("DO NOTHING"),
                OnConflict::Replace | OnConflict::Newer => {
                    let set: Vec<String> = others
                        .iter()
                        .map(|c| format!("{c} = excluded.{c}"))
                        .collect();
                    sql.push_str(&format!("DO UPDATE SET {}", set.join(", ")));
                    if on_conflict == OnConflict::Newer {
                        sql.push_str(&format!(
                            " WHERE ({table}.source_ms, {table}.source_seq) < (excluded.source_ms, excluded.source_seq)"
                        ));
                    }
                }
            }
        }
        Backend::MySql => {
            let set: Vec<String> = match on_conflict {
                OnConflict::Keep => vec![format!("{0} = {0}", key[0])],
                OnConflict::Replace => others
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect(),
                OnConflict::Newer => {
                    // assignments run left to right: the version last,
                    // its seq before its ms, so every test sees the old ms
                    let newer = "(source_ms, source_seq) < (VALUES(source_ms), VALUES(source_seq))";
                    others
                        .iter()
                        .filter(|c| !c.starts_with("source_"))
                        .chain(["source_seq", "source_ms"].iter())
                        .map(|c| format!("{c} = IF({newer}, VALUES({c}), {c})"))
                        .collect()
                }
            };
            sql.push_str(&format!(" ON DUPLICATE KEY UPDATE {}", set.join(", ")));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(
            Backend::of_url("postgres://u@localhost/db")
                .ok()
                .map(|b| b.0),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::of_url("mariadb://root@localhost/a?socket=/x")
                .ok()
                .map(|b| b.1),
            Some("mysql://root@localhost/a?socket=/x".to_string())
        );
        assert_eq!(
            Backend::of_url("sqlite:///var/lib/a.db").ok().map(|b| b.0),
            Some(Backend::Sqlite)
        );
        for bad in ["", "sqlite://", "redis://x", "/tmp/a.db"] {
            assert!(Backend::of_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("(?, ?), (?)"), "($1, $2), ($3)");
    }

    #[test]
    fn a_newer_upsert_on_mysql_compares_the_old_version_in_every_assignment() {
        let sql = insert_sql(
            Backend::MySql,
            "meetings",
            &["meeting_id", "title", "source_ms", "source_seq"],
            &["meeting_id"],
            1,
            OnConflict::Newer,
        );
        let set = sql.split(" ON DUPLICATE KEY UPDATE ").nth(1).unwrap_or("");
        let order: Vec<&str> = set
            .split(", title = ")
            .next()
            .into_iter()
            .chain(["title"])
            .collect();
        assert!(order[0].starts_with("title = IF("), "{sql}");
        assert!(
            set.find("source_seq = IF(") < set.find("source_ms = IF("),
            "{sql}"
        );
        let pg = insert_sql(
            Backend::Postgres,
            "meetings",
            &["meeting_id", "title", "source_ms", "source_seq"],
            &["meeting_id"],
            2,
            OnConflict::Newer,
        );
        assert!(pg.contains("VALUES (?, ?, ?, ?), (?, ?, ?, ?)"), "{pg}");
        assert!(
            pg.ends_with("< (excluded.source_ms, excluded.source_seq)"),
            "{pg}"
        );
    }
}
