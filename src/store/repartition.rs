//! `meetingd repartition`: the data moved from its recorded partition count
//! P to another, N, so that it spreads over more (or fewer) masters.
//!
//! A meeting's keys are named after its partition (`meetingd:{p<M mod
//! P>}:...`), so a meeting whose partition changes gets every key copied
//! under the new tag, its entries of the due and active indexes copied to
//! the new partition's, and then the old ones deleted, the meeting's own
//! hash last. Keys of different tags may live on different masters, so the
//! copy is done by the client, a page at a time (at most 500 members or
//! entries per command): no call holds Redis for long, however big a key.
//!
//! Interrupted, it is run again and goes on: a meeting whose old hash is
//! still there is copied again (the copies overwrite, a stream goes on
//! after its last entry) and its old keys deleted; one whose old hash is
//! gone is done. A lock (`meetingd:{layout}:repartition`, "P N") says a
//! repartition is under way: daemons refuse to start until it is over, and
//! it refuses to run while a daemon serves the data (each daemon keeps
//! itself in `meetingd:{layout}:serving`, a sorted set of daemons scored by
//! when their entry lapses unless renewed, and leaves it when it stops).
//! At the end the listings' indexes are built again for N and the layout
//! key says N. An operator tool, not a request path:
//! it SCANs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use redis::Value;

use super::{Keys, Store, StoreError, reply};

/// The key that says a repartition is under way: "P N".
pub fn lock_key() -> String {
    "meetingd:{layout}:repartition".to_string()
}

/// The daemons serving this data: a sorted set of their names, scored by
/// when (ms) the entry lapses unless renewed.
pub fn serving_key() -> String {
    "meetingd:{layout}:serving".to_string()
}

/// How long a daemon's entry in `serving` lives unless renewed.
pub const SERVING_TTL: Duration = Duration::from_secs(15);

/// Members, fields or entries per command of a copy.
const PAGE: usize = 500;

/// What a repartition did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repartitioned {
    /// The partition count before.
    pub from: u64,
    /// The partition count after.
    pub to: u64,
    /// Meetings stored.
    pub meetings: u64,
    /// Meetings whose keys moved in this run.
    pub moved: u64,
    /// Keys copied in this run.
    pub keys: u64,
    /// Whether every meeting is in place and the layout says `to`.
    pub done: bool,
}

/// A meeting key of the layout: its partition tag and meeting id.
fn meeting_of(key: &str) -> Option<(u64, u64)> {
    let rest = key.strip_prefix("meetingd:{p")?;
    let (tag, rest) = rest.split_once("}:meeting:")?;
    Some((tag.parse().ok()?, rest.parse().ok()?))
}

/// `key` under the tag of partition `to` instead of `from`.
fn retagged(key: &str, from: u64, to: u64) -> String {
    key.replacen(&format!("{{p{from}}}"), &format!("{{p{to}}}"), 1)
}

