//! Decoding the library's replies into the store's types.
//!
//! Records come back as flat field/value arrays (`{'id', '5', 'name', ...}`)
//! so they read well in redis-cli; [`Fields`] looks fields up by name. The
//! long lists of a page (messages, participants, attendance) come back
//! packed into one string, which the daemon asks for and splits here: one
//! reply element for the list instead of one per value. A
//! reply of the wrong shape is a bug (ours or a foreign library under our
//! name): it becomes [`StoreError::Internal`], never a panic.

use redis::Value;

use super::StoreError;
use super::types::{EndReason, Event, EventKind, Id, InstanceId, MAX_ID, Message, Millis, Page};

fn bad(function: &str, what: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("unexpected reply from {function}: {what}"))
}

/// Bytes as text. The library refuses text that is not UTF-8, but a
/// store may hold some that an older version or a raw write let in: such
/// bytes read as U+FFFD rather than failing the request (`meetingd check`
/// reports them), so no stored value can make a read answer `internal`
/// or stall a watcher.
pub(super) fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// The text of a string-like value.
pub(super) fn text(function: &str, value: Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => Ok(lossy(bytes)),
        Value::SimpleString(s) => Ok(s),
        Value::VerbatimString { text, .. } => Ok(text),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(bad(function, format!("expected text, got {other:?}"))),
    }
}

/// The integer that decimal digits (an optional `-`, then at most 18
/// digits) spell, read straight from the reply's bytes.
fn digits(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut n: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(b - b'0');
    }
    Some(if negative { -n } else { n })
}

/// An integer given as an integer reply or as digits.
pub(super) fn int(function: &str, value: Value) -> Result<i64, StoreError> {
    let value = match value {
        Value::Int(n) => return Ok(n),
        Value::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => return Ok(d as i64),
        Value::BulkString(bytes) => match digits(&bytes) {
            Some(n) => return Ok(n),
            None => Value::BulkString(bytes),
        },
        other => other,
    };
    let s = text(function, value)?;
    s.parse::<i64>()
        .or_else(|_| {
            // scores come back as "1.7e+12" from some paths
            s.parse::<f64>()
                .ok()
                .filter(|d| d.fract() == 0.0 && d.abs() < 9.0e15)
                .map(|d| d as i64)
                .ok_or(())
        })
        .map_err(|_| bad(function, format!("expected an integer, got {s:?}")))
}

/// An id (1..=2^53-1).
pub(super) fn id(function: &str, value: Value) -> Result<Id, StoreError> {
    let n = int(function, value)?;
    u64::try_from(n)
        .ok()
        .filter(|id| (1..=MAX_ID).contains(id))
        .ok_or_else(|| bad(function, format!("{n} is not an id")))
}

/// An array's elements.
pub(super) fn array(function: &str, value: Value) -> Result<Vec<Value>, StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Map(pairs) => Ok(pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()),
        Value::Nil => Ok(Vec::new()),
        other => Err(bad(function, format!("expected an array, got {other:?}"))),
    }
}

/// Whether a value is Lua's `false` / nil.
fn is_none(value: &Value) -> bool {
    matches!(value, Value::Nil | Value::Boolean(false))
}

/// A record: a flat field/value array, looked up by field name.
pub(super) struct Fields {
    pub(super) function: &'static str,
    pairs: Vec<(String, Value)>,
}

