//! Durability: what an acknowledgement promises, and what a Redis keeps.
//!
//! `redis.durability` states the promise an `ok` makes about a write
//! ([`Durability`]): `fsync` (in Redis' append-only file and fsynced
//! before the reply), `everysec` (fsynced within about a second) or
//! `memory` (in Redis' memory). The embedded redis-server is started to
//! keep the promise ([`Durability::appendfsync`]); an external Redis is
//! asked at start-up what it keeps (`CONFIG GET appendonly appendfsync`,
//! read by the store into a [`Persistence`]), and [`judge`] says whether
//! that is enough, what an acknowledgement then means, and whether the
//! daemon may start.
//!
//! Pure: nothing here talks to Redis or logs; the daemon does both.

use std::fmt;

/// What an acknowledged write survives, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Durability {
    /// In Redis' memory: survives a crash of meetingd only.
    Memory,
    /// In the append-only file, fsynced within about a second: a crash of
    /// Redis or of the machine may lose the last seconds.
    Everysec,
    /// In the append-only file and fsynced before the reply: survives
    /// meetingd, Redis or the machine crashing.
    Fsync,
}

impl Durability {
    /// The promise when none is configured.
    pub const DEFAULT: Durability = Durability::Fsync;

    /// Every value, strongest first, as the configuration names them.
    pub const NAMES: [&'static str; 3] = ["fsync", "everysec", "memory"];

    /// The value of `redis.durability` (exactly as written, lower case).
    pub fn parse(text: &str) -> Option<Durability> {
        match text {
            "fsync" => Some(Durability::Fsync),
            "everysec" => Some(Durability::Everysec),
            "memory" => Some(Durability::Memory),
            _ => None,
        }
    }

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Everysec => "everysec",
            Durability::Memory => "memory",
        }
    }

    /// The `appendfsync` the embedded redis-server runs with to keep it.
    /// The embedded Redis always keeps an append-only file, so `memory`
    /// gets `no` (the kernel writes the file out when it likes): more than
    /// the promise, and its data survives a restart.
    pub fn appendfsync(self) -> &'static str {
        match self {
            Durability::Fsync => "always",
            Durability::Everysec => "everysec",
            Durability::Memory => "no",
        }
    }

    /// What `embedded.appendfsync` (deprecated) meant, as a promise.
    pub fn of_appendfsync(appendfsync: &str) -> Option<Durability> {
        match appendfsync {
            "always" => Some(Durability::Fsync),
            "everysec" => Some(Durability::Everysec),
            "no" => Some(Durability::Memory),
            _ => None,
        }
    }

    /// The Redis settings that keep it, for messages.
    fn redis_settings(self) -> &'static str {
        match self {
            Durability::Fsync => "appendonly yes and appendfsync always",
            Durability::Everysec => "appendonly yes and appendfsync everysec (or always)",
            Durability::Memory => "anything",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a Redis does with writes, as `CONFIG GET` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistence {
    /// `appendonly`: whether it keeps an append-only file.
    pub appendonly: bool,
    /// `appendfsync`: `always`, `everysec` or `no`.
    pub appendfsync: String,
}

impl Persistence {
    /// Read from the values of `appendonly` and `appendfsync`.
    pub fn new(appendonly: &str, appendfsync: &str) -> Persistence {
        Persistence {
            appendonly: appendonly.eq_ignore_ascii_case("yes"),
            appendfsync: appendfsync.to_ascii_lowercase(),
        }
    }

    /// The strongest promise it keeps.
    pub fn keeps(&self) -> Durability {
        match (self.appendonly, self.appendfsync.as_str()) {
            (true, "always") => Durability::Fsync,
            (true, "everysec") => Durability::Everysec,
            _ => Durability::Memory,
        }
    }

    /// What an acknowledged write survives on it, in words.
    pub fn meaning(&self) -> &'static str {
        match (self.appendonly, self.appendfsync.as_str()) {
            (true, "always") => {
                "acked writes are fsynced to its append-only file before the reply and survive \
                 meetingd, Redis or the machine crashing"
            }
            (true, "everysec") => {
                "acked writes survive a meetingd crash, but up to about 2 s of them may be lost \
                 if Redis is killed or the machine crashes (Redis fsyncs once a second, and \
                 holds back even its writes to the file while an fsync lags)"
            }
            (true, _) => {
                "acked writes survive a meetingd or Redis crash, but up to about 30 s of them \
                 may be lost if the machine crashes or loses power (Redis never fsyncs: the \
                 kernel writes the file out when it likes)"
            }
            (false, _) => {
                "acked writes survive a meetingd crash only: if Redis restarts, everything \
                 since its last RDB snapshot (if any) is lost"
            }
        }
    }
}

impl fmt::Display for Persistence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "appendonly {} and appendfsync {}",
            if self.appendonly { "yes" } else { "no" },
            self.appendfsync
        )
    }
}

/// What the daemon does about a Redis, by [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// It keeps the promise.
    Kept,
    /// Start, and log this line (it says why, and what an ack means).
    Warn(String),
    /// Do not start: this line says why.
    Refuse(String),
}