impl Store {
    /// A plain command, its reply.
    async fn command(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Say that the daemon `who` serves this data, for `SERVING_TTL`.
    pub async fn renew_serving(&self, who: &str) -> Result<(), StoreError> {
        let now = self.now();
        self.command(
            redis::cmd("ZADD")
                .arg(serving_key())
                .arg(now + SERVING_TTL.as_millis() as i64)
                .arg(who),
        )
        .await?;
        // entries of daemons that stopped without leaving
        self.command(
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(serving_key())
                .arg("-inf")
                .arg(now),
        )
        .await?;
        Ok(())
    }

    /// Start serving this data as the daemon `who`: enter it in the list
    /// of serving daemons, then make sure no repartition is under way (a
    /// repartition sets its lock, then reads that list: whichever comes
    /// second sees the other).
    pub async fn start_serving(&self, who: &str) -> Result<(), StoreError> {
        self.renew_serving(who).await?;
        if let Some(under_way) = self.repartition_under_way().await? {
            self.stop_serving(who).await?;
            return Err(under_way_error(&under_way));
        }
        Ok(())
    }

    /// Say that the daemon `who` no longer serves this data.
    pub async fn stop_serving(&self, who: &str) -> Result<(), StoreError> {
        self.command(redis::cmd("ZREM").arg(serving_key()).arg(who))
            .await?;
        Ok(())
    }

    /// The daemons whose entries in the serving list have not lapsed.
    async fn serving(&self) -> Result<Vec<String>, StoreError> {
        let serving = self
            .command(
                redis::cmd("ZRANGE")
                    .arg(serving_key())
                    .arg(self.now())
                    .arg("+inf")
                    .arg("BYSCORE"),
            )
            .await?;
        reply::array("ZRANGE", serving)?
            .into_iter()
            .map(|who| reply::text("ZRANGE", who))
            .collect()
    }

    /// A repartition under way, if any: "P N".
    pub async fn repartition_under_way(&self) -> Result<Option<String>, StoreError> {
        match self.command(redis::cmd("GET").arg(lock_key())).await? {
            Value::Nil => Ok(None),
            other => Ok(Some(reply::text("GET", other)?)),
        }
    }

    /// Move the data to `to` partitions (see the module). `progress` is
    /// told (meetings done, meetings to move) as it goes; `limit` stops
    /// after that many meetings (the next run goes on).
    pub async fn repartition(
        &self,
        to: u64,
        limit: Option<u64>,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Repartitioned, StoreError> {
        // a run that was stopped goes on from where the lock says it began
        // (the layout key may already say `to` if it stopped at the end)
        let under_way = self.repartition_under_way().await?;
        let resumed = under_way.is_some();
        let from = match under_way {
            Some(under_way) => {
                let (from, ongoing_to) = parse_lock(&under_way)?;
                if ongoing_to != to {
                    return Err(StoreError::Incompatible(format!(
                        "a repartition from {from} to {ongoing_to} partitions is under way: \
                         finish it first (meetingd repartition --partitions {ongoing_to})"
                    )));
                }
                from
            }
            None => {
                let recorded = self.command(redis::cmd("GET").arg(Keys::layout())).await?;
                let from = match recorded {
                    Value::Nil => {
                        return Err(StoreError::Incompatible(
                            "no partition count is recorded here (meetingd:{layout}:partitions): \
                             a daemon records it when it first starts; nothing to move"
                                .into(),
                        ));
                    }
                    other => u64::try_from(reply::int("GET", other)?)
                        .map_err(|_| StoreError::Internal("a negative partition count".into()))?,
                };
                if from == to {
                    return Ok(Repartitioned {
                        from,
                        to,
                        done: true,
                        ..Default::default()
                    });
                }
                from
            }
        };
        let lock = format!("{from} {to}");
        // an outbox entry names its meeting by id and waits in its old
        // partition's outbox, which may not exist after: archive first
        if !resumed {
            for partition in 0..from {
                let waiting = self
                    .command(redis::cmd("XLEN").arg(Keys::outbox(partition)))
                    .await?;
                if reply::int("XLEN", waiting)? > 0 {
                    return Err(StoreError::Incompatible(format!(
                        "{} holds entries not yet archived: run a daemon with the archive \
                         until STATS shows archive.waiting 0, stop it, then run this again",
                        Keys::outbox(partition)
                    )));
                }
            }
        }
        let serving = self.serving().await?;
        if !serving.is_empty() {
            return Err(StoreError::Incompatible(format!(
                "daemons serve this data ({}): stop every meetingd on it first (an entry \
                 lapses {} s after its daemon was killed), then run this again",
                serving.join(", "),
                SERVING_TTL.as_secs()
            )));
        }
        self.command(redis::cmd("SET").arg(lock_key()).arg(&lock))
            .await?;
        // a daemon that entered the list since is refused by the lock or
        // seen here
        if let Some(who) = self.serving().await?.first() {
            if !resumed {
                self.command(redis::cmd("DEL").arg(lock_key())).await?;
            }
            return Err(StoreError::Incompatible(format!(
                "the daemon {who} started serving this data: stop it, then run this again"
            )));
        }

        // every key, grouped by the meeting whose keys they are
        let all = self.all_keys().await?;
        // a meeting a stopped run copied has its hash under both tags
        let mut meetings: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for key in &all {
            if let Some((tag, meeting)) = meeting_of(key) {
                meetings.entry(meeting).or_default().insert(tag);
            }
        }
        let mut to_move: Vec<(u64, u64)> = Vec::new();
        for (meeting, tags) in &meetings {
            for tag in tags {
                if *tag == meeting % to {
                    continue;
                }
                if *tag != meeting % from {
                    return Err(StoreError::Internal(format!(
                        "meeting {meeting} is under {{p{tag}}}, neither its partition of {from} \
                         ({}) nor of {to} ({}): run meetingd check",
                        meeting % from,
                        meeting % to
                    )));
                }
                to_move.push((*meeting, *tag));
            }
        }
        let mut report = Repartitioned {
            from,
            to,
            meetings: meetings.len() as u64,
            ..Default::default()
        };
        for (done, (meeting, tag)) in to_move.iter().enumerate() {
            if limit.is_some_and(|limit| report.moved >= limit) {
                return Ok(report);
            }
            report.keys += self
                .move_meeting(&all, *meeting, *tag, meeting % to)
                .await?;
            report.moved += 1;
            progress(done as u64 + 1, to_move.len() as u64);
        }
        // the wake streams of the old partitions serve no reader now, and
        // their logs of transitions name instances by their old partition
        // (a WATCH ACTIVE starts after what runs, so none reads them back)
        for partition in 0..from {
            self.command(
                redis::cmd("UNLINK")
                    .arg(Keys::wake(partition))
                    .arg(Keys::transitions(partition)),
            )
            .await?;
        }
        // the listings' indexes, for the new count
        self.rebuild_indexes(&all, from, to).await?;
        // and the (empty) outboxes of partitions that are no more; a new
        // partition gets its outbox from the next daemon that archives
        for partition in to..from {
            self.command(redis::cmd("UNLINK").arg(Keys::outbox(partition)))
                .await?;
        }
        self.command(redis::cmd("SET").arg(Keys::layout()).arg(to.to_string()))
            .await?;
        self.command(redis::cmd("DEL").arg(lock_key())).await?;
        report.done = true;
        Ok(report)
    }

    /// Move one meeting's keys and index entries from partition `old` to
    /// `new`: copy, then delete the old, its hash last. The keys copied.
    async fn move_meeting(
        &self,
        all: &BTreeSet<String>,
        meeting: u64,
        old: u64,
        new: u64,
    ) -> Result<u64, StoreError> {
        let base = format!("meetingd:{{p{old}}}:");
        let meeting_key = format!("{base}meeting:{meeting}");
        // the meeting's keys: by meeting id, or by instance (M/O)
        let owned: Vec<&String> = all
            .iter()
            .filter(|key| {
                let Some(rest) = key.strip_prefix(&base) else {
                    return false;
                };
                let Some((kind, tail)) = rest.split_once(':') else {
                    return false;
                };
                match kind {
                    "meeting" | "audience" | "orders" | "schedule" | "upcoming" => {
                        tail == meeting.to_string()
                    }
                    "present" | "events" | "chat" | "posted" => tail
                        .split_once('/')
                        .is_some_and(|(m, _)| m == meeting.to_string()),
                    _ => false,
                }
            })
            .collect();
        for key in &owned {
            self.copy_key(key, &retagged(key, old, new)).await?;
        }
        // the index entries of its instances
        let orders = self
            .command(
                redis::cmd("ZRANGE")
                    .arg(format!("{base}orders:{meeting}"))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        let orders: Vec<String> = reply::array("ZRANGE", orders)?
            .into_iter()
            .map(|o| reply::text("ZRANGE", o))
            .collect::<Result<_, _>>()?;
        for index in ["due", "active"] {
            let (from_index, to_index) = (
                format!("{base}{index}"),
                format!("meetingd:{{p{new}}}:{index}"),
            );
            for order in &orders {
                let member = format!("{meeting}/{order}");
                let score = self
                    .command(redis::cmd("ZSCORE").arg(&from_index).arg(&member))
                    .await?;
                if score != Value::Nil {
                    let score = reply::int("ZSCORE", score)?;
                    self.command(redis::cmd("ZADD").arg(&to_index).arg(score).arg(&member))
                        .await?;
                }
            }
        }
        // then the old: index entries, keys, the meeting's hash last (while
        // it is there, a run that was stopped moves the meeting again)
        for index in ["due", "active"] {
            for order in &orders {
                self.command(
                    redis::cmd("ZREM")
                        .arg(format!("{base}{index}"))
                        .arg(format!("{meeting}/{order}")),
                )
                .await?;
            }
        }
        for key in owned.iter().filter(|key| ***key != meeting_key) {
            self.command(redis::cmd("UNLINK").arg(key.as_str())).await?;
        }
        self.command(redis::cmd("UNLINK").arg(&meeting_key)).await?;
        Ok(owned.len() as u64)
    }

    /// Copy key `from` to `to` a page at a time, whatever its type (an
    /// existing `to` is overwritten field by field, or a stream continued
    /// after its last entry), with its expiry.
    async fn copy_key(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let kind = reply::text("TYPE", self.command(redis::cmd("TYPE").arg(from)).await?)?;
        match kind.as_str() {
            "none" => return Ok(()),
            "hash" => {
                let mut cursor = "0".to_string();
                loop {
                    let value = self
                        .command(
                            redis::cmd("HSCAN")
                                .arg(from)
                                .arg(&cursor)
                                .arg("COUNT")
                                .arg(PAGE),
                        )
                        .await?;
                    let mut parts = reply::array("HSCAN", value)?.into_iter();
                    cursor = reply::text("HSCAN", parts.next().unwrap_or_default())?;
                    let pairs = reply::array("HSCAN", parts.next().unwrap_or_default())?;
                    if !pairs.is_empty() {
                        let mut cmd = redis::cmd("HSET");
                        cmd.arg(to);
                        for value in pairs {
                            cmd.arg(bytes(value)?);
                        }
                        self.command(&cmd).await?;
                    }
                    if cursor == "0" {
                        break;
                    }
                }
            }
            "zset" => {
                let mut start = 0usize;
                loop {
                    let value = self
                        .command(
                            redis::cmd("ZRANGE")
                                .arg(from)
                                .arg(start)
                                .arg(start + PAGE - 1)
                                .arg("WITHSCORES"),
                        )
                        .await?;
                    // RESP3: [member, score] pairs; RESP2: a flat list
                    let flat: Vec<Value> = reply::array("ZRANGE", value)?
                        .into_iter()
                        .flat_map(|item| match item {
                            Value::Array(pair) => pair,
                            other => vec![other],
                        })
                        .collect();
                    let members = flat.len() / 2;
                    if members > 0 {
                        let mut cmd = redis::cmd("ZADD");
                        cmd.arg(to);
                        let mut items = flat.into_iter();
                        while let (Some(member), Some(score)) = (items.next(), items.next()) {
                            let score = match score {
                                Value::Double(d) => d,
                                other => reply::text("ZRANGE", other)?
                                    .parse()
                                    .map_err(|_| StoreError::Internal("a score".into()))?,
                            };
                            cmd.arg(score).arg(bytes(member)?);
                        }
                        self.command(&cmd).await?;
                    }
                    if members < PAGE {
                        break;
                    }
                    start += PAGE;
                }
            }
            "stream" => {
                // go on after what a stopped run copied already
                let last = self
                    .command(
                        redis::cmd("XREVRANGE")
                            .arg(to)
                            .arg("+")
                            .arg("-")
                            .arg("COUNT")
                            .arg(1),
                    )
                    .await?;
                let mut after = match reply::array("XREVRANGE", last)?.into_iter().next() {
                    Some(entry) => Some(reply::entry("XREVRANGE", entry)?.0),
                    None => None,
                };
                loop {
                    let start = after
                        .as_ref()
                        .map_or("-".to_string(), |id| format!("({id}"));
                    let value = self
                        .command(
                            redis::cmd("XRANGE")
                                .arg(from)
                                .arg(&start)
                                .arg("+")
                                .arg("COUNT")
                                .arg(PAGE),
                        )
                        .await?;
                    let entries = reply::array("XRANGE", value)?;
                    let count = entries.len();
                    // the page's entries in one pipeline (one slot, in order)
                    let mut pipe = redis::pipe();
                    for entry in entries {
                        let mut parts = reply::array("XRANGE", entry)?.into_iter();
                        let id = reply::text("XRANGE", parts.next().unwrap_or_default())?;
                        let xadd = pipe.cmd("XADD").arg(to).arg(&id);
                        for value in reply::array("XRANGE", parts.next().unwrap_or_default())? {
                            xadd.arg(bytes(value)?);
                        }
                        pipe.ignore();
                        after = Some(id);
                    }
                    if count > 0 {
                        let mut conn = self.conn.clone();
                        let () = pipe.query_async(&mut conn).await?;
                    }
                    if count < PAGE {
                        break;
                    }
                }
            }
            "string" => {
                let value = self.command(redis::cmd("GET").arg(from)).await?;
                self.command(redis::cmd("SET").arg(to).arg(bytes(value)?))
                    .await?;
            }
            other => {
                return Err(StoreError::Internal(format!(
                    "{from} is a {other}, which no key of meetingd's layout is"
                )));
            }
        }
        let expires = reply::int(
            "PEXPIRETIME",
            self.command(redis::cmd("PEXPIRETIME").arg(from)).await?,
        )?;
        if expires > 0 {
            self.command(redis::cmd("PEXPIREAT").arg(to).arg(expires))
                .await?;
        }
        Ok(())
    }
}

/// Why a daemon may not serve while the repartition `under_way` ("P N")
/// is.
pub(super) fn under_way_error(under_way: &str) -> StoreError {
    let to = under_way.split(' ').nth(1).unwrap_or("?");
    StoreError::Incompatible(format!(
        "a repartition of this data (partitions \"{under_way}\": from, to) is under way: let \
         it finish (meetingd repartition --partitions {to}), then start with \
         redis.partitions = {to} (or unset)"
    ))
}

/// The two partition counts of a lock: "P N".
fn parse_lock(lock: &str) -> Result<(u64, u64), StoreError> {
    let counts = lock
        .split_once(' ')
        .and_then(|(from, to)| Some((from.parse().ok()?, to.parse().ok()?)));
    counts.ok_or_else(|| {
        StoreError::Internal(format!(
            "{} holds {lock:?}, not \"<from> <to>\": run meetingd check",
            lock_key()
        ))
    })
}

/// The bytes of a string-like value, to send back as an argument.
fn bytes(value: Value) -> Result<Vec<u8>, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(bytes),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(StoreError::Internal(format!(
            "expected a string, got {other:?}"
        ))),
    }
}