impl Fields {
    /// Split a flat array into field/value pairs.
    pub(super) fn new(function: &'static str, value: Value) -> Result<Fields, StoreError> {
        let items = array(function, value)?;
        if items.len() % 2 != 0 {
            return Err(bad(function, "odd number of elements in a record"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            pairs.push((text(function, name)?, value));
        }
        Ok(Fields { function, pairs })
    }

    /// The value of a field, taken out of the record.
    pub(super) fn take(&mut self, name: &str) -> Result<Value, StoreError> {
        self.pairs
            .iter_mut()
            .find(|(field, _)| field == name)
            .map(|(_, value)| std::mem::take(value))
            .ok_or_else(|| bad(self.function, format!("no field {name:?}")))
    }

    /// A text field.
    pub(super) fn string(&mut self, name: &str) -> Result<String, StoreError> {
        let value = self.take(name)?;
        text(self.function, value)
    }

    /// An integer field.
    pub(super) fn int(&mut self, name: &str) -> Result<i64, StoreError> {
        let value = self.take(name)?;
        int(self.function, value)
    }

    /// A count field.
    pub(super) fn count(&mut self, name: &str) -> Result<u64, StoreError> {
        let n = self.int(name)?;
        u64::try_from(n).map_err(|_| bad(self.function, format!("{name} is negative")))
    }

    /// An id field.
    pub(super) fn id(&mut self, name: &str) -> Result<Id, StoreError> {
        let value = self.take(name)?;
        id(self.function, value)
    }

    /// A `true`/`false` field.
    pub(super) fn flag(&mut self, name: &str) -> Result<bool, StoreError> {
        match self.string(name)?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(bad(self.function, format!("{name} is {other:?}"))),
        }
    }

    /// A field that may be nil.
    pub(super) fn optional(&mut self, name: &str) -> Result<Option<Value>, StoreError> {
        let value = self.take(name)?;
        Ok((!is_none(&value)).then_some(value))
    }

    /// An array field.
    pub(super) fn array(&mut self, name: &str) -> Result<Vec<Value>, StoreError> {
        let value = self.take(name)?;
        array(self.function, value)
    }

    /// An array of `M/O` names.
    pub(super) fn instances(&mut self, name: &str) -> Result<Vec<InstanceId>, StoreError> {
        let function = self.function;
        self.array(name)?
            .into_iter()
            .map(|v| {
                text(function, v)?
                    .parse::<InstanceId>()
                    .map_err(|e| bad(function, e))
            })
            .collect()
    }
}

/// A stream entry's fields: a flat field/value array, looked up by name
/// without copying the names (the hot read paths decode thousands).
pub(super) struct EntryFields {
    function: &'static str,
    items: Vec<Value>,
}

impl EntryFields {
    /// The value of field `name`, taken out of the entry.
    pub(super) fn take(&mut self, name: &str) -> Option<Value> {
        let at = self.items.chunks(2).position(|pair| match &pair[0] {
            Value::BulkString(field) => field == name.as_bytes(),
            Value::SimpleString(field) => field == name,
            _ => false,
        })?;
        self.items.get_mut(2 * at + 1).map(std::mem::take)
    }

    /// Whether the entry has field `name`.
    pub(super) fn has(&self, name: &str) -> bool {
        self.items.chunks(2).any(|pair| match &pair[0] {
            Value::BulkString(field) => field == name.as_bytes(),
            Value::SimpleString(field) => field == name,
            _ => false,
        })
    }

    fn required(&mut self, name: &str) -> Result<Value, StoreError> {
        self.take(name).ok_or_else(|| {
            bad(
                self.function,
                format!("no field {name:?} in a stream entry"),
            )
        })
    }