/// Whether the Redis called `node` keeps `promise`, given what it said
/// (`found`, or why it could not be asked). `stated`: the promise was
/// configured (`redis.durability`), not the default.
///
/// A Redis that keeps less refuses a stated promise (the operator asked
/// for it and would otherwise believe it) and warns under the default (a
/// Redis of one's own is configured by its owner, and the default must
/// not stop a daemon that ran before). A Redis that cannot be asked
/// (CONFIG renamed or disabled, as managed services do) warns either way:
/// refusing would make such a Redis unusable.
pub fn judge(
    promise: Durability,
    stated: bool,
    node: &str,
    found: &Result<Persistence, String>,
) -> Judgement {
    if promise == Durability::Memory {
        return Judgement::Kept;
    }
    let persistence = match found {
        Ok(persistence) => persistence,
        Err(why) => {
            return Judgement::Warn(format!(
                "cannot verify redis.durability \"{promise}\" on the Redis at {node}: CONFIG GET \
                 appendonly appendfsync failed ({why}; CONFIG may be renamed or disabled there), \
                 so an acknowledgement means only what that Redis' own persistence gives: make \
                 sure it runs with {}",
                promise.redis_settings()
            ));
        }
    };
    let keeps = persistence.keeps();
    if keeps >= promise {
        return Judgement::Kept;
    }
    if stated {
        Judgement::Refuse(format!(
            "redis.durability: \"{promise}\" is configured, but the Redis at {node} runs with \
             {persistence}: {}. Configure that Redis with {} (CONFIG SET and its redis.conf), \
             or set redis.durability = \"{keeps}\" to accept what it keeps",
            persistence.meaning(),
            promise.redis_settings()
        ))
    } else {
        Judgement::Warn(format!(
            "the Redis at {node} runs with {persistence}, weaker than the default \
             redis.durability \"{promise}\": {}. Configure that Redis with {}, or set \
             redis.durability = \"{keeps}\" to accept this and silence the warning",
            persistence.meaning(),
            promise.redis_settings()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_by_strength() {
        for name in Durability::NAMES {
            let durability = Durability::parse(name).expect(name);
            assert_eq!(durability.name(), name);
            assert_eq!(
                Durability::of_appendfsync(durability.appendfsync()),
                Some(durability)
            );
        }
        assert_eq!(Durability::parse("FSYNC"), None);
        assert_eq!(Durability::parse("always"), None);
        assert!(Durability::Memory < Durability::Everysec);
        assert!(Durability::Everysec < Durability::Fsync);
        assert_eq!(Durability::DEFAULT, Durability::Fsync);
    }

    #[test]
    fn what_a_redis_keeps() {
        let cases = [
            ("yes", "always", Durability::Fsync),
            ("yes", "everysec", Durability::Everysec),
            ("yes", "no", Durability::Memory),
            ("no", "always", Durability::Memory),
            ("no", "everysec", Durability::Memory),
            ("YES", "ALWAYS", Durability::Fsync),
        ];
        for (appendonly, appendfsync, keeps) in cases {
            let found = Persistence::new(appendonly, appendfsync);
            assert_eq!(found.keeps(), keeps, "{found}");
            assert!(found.meaning().contains("acked writes"), "{found}");
        }
    }

    #[test]
    fn judgements() {
        let everysec = Ok(Persistence::new("yes", "everysec"));
        let always = Ok(Persistence::new("yes", "always"));
        let off = Ok(Persistence::new("no", "everysec"));
        let node = "redis://db:6379";
        assert_eq!(
            judge(Durability::Fsync, true, node, &always),
            Judgement::Kept
        );
        assert_eq!(
            judge(Durability::Everysec, true, node, &always),
            Judgement::Kept
        );
        assert_eq!(
            judge(Durability::Everysec, true, node, &everysec),
            Judgement::Kept
        );
        assert_eq!(judge(Durability::Memory, true, node, &off), Judgement::Kept);
        let Judgement::Warn(line) = judge(Durability::Fsync, false, node, &everysec) else {
            panic!("the default warns")
        };
        assert!(line.contains("redis://db:6379"), "{line}");
        assert!(line.contains("up to about 2 s"), "{line}");
        assert!(line.contains("redis.durability = \"everysec\""), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        let Judgement::Refuse(line) = judge(Durability::Fsync, true, node, &off) else {
            panic!("a stated promise refuses")
        };
        assert!(line.starts_with("redis.durability: "), "{line}");
        assert!(line.contains("appendonly no"), "{line}");
        assert!(line.contains("redis.durability = \"memory\""), "{line}");
        let Judgement::Warn(line) = judge(
            Durability::Fsync,
            true,
            node,
            &Err("unknown command 'CONFIG'".into()),
        ) else {
            panic!("an unverifiable Redis warns")
        };
        assert!(line.contains("cannot verify"), "{line}");
        assert!(line.contains("unknown command 'CONFIG'"), "{line}");
    }
}
