//! `meetingd check`: a read-only consistency check over everything stored.
//!
//! An operator tool, not a request path: it walks the keyspace with SCAN
//! (on a Redis Cluster, every master's, each over a plain connection to it)
//! and reads every structure in small steps (pages of at most 1000), so
//! Redis is never held long. It verifies, for every instance, that its
//! participants are exactly the users whose last event is a join, that no
//! user has two joins or two leaves in a row, that the active and due
//! indexes and its meeting's `live` field agree with its state; that a
//! meeting's upcoming index holds exactly its scheduled instances at their
//! `from`, and that its `preempt` is no later than the first `from` of a
//! scheduled instance that would pre-empt the running one; that the
//! listings' indexes name every meeting and user and nothing else; that every
//! key is under the tag of its partition (meeting mod P); and that no key
//! belongs to nothing.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;
use redis::aio::ConnectionLike;

use super::reply::{self, EntryFields};
use super::types::{InstanceId, InstanceState, MAX_TIME};
use super::{Keys, Store, StoreError};

/// What a key of the layout is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    User(u64),
    Due(u64),
    Active(u64),
    /// The partition's wake stream (left by 0.2's WATCH readers).
    Wake(u64),
    /// The partition's outbox (the archiver's).
    Outbox(u64),
    /// The partition's log of starts and ends (WATCH ACTIVE's).
    Transitions(u64),
    Meeting(u64),
    Audience(u64),
    Orders(u64),
    Schedule(u64),
    /// A meeting's scheduled instances by `from`.
    Upcoming(u64),
    Present(InstanceId),
    Events(InstanceId),
    Chat(InstanceId),
    ChatBy(InstanceId, u64),
    Posted(InstanceId),
    /// The number of partitions the data was laid out with.
    Layout,
    /// The daemons serving the data.
    Serving,
    /// A repartition under way.
    Repartition,
    /// The listings' indexes hold everything stored.
    Indexed,
    /// The partition's meeting index (MEETINGS).
    MeetingIndex(u64),
    /// The partition's user index (USERS).
    UserIndex(u64),
    Unknown,
}