    /// A time field, or (left out, as the library writes it since 0.2) the
    /// id's milliseconds.
    fn time_or_id(&mut self, name: &str, id: &str) -> Result<Millis, StoreError> {
        match self.take(name) {
            Some(value) => int(self.function, value),
            None => id_ms(self.function, id),
        }
    }
}

/// A stream entry: its id and its fields.
pub(super) fn entry(
    function: &'static str,
    value: Value,
) -> Result<(String, EntryFields), StoreError> {
    let mut parts = array(function, value)?.into_iter();
    match (parts.next(), parts.next()) {
        (Some(id), Some(fields)) => Ok((
            text(function, id)?,
            EntryFields {
                function,
                items: array(function, fields)?,
            },
        )),
        _ => Err(bad(function, "a stream entry without fields")),
    }
}

/// A record's `next, id or nil, <list>, {entries}` into a page of `T`.
pub(super) fn page<T>(
    mut fields: Fields,
    list: &str,
    decode: impl Fn(String, EntryFields) -> Result<T, StoreError>,
) -> Result<Page<T>, StoreError> {
    let function = fields.function;
    let next = fields
        .optional("next")?
        .map(|v| text(function, v))
        .transpose()?;
    let items = fields
        .array(list)?
        .into_iter()
        .map(|v| entry(function, v).and_then(|(id, f)| decode(id, f)))
        .collect::<Result<_, _>>()?;
    Ok(Page { items, next })
}

/// The milliseconds of a stream id (`ms-seq`): when its entry happened.
pub(super) fn id_ms(function: &str, id: &str) -> Result<Millis, StoreError> {
    id.split_once('-')
        .map_or(id, |(ms, _)| ms)
        .parse()
        .map_err(|_| bad(function, format!("{id:?} is not a stream id")))
}

/// A chat message from its stream entry.
pub(super) fn message(id: String, mut f: EntryFields) -> Result<Message, StoreError> {
    Ok(Message {
        user: self::id(f.function, f.required("u")?)?,
        text: text(f.function, f.required("text")?)?,
        at: f.time_or_id("at", &id)?,
        id,
    })
}

/// An event from its stream entry.
pub(super) fn event(id: String, mut f: EntryFields) -> Result<Event, StoreError> {
    let code = int(f.function, f.required("t")?)?;
    let kind = EventKind::from_code(code).ok_or_else(|| bad(f.function, code))?;
    let scheduled_end = match kind {
        EventKind::Timeout | EventKind::End => Some(int(f.function, f.required("end")?)?),
        _ => None,
    };
    let processed_at = match kind {
        EventKind::Timeout => Some(f.time_or_id("proc", &id)?),
        EventKind::Start | EventKind::End => Some(id_ms(f.function, &id)?),
        EventKind::Join | EventKind::Leave => None,
    };
    let reason = if kind == EventKind::End {
        let why = text(f.function, f.required("why")?)?;
        Some(EndReason::parse(&why).ok_or_else(|| bad(f.function, why))?)
    } else {
        None
    };
    let user = if kind.is_transition() {
        None
    } else {
        Some(self::id(f.function, f.required("u")?)?)
    };
    Ok(Event {
        user,
        kind,
        at: f.time_or_id("at", &id)?,
        scheduled_end,
        processed_at,
        reason,
        id,
    })
}

/// A start or an end from its entry in a partition's log of transitions.
pub(super) fn transition(
    id: String,
    mut f: EntryFields,
) -> Result<super::watch::Transition, StoreError> {
    let code = int(f.function, f.required("t")?)?;
    let kind = EventKind::from_code(code)
        .filter(|k| k.is_transition())
        .ok_or_else(|| bad(f.function, code))?;
    let reason = if kind == EventKind::End {
        let why = text(f.function, f.required("why")?)?;
        Some(EndReason::parse(&why).ok_or_else(|| bad(f.function, why))?)
    } else {
        None
    };
    Ok(super::watch::Transition {
        instance: InstanceId::new(
            self::id(f.function, f.required("m")?)?,
            self::id(f.function, f.required("o")?)?,
        ),
        kind,
        at: int(f.function, f.required("at")?)?,
        from: int(f.function, f.required("from")?)?,
        to: int(f.function, f.required("to")?)?,
        reason,
        id,
    })
}

/// Where a JOIN, LEAVE or POST happened, as the library answers it:
/// `"<order> <id>"`, or `"<order> <id> duplicate"` (a POST whose key was
/// used before).
pub(super) struct Placed {
    /// The instance's order.
    pub(super) order: Id,
    /// The event's or message's id.
    pub(super) id: String,
    /// Its time: the id's milliseconds.
    pub(super) at: Millis,
    /// A repeated key (POST, JOIN, LEAVE `ID`): nothing was stored.
    pub(super) duplicate: bool,
}

pub(super) fn placed(function: &'static str, value: Value) -> Result<Placed, StoreError> {
    let text = text(function, value)?;
    let mut parts = text.split(' ');
    let order = parts
        .next()
        .and_then(|o| o.parse::<Id>().ok())
        .ok_or_else(|| bad(function, format!("{text:?}")))?;
    let id = parts
        .next()
        .ok_or_else(|| bad(function, format!("{text:?}")))?
        .to_string();
    let duplicate = match parts.next() {
        None => false,
        Some("duplicate") => true,
        Some(_) => return Err(bad(function, format!("{text:?}"))),
    };
    Ok(Placed {
        order,
        at: id_ms(function, &id)?,
        id,
        duplicate,
    })
}

/// `{user, joined_at, ...}` pairs.
pub(super) fn pairs(function: &'static str, value: Value) -> Result<Vec<(Id, Millis)>, StoreError> {
    if let Value::BulkString(packed) = value {
        return packed_pairs(function, &packed);
    }
    let items = array(function, value)?;
    if items.len() % 2 != 0 {
        return Err(bad(
            function,
            "odd number of elements in a participant list",
        ));
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(user), Some(at)) = (items.next(), items.next()) {
        out.push((id(function, user)?, int(function, at)?));
    }
    Ok(out)
}

/// A packed participant list, `user joined_at user joined_at ...` (the
/// library's `packed` shape): one string split here rather than one reply
/// element per value.
fn packed_pairs(function: &'static str, packed: &[u8]) -> Result<Vec<(Id, Millis)>, StoreError> {
    if packed.is_empty() {
        return Ok(Vec::new());
    }
    let mut words = packed.split(|&b| b == b' ');
    let mut out = Vec::with_capacity(packed.len() / 24);
    while let Some(user) = words.next() {
        let at = words
            .next()
            .ok_or_else(|| bad(function, "a packed participant without a time"))?;
        out.push((packed_id(function, user)?, packed_int(function, at)?));
    }
    Ok(out)
}

/// An id in a packed reply.
fn packed_id(function: &str, word: &[u8]) -> Result<Id, StoreError> {
    digits(word)
        .and_then(|n| u64::try_from(n).ok())
        .filter(|id| (1..=MAX_ID).contains(id))
        .ok_or_else(|| {
            bad(
                function,
                format!("{:?} is not an id", String::from_utf8_lossy(word)),
            )
        })
}

/// An integer in a packed reply (a score may read `1.7e+12`).
fn packed_int(function: &str, word: &[u8]) -> Result<i64, StoreError> {
    match digits(word) {
        Some(n) => Ok(n),
        None => int(function, Value::BulkString(word.to_vec())),
    }
}

/// The bytes up to the next space of a packed reply, and `rest` moved past
/// that space.
fn word<'a>(function: &str, rest: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
    let end = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or_else(|| bad(function, "a packed message cut short"))?;
    let (word, after) = rest.split_at(end);
    *rest = &after[1..];
    Ok(word)
}

/// A packed page of chat messages (the library's `packed` shape): per
/// message `<id> <user> <at> <bytes> <text>`, `at` empty when the id
/// carries the time, the next message right after the text's `bytes`.
pub(super) fn packed_messages(
    function: &'static str,
    value: Value,
) -> Result<Vec<Message>, StoreError> {
    let packed = match value {
        Value::BulkString(packed) => packed,
        other => {
            return Err(bad(
                function,
                format!("expected packed messages, got {other:?}"),
            ));
        }
    };
    let mut rest = packed.as_slice();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let id = std::str::from_utf8(word(function, &mut rest)?)
            .map_err(|_| bad(function, "an id is not UTF-8"))?
            .to_owned();
        let user = packed_id(function, word(function, &mut rest)?)?;
        let at = match word(function, &mut rest)? {
            b"" => id_ms(function, &id)?,
            at => packed_int(function, at)?,
        };
        let bytes = usize::try_from(packed_int(function, word(function, &mut rest)?)?)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| bad(function, "a packed message's text is cut short"))?;
        let (text, after) = rest.split_at(bytes);
        let text = lossy(text.to_vec());
        rest = after;
        out.push(Message { id, user, text, at });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKED: &str =
        "1795341780000-1 2  9 Hello Ada1795341840000-0 1 1795341840007 14 Morning, Grace";

    #[test]
    fn packed_messages_split_at_the_lengths_they_give() {
        let messages = packed_messages("t", Value::BulkString(PACKED.into())).expect("parses");
        let read: Vec<(&str, u64, &str, i64)> = messages
            .iter()
            .map(|m| (m.id.as_str(), m.user, m.text.as_str(), m.at))
            .collect();
        assert_eq!(
            read,
            [
                ("1795341780000-1", 2, "Hello Ada", 1_795_341_780_000),
                ("1795341840000-0", 1, "Morning, Grace", 1_795_341_840_007),
            ]
        );
    }

    /// Every cut of a packed page is an error or the messages before the
    /// cut, never a panic; so is a length past the end.
    #[test]
    fn a_packed_page_cut_anywhere_is_an_error_not_a_panic() {
        let whole = PACKED.as_bytes();
        let boundary = PACKED.find("1795341840000-0").unwrap_or_default();
        for cut in 1..whole.len() {
            let result = packed_messages("t", Value::BulkString(whole[..cut].to_vec()));
            match result {
                Ok(messages) => assert_eq!((cut, messages.len()), (boundary, 1)),
                Err(err) => assert!(matches!(err, StoreError::Internal(_)), "{err:?}"),
            }
        }
        let too_long = "1-0 2  99 short".to_string();
        assert!(packed_messages("t", Value::BulkString(too_long.into())).is_err());
        for bad in ["1 x", "1", "0 5", "1 2 3"] {
            assert!(
                pairs("t", Value::BulkString(bad.into())).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(
            pairs(
                "t",
                Value::BulkString(b"3 1795341780000 1 1.7953417800e+12".to_vec())
            )
            .expect("pairs"),
            [(3, 1_795_341_780_000), (1, 1_795_341_780_000)]
        );
    }
}