fn kind(key: &str) -> Kind {
    let Some(rest) = key.strip_prefix("meetingd:{") else {
        return Kind::Unknown;
    };
    let Some((tag, rest)) = rest.split_once("}:") else {
        return Kind::Unknown;
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let id = |s: &str| s.parse::<u64>().ok();
    let instance = |s: &str| s.parse::<InstanceId>().ok();
    let tagged = |prefix: char| tag.strip_prefix(prefix).and_then(id);
    match (parts.as_slice(), tag.chars().next()) {
        (["partitions"], _) if tag == "layout" => Kind::Layout,
        (["serving"], _) if tag == "layout" => Kind::Serving,
        (["repartition"], _) if tag == "layout" => Kind::Repartition,
        (["indexed"], _) if tag == "layout" => Kind::Indexed,
        (["meetings"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::MeetingIndex),
        (["users"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::UserIndex),
        (["user"], Some('u')) => tagged('u').map_or(Kind::Unknown, Kind::User),
        (["due"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::Due),
        (["active"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::Active),
        (["wake"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::Wake),
        (["outbox"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::Outbox),
        (["transitions"], Some('p')) => tagged('p').map_or(Kind::Unknown, Kind::Transitions),
        (["meeting", m], _) => id(m).map_or(Kind::Unknown, Kind::Meeting),
        (["audience", m], _) => id(m).map_or(Kind::Unknown, Kind::Audience),
        (["orders", m], _) => id(m).map_or(Kind::Unknown, Kind::Orders),
        (["schedule", m], _) => id(m).map_or(Kind::Unknown, Kind::Schedule),
        (["upcoming", m], _) => id(m).map_or(Kind::Unknown, Kind::Upcoming),
        (["present", i], _) => instance(i).map_or(Kind::Unknown, Kind::Present),
        (["events", i], _) => instance(i).map_or(Kind::Unknown, Kind::Events),
        (["chat", i], _) => instance(i).map_or(Kind::Unknown, Kind::Chat),
        (["chat", i, "by", u], _) => match (instance(i), id(u)) {
            (Some(i), Some(u)) => Kind::ChatBy(i, u),
            _ => Kind::Unknown,
        },
        (["posted", i], _) => instance(i).map_or(Kind::Unknown, Kind::Posted),
        _ => Kind::Unknown,
    }
}

impl Kind {
    /// The meeting whose partition the key must be in, if it is one of a
    /// meeting's keys.
    fn meeting(&self) -> Option<u64> {
        match self {
            Kind::Meeting(m)
            | Kind::Audience(m)
            | Kind::Orders(m)
            | Kind::Schedule(m)
            | Kind::Upcoming(m) => Some(*m),
            Kind::Present(i)
            | Kind::Events(i)
            | Kind::Chat(i)
            | Kind::ChatBy(i, _)
            | Kind::Posted(i) => Some(i.meeting),
            _ => None,
        }
    }
}

/// The partition a `{p<n>}` key's tag names (`None`: not such a tag, or
/// `{p01}`-like digits that name none).
fn tag_partition(key: &str) -> Option<u64> {
    let digits = key.strip_prefix("meetingd:{p")?.split_once('}')?.0;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// An instance as its schedule entry says.
struct Entry {
    from: i64,
    to: i64,
    state: InstanceState,
}

impl Store {
    async fn raw(&self, cmd: &redis::Cmd) -> Result<Value, StoreError> {
        let mut conn = self.conn.clone();
        Ok(cmd.query_async(&mut conn).await?)
    }

    /// Every key of the layout, by SCAN in small steps: of the one Redis,
    /// or of every master of a cluster, each over a plain connection (a
    /// SCAN sees the keys of the node it is sent to only).
    pub(super) async fn all_keys(&self) -> Result<BTreeSet<String>, StoreError> {
        if !self.conn.is_cluster() {
            let mut conn = self.conn.clone();
            return scan(&mut conn).await;
        }
        let mut keys = BTreeSet::new();
        for mut conn in self.conn.live_masters("checked").await? {
            keys.extend(scan(&mut conn).await?);
        }
        Ok(keys)
    }

    /// A hash's fields, by HSCAN.
    pub(super) async fn hash(&self, key: &str) -> Result<BTreeMap<String, String>, StoreError> {
        let mut out = BTreeMap::new();
        let mut cursor = "0".to_string();
        loop {
            let value = self
                .raw(
                    redis::cmd("HSCAN")
                        .arg(key)
                        .arg(&cursor)
                        .arg("COUNT")
                        .arg(500),
                )
                .await?;
            let mut parts = reply::array("HSCAN", value)?.into_iter();
            cursor = reply::text("HSCAN", parts.next().unwrap_or_default())?;
            let items = reply::array("HSCAN", parts.next().unwrap_or_default())?;
            let mut items = items.into_iter();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                out.insert(reply::text("HSCAN", k)?, reply::text("HSCAN", v)?);
            }
            if cursor == "0" {
                return Ok(out);
            }
        }
    }

    /// A sorted set's members (as stored) and scores, 1000 at a time.
    async fn zset_raw(&self, key: &str) -> Result<Vec<(Value, f64)>, StoreError> {
        let mut out = Vec::new();
        let mut start = 0usize;
        loop {
            let value = self
                .raw(
                    redis::cmd("ZRANGE")
                        .arg(key)
                        .arg(start)
                        .arg(start + 999)
                        .arg("WITHSCORES"),
                )
                .await?;
            // RESP3 gives [member, score] pairs, RESP2 a flat list
            let items = reply::array("ZRANGE", value)?;
            let flat: Vec<Value> = items
                .into_iter()
                .flat_map(|item| match item {
                    Value::Array(pair) => pair,
                    other => vec![other],
                })
                .collect();
            let before = out.len();
            let mut items = flat.into_iter();
            while let (Some(member), Some(score)) = (items.next(), items.next()) {
                let score = match score {
                    Value::Double(d) => d,
                    other => reply::text("ZRANGE", other)?.parse().unwrap_or(f64::NAN),
                };
                out.push((member, score));
            }
            if out.len() - before < 1000 {
                return Ok(out);
            }
            start += 1000;
        }
    }

    /// A sorted set's members and scores, 1000 at a time.
    async fn zset(&self, key: &str) -> Result<Vec<(String, f64)>, StoreError> {
        self.zset_raw(key)
            .await?
            .into_iter()
            .map(|(member, score)| Ok((reply::text("ZRANGE", member)?, score)))
            .collect()
    }

    /// A stream's entries in order, 1000 at a time, each given to `each`.
    async fn entries(
        &self,
        key: &str,
        mut each: impl FnMut(String, EntryFields) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut from = "-".to_string();
        loop {
            let value = self
                .raw(
                    redis::cmd("XRANGE")
                        .arg(key)
                        .arg(&from)
                        .arg("+")
                        .arg("COUNT")
                        .arg(1000),
                )
                .await?;
            let entries = reply::array("XRANGE", value)?;
            let n = entries.len();
            for entry in entries {
                let (id, fields) = reply::entry("XRANGE", entry)?;
                from = format!("({id}");
                each(id, fields)?;
            }
            if n < 1000 {
                return Ok(());
            }
        }
    }

    /// An event stream's (user, type) in order (no user: a start or an
    /// end).
    async fn event_log(&self, key: &str) -> Result<Vec<(Option<u64>, i64)>, StoreError> {
        let mut out = Vec::new();
        self.entries(key, |id, fields| {
            let event = reply::event(id, fields)?;
            out.push((event.user, i64::from(event.kind.code())));
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Stored text that a reply cannot carry as it is, one line each: bytes
    /// that are not UTF-8 or control characters, which the library refuses
    /// but an older version or a raw write may have let in. Reads show such
    /// bytes as U+FFFD; a new write of the record mends it.
    async fn texts(&self, kinds: &BTreeSet<Kind>) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let mut note = |place: String, value: &Value, multiline: bool| {
            if let Some(what) = bad_text(value, multiline) {
                problems.push(format!("{place}: {what}"));
            }
        };
        for k in kinds {
            match k {
                Kind::User(u) => {
                    let fields = ["name", "gender", "email"];
                    let values = self
                        .raw(redis::cmd("HMGET").arg(Keys::user(*u)).arg(&fields))
                        .await?;
                    for (field, value) in fields.iter().zip(reply::array("HMGET", values)?) {
                        note(format!("user {u}: its {field}"), &value, false);
                    }
                }
                Kind::Meeting(m) => {
                    let fields = [("title", false), ("description", true)];
                    let values = self
                        .raw(
                            redis::cmd("HMGET")
                                .arg(self.keys.meeting(*m))
                                .arg(&fields.map(|(f, _)| f)),
                        )
                        .await?;
                    for ((field, multiline), value) in
                        fields.iter().zip(reply::array("HMGET", values)?)
                    {
                        note(format!("meeting {m}: its {field}"), &value, *multiline);
                    }
                }
                Kind::Audience(m) => {
                    for (email, _) in self.zset_raw(&self.keys.audience(*m)).await? {
                        note(format!("meeting {m}: an audience e-mail"), &email, false);
                    }
                }
                Kind::Chat(i) => {
                    self.entries(&self.keys.chat(*i), |id, mut fields| {
                        let text = fields.take("text").unwrap_or_default();
                        note(format!("instance {i}: message {id}"), &text, true);
                        Ok(())
                    })
                    .await?;
                }
                _ => {}
            }
        }
        Ok(problems)
    }

    /// Check everything stored; one line per problem found (none: clean).
    /// On a cluster every master is scanned; the structures are read through
    /// the cluster connection (each read has one key).
    pub async fn check(&self) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        let mut kinds: BTreeSet<Kind> = BTreeSet::new();
        let partitions = self.keys.partitions();
        for key in self.all_keys().await? {
            let k = kind(&key);
            if k == Kind::Unknown {
                problems.push(format!("{key}: not a key of meetingd's layout"));
                continue;
            }
            // a key under a tag that is no partition's, or another
            // partition's than its meeting's: the daemon never looks there
            let tagged = tag_partition(&key);
            let expected = k.meeting().map(|m| m % partitions);
            let misplaced = match (&k, tagged, expected) {
                (_, Some(p), Some(e)) => p != e,
                (
                    Kind::Due(_)
                    | Kind::Active(_)
                    | Kind::Wake(_)
                    | Kind::Outbox(_)
                    | Kind::Transitions(_),
                    Some(p),
                    None,
                ) => p >= partitions,
                (Kind::MeetingIndex(_) | Kind::UserIndex(_), Some(p), None) => p >= partitions,
                (Kind::User(_) | Kind::Layout | Kind::Serving | Kind::Repartition, _, _) => false,
                (Kind::Indexed, _, _) => false,
                _ => true,
            };
            if misplaced {
                let wanted = expected.map_or_else(
                    || format!("a partition below {partitions}"),
                    |e| format!("{{p{e}}}"),
                );
                problems.push(format!(
                    "{key}: under the wrong tag (the layout puts it under {wanted})"
                ));
                continue;
            }
            kinds.insert(k);
        }
        if kinds.contains(&Kind::Repartition) {
            let under_way = self.repartition_under_way().await?.unwrap_or_default();
            problems.push(format!(
                "a repartition (partitions \"{under_way}\": from, to) is under way: \
                 meetingd repartition --partitions {} finishes it",
                under_way.split(' ').nth(1).unwrap_or("?")
            ));
        }
        if kinds.contains(&Kind::Layout) {
            let recorded = self.raw(redis::cmd("GET").arg(Keys::layout())).await?;
            let recorded = reply::int("GET", recorded).ok();
            if recorded != Some(self.keys.partitions() as i64) {
                problems.push(format!(
                    "{}: the data was laid out with {} partitions, the check ran with {} \
                     (set redis.partitions to match, or leave it unset)",
                    Keys::layout(),
                    recorded.map_or("an unreadable number of".into(), |n| n.to_string()),
                    self.keys.partitions()
                ));
            }
        }
        let mut instances: BTreeMap<InstanceId, Entry> = BTreeMap::new();
        for k in &kinds {
            let Kind::Schedule(m) = k else { continue };
            if !kinds.contains(&Kind::Meeting(*m)) {
                problems.push(format!(
                    "schedule of meeting {m}: the meeting does not exist"
                ));
            }
            let orders: BTreeSet<String> = self
                .zset(&self.keys.orders(*m))
                .await?
                .into_iter()
                .map(|(o, _)| o)
                .collect();
            for (field, packed) in self.hash(&self.keys.schedule(*m)).await? {
                if field.contains('#') {
                    continue;
                }
                let Ok(order) = field.parse::<u64>() else {
                    problems.push(format!(
                        "schedule of meeting {m}: a field {field:?} that is not an order"
                    ));
                    continue;
                };
                let mut parts = packed.split('|');
                let parsed = (
                    parts.next().and_then(|v| v.parse().ok()),
                    parts.next().and_then(|v| v.parse().ok()),
                    parts.next().and_then(|v| v.parse::<InstanceState>().ok()),
                );
                let (Some(from), Some(to), Some(state)) = parsed else {
                    problems.push(format!(
                        "instance {m}/{order}: a corrupt schedule entry {packed:?}"
                    ));
                    continue;
                };
                if from > MAX_TIME || to > MAX_TIME {
                    problems.push(format!(
                        "instance {m}/{order}: a window {packed:?} past 9999-12-31 (replies show such times as raw milliseconds)"
                    ));
                }
                if !orders.contains(&field) {
                    problems.push(format!(
                        "instance {m}/{order}: missing from the meeting's orders"
                    ));
                }
                instances.insert(InstanceId::new(*m, order), Entry { from, to, state });
            }
        }
        // the indexes, per partition
        let mut active: BTreeMap<InstanceId, f64> = BTreeMap::new();
        let mut due: BTreeMap<InstanceId, f64> = BTreeMap::new();
        for p in 0..self.keys.partitions() {
            for (index, into) in [(Keys::active(p), &mut active), (Keys::due(p), &mut due)] {
                for (member, score) in self.zset(&index).await? {
                    match member.parse::<InstanceId>() {
                        Ok(i) if self.keys.partition(i.meeting) == p => {
                            into.insert(i, score);
                        }
                        _ => problems.push(format!(
                            "{index}: a member {member:?} of another partition or none"
                        )),
                    }
                }
            }
        }
        for (i, _) in active.iter().chain(due.iter()) {
            if !instances.contains_key(i) {
                problems.push(format!(
                    "instance {i}: in an index but not in its meeting's schedule"
                ));
            }
        }
        // the live field: the running instance of its meeting, and its end
        for k in &kinds {
            let Kind::Meeting(m) = k else { continue };
            let live = self
                .raw(redis::cmd("HGET").arg(self.keys.meeting(*m)).arg("live"))
                .await?;
            let live = match live {
                Value::Nil => None,
                other => Some(reply::text("HGET", other)?),
            };
            let running: Vec<(&InstanceId, &Entry)> = instances
                .iter()
                .filter(|(i, e)| i.meeting == *m && e.state == InstanceState::Active)
                .collect();
            match (live.as_deref().map(|l| l.split('|').collect::<Vec<_>>()), running.as_slice()) {
                (None, []) => {}
                (None, [(i, _), ..]) => problems.push(format!(
                    "instance {i}: active but its meeting has no live field (data of 0.1 not upgraded: a daemon upgrades it at start-up)"
                )),
                (Some(parts), [(i, e)]) => {
                    let fits = (parts.len() == 4 || parts.len() == 5)
                        && parts[0] == i.order.to_string()
                        && parts[1] == e.to.to_string();
                    if !fits {
                        problems.push(format!(
                            "meeting {m}: live field {:?} does not say instance {i} runs until {}",
                            live.unwrap_or_default(),
                            e.to
                        ));
                    }
                }
                (Some(_), []) => problems.push(format!(
                    "meeting {m}: a live field {:?}, and no active instance",
                    live.unwrap_or_default()
                )),
                (Some(_), _) => {}
            }
        }
        problems.extend(self.check_upcoming(&kinds, &instances).await?);
        let mut active_per_meeting: BTreeMap<u64, u32> = BTreeMap::new();
        for (i, entry) in &instances {
            let present: Vec<(String, f64)> = self.zset(&self.keys.present(*i)).await?;
            let present: BTreeSet<u64> =
                present.iter().filter_map(|(u, _)| u.parse().ok()).collect();
            let log = self.event_log(&self.keys.events(*i)).await?;
            let mut last: BTreeMap<u64, i64> = BTreeMap::new();
            let mut transitions: BTreeMap<i64, usize> = BTreeMap::new();
            for (user, t) in log {
                let Some(user) = user else {
                    *transitions.entry(t).or_default() += 1;
                    continue;
                };
                let previous = last.insert(user, t);
                let inside = previous == Some(1);
                if (t == 1 && inside) || (t != 1 && !inside) {
                    problems.push(format!(
                        "instance {i}: user {user} has a {} right after a {}",
                        name(t),
                        previous.map_or("nothing", name)
                    ));
                }
            }
            for (t, n) in transitions {
                if n > 1 {
                    problems.push(format!("instance {i}: {n} {} entries", name(t)));
                }
            }
            let joined: BTreeSet<u64> = last
                .iter()
                .filter(|(_, t)| **t == 1)
                .map(|(u, _)| *u)
                .collect();
            if joined != present {
                let extra: Vec<_> = present.difference(&joined).collect();
                let missing: Vec<_> = joined.difference(&present).collect();
                problems.push(format!(
                    "instance {i}: participants differ from the event log (in without a join: {extra:?}; joined but not in: {missing:?})"
                ));
            }
            let in_active = active.get(i);
            let in_due = due.get(i);
            match entry.state {
                InstanceState::Active => {
                    *active_per_meeting.entry(i.meeting).or_default() += 1;
                    if in_active != Some(&(i.meeting as f64)) {
                        problems.push(format!("instance {i}: active but not in the active index"));
                    }
                    if in_due.is_none_or(|d| *d > entry.to as f64) {
                        problems.push(format!("instance {i}: active but not due at its end"));
                    }
                }
                InstanceState::Scheduled => {
                    if in_active.is_some() {
                        problems.push(format!("instance {i}: scheduled but in the active index"));
                    }
                    if in_due.is_none_or(|d| *d < entry.from as f64 || *d > entry.to as f64) {
                        problems.push(format!(
                            "instance {i}: scheduled but not due within its window"
                        ));
                    }
                    if !present.is_empty() {
                        problems.push(format!("instance {i}: scheduled with participants"));
                    }
                }
                InstanceState::Ended => {
                    if in_active.is_some() {
                        problems.push(format!("instance {i}: ended but in the active index"));
                    }
                    if in_due.is_some() && present.is_empty() {
                        problems.push(format!("instance {i}: ended, nobody left, and still due"));
                    }
                    if in_due.is_none() && !present.is_empty() {
                        problems.push(format!(
                            "instance {i}: ended with participants left and not due"
                        ));
                    }
                }
            }
        }
        for (m, n) in active_per_meeting {
            if n > 1 {
                problems.push(format!("meeting {m}: {n} active instances"));
            }
        }
        // orphans
        for k in &kinds {
            let orphan = match k {
                Kind::Audience(m) | Kind::Orders(m) | Kind::Upcoming(m) => {
                    (!kinds.contains(&Kind::Meeting(*m))).then(|| format!("meeting {m}"))
                }
                Kind::Present(i) | Kind::Events(i) | Kind::Chat(i) | Kind::Posted(i) => {
                    (!instances.contains_key(i)).then(|| format!("instance {i}"))
                }
                Kind::ChatBy(i, u) => (!instances.contains_key(i)
                    || !kinds.contains(&Kind::Chat(*i)))
                .then(|| format!("instance {i}'s chat (user {u})")),
                _ => None,
            };
            if let Some(owner) = orphan {
                problems.push(format!("{k:?}: an orphan key: {owner} does not exist"));
            }
        }
        problems.extend(self.texts(&kinds).await?);
        problems.extend(self.listings_check(&kinds).await?);
        Ok(problems)
    }
}

impl Store {
    /// The listings' indexes against the meetings and users stored.
    async fn listings_check(&self, kinds: &BTreeSet<Kind>) -> Result<Vec<String>, StoreError> {
        let (mut meetings, mut users) = (BTreeSet::new(), BTreeSet::new());
        for k in kinds {
            match k {
                Kind::Meeting(m) => meetings.insert(*m),
                Kind::User(u) => users.insert(*u),
                _ => false,
            };
        }
        self.check_indexes(&meetings, &users).await
    }

    /// Each meeting's upcoming index against its schedule (exactly its
    /// scheduled instances, each at its `from`), and its `preempt`: with a
    /// running instance, no later than the first `from` of a scheduled
    /// instance of a higher order (else a JOIN would miss the window that
    /// pre-empts it until the tick).
    async fn check_upcoming(
        &self,
        kinds: &BTreeSet<Kind>,
        instances: &BTreeMap<InstanceId, Entry>,
    ) -> Result<Vec<String>, StoreError> {
        let mut problems = Vec::new();
        for k in kinds {
            let Kind::Meeting(m) = k else { continue };
            let indexed: BTreeMap<u64, f64> = self
                .zset(&self.keys.upcoming(*m))
                .await?
                .into_iter()
                .filter_map(|(o, score)| o.parse().ok().map(|o| (o, score)))
                .collect();
            let scheduled: BTreeMap<u64, &Entry> = instances
                .range(InstanceId::new(*m, 0)..=InstanceId::new(*m, u64::MAX))
                .filter(|(_, e)| e.state == InstanceState::Scheduled)
                .map(|(i, e)| (i.order, e))
                .collect();
            for (order, entry) in &scheduled {
                match indexed.get(order) {
                    None => problems.push(format!(
                        "instance {m}/{order}: scheduled but not in its meeting's upcoming index (data of 0.2 not upgraded: a daemon upgrades it at start-up)"
                    )),
                    Some(score) if *score != entry.from as f64 => problems.push(format!(
                        "instance {m}/{order}: in its meeting's upcoming index at {score}, not at its from {}",
                        entry.from
                    )),
                    Some(_) => {}
                }
            }
            for order in indexed.keys().filter(|o| !scheduled.contains_key(o)) {
                problems.push(format!(
                    "instance {m}/{order}: in its meeting's upcoming index but not scheduled"
                ));
            }
            let fields = self
                .raw(
                    redis::cmd("HMGET")
                        .arg(self.keys.meeting(*m))
                        .arg("live")
                        .arg("preempt"),
                )
                .await?;
            let mut fields = reply::array("HMGET", fields)?.into_iter();
            let mut text = || match fields.next() {
                None | Some(Value::Nil) => Ok(None),
                Some(v) => reply::text("HMGET", v).map(Some),
            };
            let (live, preempt) = (text()?, text()?);
            // the live field's copy of the preempt (its fifth part), which
            // the hot calls read instead of the field
            let copy = live.as_deref().map(|l| l.split('|').nth(4));
            if copy.is_some_and(|copy| copy != preempt.as_deref()) {
                problems.push(format!(
                    "meeting {m}: live field {:?} does not carry its preempt {:?}",
                    live.as_deref().unwrap_or_default(),
                    preempt.as_deref().unwrap_or_default()
                ));
            }
            let Some(running) = live
                .as_deref()
                .and_then(|l| l.split('|').next())
                .and_then(|o| o.parse::<u64>().ok())
            else {
                continue;
            };
            let due = scheduled
                .iter()
                .filter(|(order, _)| **order > running)
                .map(|(order, e)| (e.from, *order))
                .min();
            let preempt_at = preempt.as_deref().map(|p| p.parse::<i64>());
            match (due, preempt_at) {
                (_, Some(Err(_))) => problems.push(format!(
                    "meeting {m}: a preempt field {:?} that is no time",
                    preempt.unwrap_or_default()
                )),
                (Some((from, order)), None) => problems.push(format!(
                    "meeting {m}: no preempt, though instance {m}/{order} of a higher order than the running {m}/{running} opens at {from}"
                )),
                (Some((from, order)), Some(Ok(at))) if at > from => problems.push(format!(
                    "meeting {m}: preempt {at} is later than {from}, when instance {m}/{order} opens and pre-empts {m}/{running}"
                )),
                _ => {}
            }
        }
        Ok(problems)
    }
}

/// The keys of the layout in one Redis (one node of a cluster), by SCAN in
/// steps of 500.
async fn scan(conn: &mut impl ConnectionLike) -> Result<BTreeSet<String>, StoreError> {
    let mut keys = BTreeSet::new();
    let mut cursor = "0".to_string();
    loop {
        let value: Value = redis::cmd("SCAN")
            .arg(&cursor)
            .arg("MATCH")
            .arg("meetingd:*")
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        let mut parts = reply::array("SCAN", value)?.into_iter();
        cursor = reply::text("SCAN", parts.next().unwrap_or_default())?;
        for key in reply::array("SCAN", parts.next().unwrap_or_default())? {
            keys.insert(reply::text("SCAN", key)?);
        }
        if cursor == "0" {
            return Ok(keys);
        }
    }
}

/// What is wrong with a stored text, if anything: not UTF-8, or a
/// control character (tab and newline are allowed where `multiline`).
fn bad_text(value: &Value, multiline: bool) -> Option<&'static str> {
    let Value::BulkString(bytes) = value else {
        return None;
    };
    match std::str::from_utf8(bytes) {
        Err(_) => {
            Some("bytes that are not UTF-8 (reads show them as U+FFFD; write it again to mend it)")
        }
        Ok(text) => text
            .chars()
            .any(|c| c.is_control() && !(multiline && (c == '\n' || c == '\t')))
            .then_some("a control character (write it again to mend it)"),
    }
}

fn name(t: i64) -> &'static str {
    match t {
        1 => "join",
        2 => "leave",
        3 => "timeout",
        4 => "start",
        5 => "end",
        _ => "unknown event",
    }
}
