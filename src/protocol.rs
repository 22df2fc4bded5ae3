//! The line protocol of the control socket (docs/protocol.md): a request line
//! into a typed [`Request`], a result or an error into a reply line.
//!
//! Pure: no I/O, no Redis, no configuration. Everything here is a function
//! of its input, so it is tested with generated input (see the property
//! tests at the bottom): it never panics on any bytes, quoting round-trips,
//! and every malformed line yields `bad_request` with a message that says
//! what is wrong and where.
//!
//! A request is one line of tokens separated by spaces or tabs. A token is a
//! bare word or a double-quoted string with JSON escapes. Command names are
//! case-insensitive; keywords (`name`, `AFTER`, ...) too.

use serde_json::Value;

use crate::error::Code;

/// The largest id: 2^53-1.
pub const MAX_ID: u64 = (1 << 53) - 1;

/// A meeting reference: `M` (its active instance) or `M/O`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mref {
    /// The meeting.
    pub meeting: u64,
    /// The order, or `None` for "the active instance".
    pub order: Option<u64>,
}

impl std::fmt::Display for Mref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.order {
            Some(order) => write!(f, "{}/{}", self.meeting, order),
            None => write!(f, "{}", self.meeting),
        }
    }
}

/// A place in an instance's join order: after this user, who joined at
/// `at` (ms); without `at`, after the user where they are now (they must
/// still be in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The user.
    pub user: u64,
    /// When they joined (ms).
    pub at: Option<i64>,
}

/// Where ATTENDANCE goes on: after a meeting's row, or inside an
/// instance's participants after a join position. Written `<meeting>` or
/// `<meeting>/<order>:<user>@<ms>` (what `next` says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttendanceCursor {
    /// The meeting.
    pub meeting: u64,
    /// Inside its instance `order`, after the user who joined at `at`.
    pub within: Option<(u64, u64, i64)>,
}

impl std::fmt::Display for AttendanceCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.within {
            None => write!(f, "{}", self.meeting),
            Some((order, user, at)) => write!(f, "{}/{order}:{user}@{at}", self.meeting),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `PING`
    Ping,
    /// `HELP [command]`
    Help(Option<String>),
    /// `USER SET <user> name <s> age <n> gender <s> email <s>`
    UserSet {
        /// The user's id.
        id: u64,
        /// Display name.
        name: String,
        /// 0..=150.
        age: u8,
        /// As given.
        gender: String,
        /// As given (the store lower-cases it).
        email: String,
    },
    /// `USER GET <user>`
    UserGet(u64),
    /// `USERS [AFTER <user>] [LIMIT <n>]`
    Users {
        /// The `next` of the previous page.
        after: Option<u64>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `MEETING SET <meeting> title <s> description <s> public <bool>`
    MeetingSet {
        /// The meeting's id.
        id: u64,
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// Public or private.
        public: bool,
    },
    /// `MEETING GET <meeting>`
    MeetingGet(u64),
    /// `MEETINGS [AFTER <meeting>] [LIMIT <n>]`
    Meetings {
        /// The `next` of the previous page.
        after: Option<u64>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `AUDIENCE ADD <meeting> <email>...`
    AudienceAdd(u64, Vec<String>),
    /// `AUDIENCE DEL <meeting> <email>...`
    AudienceDel(u64, Vec<String>),
    /// `INSTANCE SET <meeting> <order> from <time> to <time> [FUTURE]`
    InstanceSet {
        /// The meeting.
        meeting: u64,
        /// The order id.
        order: u64,
        /// Start, ms since the epoch.
        from: i64,
        /// End, ms since the epoch.
        to: i64,
        /// Change only what is still to come (refused otherwise).
        future: bool,
    },
    /// `END <mref>`
    End(Mref),
    /// `TICK`
    Tick,
    /// `JOIN <user> <mref> [ID <key>]`
    Join(u64, Mref, Option<String>),
    /// `LEAVE <user> <mref> [ID <key>]`
    Leave(u64, Mref, Option<String>),
    /// `PARTICIPANTS <mref> [AFTER <user>[@<time>]] [LIMIT <n>]`
    Participants {
        /// Which instance.
        mref: Mref,
        /// The last user of the previous page, with their join time (the
        /// position, which holds after they left) or without (they must
        /// still be in).
        after: Option<Position>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `ACTIVE [AFTER <meeting>] [LIMIT <n>]`
    Active {
        /// The `next` of the previous page.
        after: Option<u64>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `ATTENDANCE [AFTER <cursor>] [LIMIT <n>]`
    Attendance {
        /// The `next` of the previous page.
        after: Option<AttendanceCursor>,
        /// Participants per page.
        limit: Option<u64>,
    },
    /// `POST <user> <mref> <text> [ID <key>]`
    Post {
        /// Who posts.
        user: u64,
        /// Where.
        mref: Mref,
        /// What (tabs and newlines allowed, no other control character).
        text: String,
        /// The client's key for the message: a repeat stores nothing.
        key: Option<String>,
    },
    /// `MESSAGES <mref> [USER <user>] [AFTER <id>] [LIMIT <n>]`
    Messages {
        /// Which instance.
        mref: Mref,
        /// Only this user's messages.
        user: Option<u64>,
        /// The `next` of the previous page.
        after: Option<String>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `EVENTS <mref> [AFTER <id>] [LIMIT <n>]`
    Events {
        /// Which instance.
        mref: Mref,
        /// The `next` of the previous page.
        after: Option<String>,
        /// Page size.
        limit: Option<u64>,
    },
    /// `REPORT <mref> [AFTER <user>] [LIMIT <n>]`
    Report(ReportPage),
    /// `WATCH <mref> [AFTER <id>]`
    Watch {
        /// Which instance.
        mref: Mref,
        /// Replay what came after this id first.
        after: Option<String>,
    },
    /// `WATCH ACTIVE`
    WatchActive,
    /// `UNWATCH`
    Unwatch,
    /// `STATS`
    Stats,
    /// `QUIT`
    Quit,
}

/// A page of REPORT: which instance, after which user, how many rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPage {
    /// Which instance.
    pub mref: Mref,
    /// The `next` of the previous page: the last user it held.
    pub after: Option<u64>,
    /// Page size.
    pub limit: Option<u64>,
}

/// One command of the protocol, for HELP and for clients.
#[derive(Debug, Clone, Copy)]
pub struct CommandInfo {
    /// The name as typed (`USER SET`).
    pub name: &'static str,
    /// Its syntax.
    pub syntax: &'static str,
    /// Whether only admins may use it.
    pub admin: bool,
    /// What it does, in a line.
    pub summary: &'static str,
}

/// Every command, in the order of docs/protocol.md (a test holds the two
/// together).
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        name: "PING",
        syntax: "PING",
        admin: false,
        summary: "answers \"PONG\"",
    },
    CommandInfo {
        name: "HELP",
        syntax: "HELP [command]",
        admin: false,
        summary: "the command list, or one command's syntax",
    },
    CommandInfo {
        name: "USER SET",
        syntax: "USER SET <user> name <s> age <n> gender <s> email <s>",
        admin: true,
        summary: "create or update a user",
    },
    CommandInfo {
        name: "USER GET",
        syntax: "USER GET <user>",
        admin: false,
        summary: "read a user",
    },
    CommandInfo {
        name: "USERS",
        syntax: "USERS [AFTER <user>] [LIMIT <n>]",
        admin: false,
        summary: "every user, by id, a page at a time",
    },
    CommandInfo {
        name: "MEETING SET",
        syntax: "MEETING SET <meeting> title <s> description <s> public <true/false>",
        admin: true,
        summary: "create or update a meeting",
    },
    CommandInfo {
        name: "MEETING GET",
        syntax: "MEETING GET <meeting>",
        admin: false,
        summary: "a meeting, its audience and its instances with states",
    },
    CommandInfo {
        name: "MEETINGS",
        syntax: "MEETINGS [AFTER <meeting>] [LIMIT <n>]",
        admin: false,
        summary: "every meeting, by id, with its instance count and running instance, a page at a time",
    },
    CommandInfo {
        name: "AUDIENCE ADD",
        syntax: "AUDIENCE ADD <meeting> <email>...",
        admin: true,
        summary: "allow e-mails into a private meeting",
    },
    CommandInfo {
        name: "AUDIENCE DEL",
        syntax: "AUDIENCE DEL <meeting> <email>...",
        admin: true,
        summary: "remove e-mails from a meeting's audience",
    },
    CommandInfo {
        name: "INSTANCE SET",
        syntax: "INSTANCE SET <meeting> <order> from <time> to <time> [FUTURE]",
        admin: true,
        summary: "schedule an instance or move its window (RFC 3339 times); with FUTURE, only what is still to come",
    },
    CommandInfo {
        name: "END",
        syntax: "END <mref>",
        admin: true,
        summary: "end an active instance now; everybody in it times out",
    },
    CommandInfo {
        name: "TICK",
        syntax: "TICK",
        admin: true,
        summary: "apply every transition due now",
    },
    CommandInfo {
        name: "JOIN",
        syntax: "JOIN <user> <mref> [ID <key>]",
        admin: false,
        summary: "a user joins an active instance",
    },
    CommandInfo {
        name: "LEAVE",
        syntax: "LEAVE <user> <mref> [ID <key>]",
        admin: false,
        summary: "a user leaves an instance",
    },
    CommandInfo {
        name: "PARTICIPANTS",
        syntax: "PARTICIPANTS <mref> [AFTER <user>[@<time>]] [LIMIT <n>]",
        admin: false,
        summary: "who is in an instance, in join order",
    },
    CommandInfo {
        name: "ACTIVE",
        syntax: "ACTIVE [AFTER <meeting>] [LIMIT <n>]",
        admin: false,
        summary: "every active instance with its meeting and head count, a page at a time",
    },
    CommandInfo {
        name: "ATTENDANCE",
        syntax: "ATTENDANCE [AFTER <cursor>] [LIMIT <n>]",
        admin: false,
        summary: "for each active instance, when each participant joined, a page at a time",
    },
    CommandInfo {
        name: "POST",
        syntax: "POST <user> <mref> <text> [ID <key>]",
        admin: false,
        summary: "post a chat message (with ID, a repeat of the key stores nothing)",
    },
    CommandInfo {
        name: "MESSAGES",
        syntax: "MESSAGES <mref> [USER <user>] [AFTER <id>] [LIMIT <n>]",
        admin: false,
        summary: "an instance's chat, oldest first, a page at a time",
    },
    CommandInfo {
        name: "EVENTS",
        syntax: "EVENTS <mref> [AFTER <id>] [LIMIT <n>]",
        admin: false,
        summary: "an instance's event log, a page at a time",
    },
    CommandInfo {
        name: "REPORT",
        syntax: "REPORT <mref> [AFTER <user>] [LIMIT <n>]",
        admin: false,
        summary: "an instance's attendance: per user first join, last leave, seconds present, joins, messages",
    },
    CommandInfo {
        name: "WATCH",
        syntax: "WATCH <mref> [AFTER <id>]",
        admin: false,
        summary: "stream an instance's events and chat as they happen (from after <id> first); \
                  WATCH ACTIVE: what runs, then every start and end of the store",
    },
    CommandInfo {
        name: "UNWATCH",
        syntax: "UNWATCH",
        admin: false,
        summary: "stop watching; back to requests",
    },
    CommandInfo {
        name: "STATS",
        syntax: "STATS",
        admin: false,
        summary: "the daemon's counters",
    },
    CommandInfo {
        name: "QUIT",
        syntax: "QUIT",
        admin: false,
        summary: "close the connection",
    },
];

/// `<mref>` is `M` (the meeting's active instance) or `M/O`; times are RFC
/// 3339; ids are positive integers up to 2^53-1.
pub const NOTATION: &str =
    "<mref> is M (the meeting's active instance) or M/O; times are RFC 3339; ids are 1..2^53-1";

/// HELP's result: with no command, `{"commands":[{"command","syntax",
/// "admin","summary"}...],"notation"}`; with one, that command's record;
/// with the first word of several (`USER`), the list of those. The daemon
/// answers HELP with it, and meetingctl prints it without asking one. An
/// unknown name is the error's message (`unknown_command`).
pub fn help(command: Option<&str>) -> Result<Value, String> {
    let describe = |c: &CommandInfo| serde_json::json!({"command": c.name, "syntax": c.syntax, "admin": c.admin, "summary": c.summary});
    let Some(name) = command else {
        return Ok(serde_json::json!({
            "commands": COMMANDS.iter().map(describe).collect::<Vec<_>>(),
            "notation": NOTATION,
        }));
    };
    if let Some(c) = info(name) {
        return Ok(describe(c));
    }
    // `HELP USER` lists USER SET and USER GET
    let mut family: Vec<Value> = COMMANDS
        .iter()
        .filter(|c| {
            c.name
                .split(' ')
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case(name))
        })
        .map(describe)
        .collect();
    match family.len() {
        0 => Err(format!("no command {name:?}; HELP lists the commands")),
        1 => Ok(family.remove(0)),
        _ => Ok(serde_json::json!({"commands": family, "notation": NOTATION})),
    }
}

/// A request the protocol cannot accept: the reply's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// `bad_request` or `unknown_command`.
    pub code: Code,
    /// What is wrong, and where.
    pub message: String,
}

impl ParseError {
    fn bad(message: impl Into<String>) -> Self {
        ParseError {
            code: Code::BadRequest,
            message: message.into(),
        }
    }
}

impl Request {
    /// The command's name as counted in STATS (`USER SET`, `JOIN`...).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Ping => "PING",
            Request::Help(_) => "HELP",
            Request::UserSet { .. } => "USER SET",
            Request::UserGet(_) => "USER GET",
            Request::Users { .. } => "USERS",
            Request::MeetingSet { .. } => "MEETING SET",
            Request::MeetingGet(_) => "MEETING GET",
            Request::Meetings { .. } => "MEETINGS",
            Request::AudienceAdd(..) => "AUDIENCE ADD",
            Request::AudienceDel(..) => "AUDIENCE DEL",
            Request::InstanceSet { .. } => "INSTANCE SET",
            Request::End(_) => "END",
            Request::Tick => "TICK",
            Request::Join(..) => "JOIN",
            Request::Leave(..) => "LEAVE",
            Request::Participants { .. } => "PARTICIPANTS",
            Request::Active { .. } => "ACTIVE",
            Request::Attendance { .. } => "ATTENDANCE",
            Request::Post { .. } => "POST",
            Request::Messages { .. } => "MESSAGES",
            Request::Events { .. } => "EVENTS",
            Request::Report(_) => "REPORT",
            Request::Watch { .. } | Request::WatchActive => "WATCH",
            Request::Unwatch => "UNWATCH",
            Request::Stats => "STATS",
            Request::Quit => "QUIT",
        }
    }

    /// Whether only admins may send it (the `*` of docs/protocol.md).
    pub fn is_admin(&self) -> bool {
        info(self.name()).is_some_and(|c| c.admin)
    }

    /// Whether its reply may be big (a page, or a list of every running
    /// instance): the daemon holds one such reply per connection at a time.
    pub fn is_big(&self) -> bool {
        matches!(
            self,
            Request::Participants { .. }
                | Request::Messages { .. }
                | Request::Events { .. }
                | Request::Report(_)
                | Request::Active { .. }
                | Request::Attendance { .. }
                | Request::MeetingGet(_)
                | Request::Meetings { .. }
                | Request::Users { .. }
        )
    }
}

/// The entry of [`COMMANDS`] named `name` (case-insensitive).
pub fn info(name: &str) -> Option<&'static CommandInfo> {
    COMMANDS.iter().find(|c| c.name.eq_ignore_ascii_case(name))
}

/// Split a line into tokens: bare words, or double-quoted strings with JSON
/// escapes. A trailing `\r` (of `\r\n`) is ignored.
pub fn tokenize(line: &[u8]) -> Result<Vec<String>, ParseError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).map_err(|e| {
        ParseError::bad(format!(
            "the request is not valid UTF-8 (at byte {})",
            e.valid_up_to() + 1
        ))
    })?;
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                let start = i;
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(ParseError::bad(format!(
                                "unterminated string starting at byte {}",
                                start + 1
                            )));
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                let quoted = &text[start..=i];
                let token: String = serde_json::from_str(quoted).map_err(|e| {
                    ParseError::bad(format!(
                        "bad string starting at byte {}: {}",
                        start + 1,
                        json_problem(&e)
                    ))
                })?;
                i += 1;
                if i < bytes.len() && !matches!(bytes[i], b' ' | b'\t') {
                    return Err(ParseError::bad(format!(
                        "expected a space after the string ending at byte {i}"
                    )));
                }
                tokens.push(token);
            }
            _ => {
                let start = i;
                while i < bytes.len() && !matches!(bytes[i], b' ' | b'\t') {
                    if bytes[i] == b'"' {
                        return Err(ParseError::bad(format!(
                            "unexpected quote inside a word at byte {}",
                            i + 1
                        )));
                    }
                    if bytes[i].is_ascii_control() {
                        return Err(ParseError::bad(format!(
                            "control character 0x{:02x} at byte {}",
                            bytes[i],
                            i + 1
                        )));
                    }
                    i += 1;
                }
                tokens.push(text[start..i].to_string());
            }
        }
    }
    Ok(tokens)
}

/// serde_json's complaint without its line/column suffix (ours is better).
fn json_problem(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

/// Write a token so that [`tokenize`] reads it back unchanged: bare when it
/// is a plain word, else a JSON string.
pub fn quote(token: &str) -> String {
    let bare = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    if bare {
        token.to_string()
    } else {
        Value::String(token.to_string()).to_string()
    }
}

/// A whole request line from tokens (the client's side of [`parse`]).
pub fn request_line(tokens: &[&str]) -> String {
    let mut line = tokens
        .iter()
        .map(|t| quote(t))
        .collect::<Vec<_>>()
        .join(" ");
    line.push('\n');
    line
}

/// Parse one request line.
pub fn parse(line: &[u8]) -> Result<Request, ParseError> {
    let tokens = tokenize(line)?;
    let Some(first) = tokens.first() else {
        return Err(ParseError::bad("empty request: send a command, or HELP"));
    };
    let command = first.to_ascii_uppercase();
    let mut args = Args {
        command: command.clone(),
        tokens: &tokens,
        pos: 1,
    };
    let request = match command.as_str() {
        "PING" => Request::Ping,
        "HELP" => Request::Help(args.rest_joined()),
        "USER" => match args.subcommand(&["SET", "GET"])? {
            "SET" => {
                args.command = "USER SET".into();
                let id = args.id("<user>")?;
                let mut fields = args.fields(&["name", "age", "gender", "email"])?;
                let name = args.name_value("name", fields.take("name"))?;
                let age_text = fields.take("age");
                let age = age_text
                    .parse::<u8>()
                    .ok()
                    .filter(|a| *a <= 150)
                    .ok_or_else(|| {
                        args.bad(format!("age must be 0..150, got {}", shown(&age_text)))
                    })?;
                let gender = args.name_value("gender", fields.take("gender"))?;
                let email = args.email(fields.take("email"))?;
                Request::UserSet {
                    id,
                    name,
                    age,
                    gender,
                    email,
                }
            }
            _ => {
                args.command = "USER GET".into();
                Request::UserGet(args.id("<user>")?)
            }
        },
        "MEETING" => match args.subcommand(&["SET", "GET"])? {
            "SET" => {
                args.command = "MEETING SET".into();
                let id = args.id("<meeting>")?;
                let mut fields = args.fields(&["title", "description", "public"])?;
                let title = args.name_value("title", fields.take("title"))?;
                let description = fields.take("description");
                if description
                    .chars()
                    .any(|c| c.is_control() && c != '\n' && c != '\t')
                {
                    return Err(args.bad("description must not contain control characters"));
                }
                let public = match fields.take("public").to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(args.bad(format!(
                            "public must be true or false, got {}",
                            shown(other)
                        )));
                    }
                };
                Request::MeetingSet {
                    id,
                    title,
                    description,
                    public,
                }
            }
            _ => {
                args.command = "MEETING GET".into();
                Request::MeetingGet(args.id("<meeting>")?)
            }
        },
        "USERS" | "MEETINGS" => {
            let what = if command == "USERS" {
                "AFTER <user>"
            } else {
                "AFTER <meeting>"
            };
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options
                .take("AFTER")
                .map(|v| args.id_value(what, &v))
                .transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            if command == "USERS" {
                Request::Users { after, limit }
            } else {
                Request::Meetings { after, limit }
            }
        }
        "AUDIENCE" => {
            let sub = args.subcommand(&["ADD", "DEL"])?;
            args.command = format!("AUDIENCE {sub}");
            let meeting = args.id("<meeting>")?;
            let mut emails = Vec::new();
            while let Some(token) = args.next() {
                emails.push(args.email(token.to_string())?);
            }
            if emails.is_empty() {
                return Err(args.bad("expected at least one <email>"));
            }
            if sub == "ADD" {
                Request::AudienceAdd(meeting, emails)
            } else {
                Request::AudienceDel(meeting, emails)
            }
        }
        "INSTANCE" => {
            args.subcommand(&["SET"])?;
            args.command = "INSTANCE SET".into();
            let meeting = args.id("<meeting>")?;
            let order = args.id("<order>")?;
            let future = args.trailing_flag("FUTURE");
            let mut fields = args.fields(&["from", "to"])?;
            let from = args.time("from", &fields.take("from"))?;
            let to = args.time("to", &fields.take("to"))?;
            if to <= from {
                return Err(args.bad("to must be after from"));
            }
            Request::InstanceSet {
                meeting,
                order,
                from,
                to,
                future,
            }
        }
        "END" => Request::End(args.mref()?),
        "TICK" => Request::Tick,
        "JOIN" | "LEAVE" => {
            let user = args.id("<user>")?;
            let mref = args.mref()?;
            let mut options = args.options(&["ID"])?;
            let key = options.take("ID").map(|v| args.post_key(v)).transpose()?;
            if command == "JOIN" {
                Request::Join(user, mref, key)
            } else {
                Request::Leave(user, mref, key)
            }
        }
        "PARTICIPANTS" => {
            let mref = args.mref()?;
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options
                .take("AFTER")
                .map(|v| args.position(&v))
                .transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Participants { mref, after, limit }
        }
        "ACTIVE" => {
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options
                .take("AFTER")
                .map(|v| args.id_value("AFTER <meeting>", &v))
                .transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Active { after, limit }
        }
        "ATTENDANCE" => {
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options
                .take("AFTER")
                .map(|v| args.attendance_cursor(&v))
                .transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Attendance { after, limit }
        }
        "POST" => {
            let user = args.id("<user>")?;
            let mref = args.mref()?;
            let text = args.required("<text>")?.to_string();
            if text.is_empty() {
                return Err(args.bad("<text> must not be empty"));
            }
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                return Err(args
                    .bad("<text> must not contain control characters other than tab and newline"));
            }
            let mut options = args.options(&["ID"])?;
            let key = options.take("ID").map(|v| args.post_key(v)).transpose()?;
            Request::Post {
                user,
                mref,
                text,
                key,
            }
        }
        "MESSAGES" => {
            let mref = args.mref()?;
            let mut options = args.options(&["USER", "AFTER", "LIMIT"])?;
            let user = options
                .take("USER")
                .map(|v| args.id_value("USER <user>", &v))
                .transpose()?;
            let after = options.take("AFTER").map(|v| args.cursor(v)).transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Messages {
                mref,
                user,
                after,
                limit,
            }
        }
        "EVENTS" => {
            let mref = args.mref()?;
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options.take("AFTER").map(|v| args.cursor(v)).transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Events { mref, after, limit }
        }
        "REPORT" => {
            let mref = args.mref()?;
            let mut options = args.options(&["AFTER", "LIMIT"])?;
            let after = options
                .take("AFTER")
                .map(|v| args.id_value("AFTER <user>", &v))
                .transpose()?;
            let limit = options.take("LIMIT").map(|v| args.limit(&v)).transpose()?;
            Request::Report(ReportPage { mref, after, limit })
        }
        "WATCH"
            if args
                .peek()
                .is_some_and(|t| t.eq_ignore_ascii_case("ACTIVE")) =>
        {
            args.next();
            if args.peek().is_some_and(|t| t.eq_ignore_ascii_case("AFTER")) {
                return Err(args
                    .bad("WATCH ACTIVE does not resume (no AFTER): it starts with what runs now"));
            }
            Request::WatchActive
        }
        "WATCH" => {
            let mref = args.mref()?;
            let mut options = args.options(&["AFTER"])?;
            let after = options.take("AFTER").map(|v| args.cursor(v)).transpose()?;
            Request::Watch { mref, after }
        }
        "UNWATCH" => Request::Unwatch,
        "STATS" => Request::Stats,
        "QUIT" => Request::Quit,
        _ => {
            return Err(ParseError {
                code: Code::UnknownCommand,
                message: format!("unknown command {}; HELP lists the commands", shown(first)),
            });
        }
    };
    args.finish()?;
    Ok(request)
}

/// A token as shown in a message: quoted, at most 40 characters.
fn shown(token: &str) -> String {
    let mut s: String = token.chars().take(40).collect();
    if s.len() < token.len() {
        s.push_str("...");
    }
    Value::String(s).to_string()
}

/// A cursor over a request's arguments, for messages that say where.
struct Args<'a> {
    command: String,
    tokens: &'a [String],
    pos: usize,
}

/// `keyword value` pairs, each keyword once.
struct Pairs(Vec<(String, String)>);

impl Pairs {
    /// The value of a required field (present: `fields` checked that).
    fn take(&mut self, name: &str) -> String {
        self.0
            .iter_mut()
            .find(|(k, _)| k == name)
            .map(|(_, v)| std::mem::take(v))
            .unwrap_or_default()
    }
}

/// Optional `KEYWORD value` pairs.
struct Options(Vec<(String, String)>);

impl Options {
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.0.iter().position(|(k, _)| k == name)?;
        Some(self.0.remove(at).1)
    }
}

impl<'a> Args<'a> {
    fn bad(&self, what: impl std::fmt::Display) -> ParseError {
        ParseError::bad(format!("{}: {what}", self.command))
    }

    fn next(&mut self) -> Option<&'a str> {
        let token = self.tokens.get(self.pos)?;
        self.pos += 1;
        Some(token)
    }

    fn peek(&self) -> Option<&'a str> {
        self.tokens.get(self.pos).map(String::as_str)
    }

    /// `<user>` or `<user>@<time>` (PARTICIPANTS' AFTER).
    fn position(&self, value: &str) -> Result<Position, ParseError> {
        match value.split_once('@') {
            Some((user, at)) => Ok(Position {
                user: self.id_value("AFTER <user>", user)?,
                at: Some(self.time("AFTER <user>@<time>", at)?),
            }),
            None => Ok(Position {
                user: self.id_value("AFTER <user>", value)?,
                at: None,
            }),
        }
    }

    /// ATTENDANCE's cursor, as its `next` writes it.
    fn attendance_cursor(&self, value: &str) -> Result<AttendanceCursor, ParseError> {
        let bad = || {
            self.bad(format!(
                "AFTER must be the `next` of a page, <meeting> or <meeting>/<order>:<user>@<ms>, got {}",
                shown(value)
            ))
        };
        let Some((meeting, rest)) = value.split_once('/') else {
            return Ok(AttendanceCursor {
                meeting: self.id_value("AFTER <meeting>", value)?,
                within: None,
            });
        };
        let (order, rest) = rest.split_once(':').ok_or_else(bad)?;
        let (user, at) = rest.split_once('@').ok_or_else(bad)?;
        let at = Some(at)
            .filter(|at| is_digits(at, 15) && (at.len() == 1 || !at.starts_with('0')))
            .and_then(|at| at.parse::<i64>().ok())
            .ok_or_else(bad)?;
        Ok(AttendanceCursor {
            meeting: self.id_value("AFTER <meeting>", meeting)?,
            within: Some((
                self.id_value("AFTER <order>", order)?,
                self.id_value("AFTER <user>", user)?,
                at,
            )),
        })
    }

    fn required(&mut self, what: &str) -> Result<&'a str, ParseError> {
        let at = self.pos;
        self.next()
            .ok_or_else(|| self.bad(format!("missing {what} (argument {at})")))
    }

    fn subcommand(&mut self, allowed: &[&'static str]) -> Result<&'static str, ParseError> {
        let expected = allowed.join(" or ");
        let token = self.required(&expected)?;
        allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(token))
            .copied()
            .ok_or_else(|| self.bad(format!("expected {expected}, got {}", shown(token))))
    }

    fn id_value(&self, what: &str, token: &str) -> Result<u64, ParseError> {
        let valid = !token.is_empty()
            && token.bytes().all(|b| b.is_ascii_digit())
            && !token.starts_with('0');
        token
            .parse::<u64>()
            .ok()
            .filter(|id| valid && (1..=MAX_ID).contains(id))
            .ok_or_else(|| {
                self.bad(format!(
                    "{what} must be a positive integer up to 2^53-1, got {} (argument {})",
                    shown(token),
                    self.pos - 1
                ))
            })
    }

    fn id(&mut self, what: &str) -> Result<u64, ParseError> {
        let token = self.required(what)?;
        self.id_value(what, token)
    }

    fn mref(&mut self) -> Result<Mref, ParseError> {
        let token = self.required("<mref>")?;
        match token.split_once('/') {
            Some((meeting, order)) => Ok(Mref {
                meeting: self.id_value("<mref> meeting", meeting)?,
                order: Some(self.id_value("<mref> order", order)?),
            }),
            None => Ok(Mref {
                meeting: self.id_value("<mref>", token)?,
                order: None,
            }),
        }
    }

    /// `keyword value` pairs in any order, every keyword exactly once.
    fn fields(&mut self, names: &[&str]) -> Result<Pairs, ParseError> {
        let pairs = self.keyword_pairs(names, str::to_ascii_lowercase)?;
        for name in names {
            if !pairs.iter().any(|(k, _)| k == name) {
                return Err(self.bad(format!("missing {name}")));
            }
        }
        Ok(Pairs(pairs))
    }

    /// Optional `KEYWORD value` pairs in any order, each at most once.
    fn options(&mut self, names: &[&str]) -> Result<Options, ParseError> {
        Ok(Options(self.keyword_pairs(names, str::to_ascii_uppercase)?))
    }

    /// The rest of the request as `keyword value` pairs, keywords among
    /// `names` (compared after `case`), none twice.
    fn keyword_pairs(
        &mut self,
        names: &[&str],
        case: fn(&str) -> String,
    ) -> Result<Vec<(String, String)>, ParseError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        while let Some(keyword) = self.next() {
            let key = case(keyword);
            if !names.contains(&key.as_str()) {
                return Err(self.bad(format!(
                    "unexpected {} (argument {}); expected {}",
                    shown(keyword),
                    self.pos - 1,
                    names.join(", ")
                )));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(self.bad(format!("{key} given twice (argument {})", self.pos - 1)));
            }
            let value = self.required(&format!("a value after {key}"))?;
            pairs.push((key, value.to_string()));
        }
        Ok(pairs)
    }

    fn name_value(&self, what: &str, value: String) -> Result<String, ParseError> {
        if value.is_empty() {
            return Err(self.bad(format!("{what} must not be empty")));
        }
        if value.chars().any(char::is_control) {
            return Err(self.bad(format!("{what} must not contain control characters")));
        }
        if value.len() > 1024 {
            return Err(self.bad(format!("{what} is longer than 1024 bytes")));
        }
        Ok(value)
    }

    fn email(&self, value: String) -> Result<String, ParseError> {
        let ok = value.len() <= 254
            && value.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty() && !domain.is_empty() && !domain.contains('@')
            })
            && !value.chars().any(|c| c.is_whitespace() || c.is_control());
        if !ok {
            return Err(self.bad(format!(
                "email must look like name@domain, got {}",
                shown(&value)
            )));
        }
        Ok(value)
    }

    fn time(&self, what: &str, value: &str) -> Result<i64, ParseError> {
        chrono::DateTime::parse_from_rfc3339(value)
            .map(|t| t.timestamp_millis())
            .ok()
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| {
                self.bad(format!(
                    "{what} must be an RFC 3339 time like 2026-11-22T10:00:00Z, got {}",
                    shown(value)
                ))
            })
    }

    fn limit(&self, value: &str) -> Result<u64, ParseError> {
        value
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                self.bad(format!(
                    "LIMIT must be a positive integer, got {}",
                    shown(value)
                ))
            })
    }

    /// A stream id: `ms-seq` or `ms`, each part at most 2^64-1 (as Redis
    /// takes them).
    fn cursor(&self, value: String) -> Result<String, ParseError> {
        let part = |s: &str| is_digits(s, 20) && s.parse::<u64>().is_ok();
        let valid = match value.split_once('-') {
            Some((ms, seq)) => part(ms) && part(seq),
            None => part(&value),
        };
        if !valid {
            return Err(self.bad(format!(
                "AFTER must be an id like 1795341600000-0 (each part at most 2^64-1), got {}",
                shown(&value)
            )));
        }
        Ok(value)
    }

    /// A POST's key: 1-64 bytes of `A-Za-z0-9._:-`.
    fn post_key(&self, value: String) -> Result<String, ParseError> {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        if !valid {
            return Err(self.bad(format!(
                "ID must be 1-64 bytes of A-Za-z0-9._:-, got {}",
                shown(&value)
            )));
        }
        Ok(value)
    }

    /// Whether the request ends in `flag` after an even number of tokens
    /// (keyword-value pairs) from here; if so, it is taken off the end.
    fn trailing_flag(&mut self, flag: &str) -> bool {
        let rest = self.tokens.len().saturating_sub(self.pos);
        let found = rest % 2 == 1
            && self
                .tokens
                .last()
                .is_some_and(|last| last.eq_ignore_ascii_case(flag));
        if found {
            self.tokens = &self.tokens[..self.tokens.len() - 1];
        }
        found
    }

    fn rest_joined(&mut self) -> Option<String> {
        let rest: Vec<&str> = std::iter::from_fn(|| self.next()).collect();
        (!rest.is_empty()).then(|| rest.join(" "))
    }

    fn finish(&self) -> Result<(), ParseError> {
        match self.tokens.get(self.pos) {
            None => Ok(()),
            Some(extra) => Err(self.bad(format!(
                "unexpected extra argument {} (argument {})",
                shown(extra),
                self.pos
            ))),
        }
    }
}

fn is_digits(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
}

/// `{"ok":true,"result":<json>}` and a newline, around a result already
/// written as JSON text.
pub fn ok_line(json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + 24);
    line.extend_from_slice(b"{\"ok\":true,\"result\":");
    line.extend_from_slice(json);
    line.extend_from_slice(b"}\n");
    line
}

/// `{"ok":false,"error":{"code":...,"message":...}}` and a newline.
pub fn error_line(code: Code, message: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(64 + message.len());
    line.extend_from_slice(b"{\"ok\":false,\"error\":{\"code\":\"");
    line.extend_from_slice(code.as_str().as_bytes());
    line.extend_from_slice(b"\",\"message\":");
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut line, message);
    line.extend_from_slice(b"}}\n");
    line
}

/// A watched entry's line: `{"event":<json>}` and a newline, around the
/// entry already written as JSON text.
pub fn event_line(json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + 11);
    line.extend_from_slice(b"{\"event\":");
    line.extend_from_slice(json);
    line.extend_from_slice(b"}\n");
    line
}

/// The line that tells a watcher it fell behind: `{"dropped":N,"resume":id}`
/// (`null` for WATCH ACTIVE, which does not resume) and a newline.
pub fn dropped_line(count: u64, resume: Option<&str>) -> Vec<u8> {
    let mut line = format!("{{\"dropped\":{count},\"resume\":").into_bytes();
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut line, &resume);
    line.extend_from_slice(b"}\n");
    line
}

/// The line that tells a watcher the daemon is stopping (draining):
/// `{"closing":"shutdown","resume":id}` and a newline. On the daemon that
/// serves next, `WATCH ... AFTER <resume>` goes on where it was (`null`
/// for WATCH ACTIVE: watch again).
pub fn closing_line(resume: Option<&str>) -> Vec<u8> {
    let mut line = b"{\"closing\":\"shutdown\",\"resume\":".to_vec();
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut line, &resume);
    line.extend_from_slice(b"}\n");
    line
}

/// A time as replies show it: UTC with milliseconds.
pub fn format_time(ms: i64) -> String {
    Time(ms).to_string()
}

/// A time (ms since the epoch) as replies show it, RFC 3339 in UTC with
/// milliseconds (`2026-11-22T10:00:00.000Z`), written without allocating:
/// replies carry many of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub i64);

impl Time {
    /// The 24 bytes of a time of years 0000-9999 (`None` outside them).
    fn text(self) -> Option<[u8; 24]> {
        let ms = u64::try_from(self.0).ok()?;
        let days = ms / 86_400_000;
        let in_day = ms % 86_400_000;
        // the civil date of a day count (Howard Hinnant's days_from_civil,
        // inverted), for days since 1970-01-01 >= 0
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        if year > 9999 {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut n: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1000 % 60);
        put(20, 3, in_day % 1000);
        Some(out)
    }
}

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.text() {
            // the 24 bytes are ASCII digits and separators
            Some(text) => f.write_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl serde::Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.text() {
            Some(text) => serializer.serialize_str(std::str::from_utf8(&text).unwrap_or_default()),
            None => serializer.serialize_i64(self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bad(line: &str) -> ParseError {
        match parse(line.as_bytes()) {
            Ok(request) => panic!("{line:?} parsed as {request:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn commands_parse() {
        assert_eq!(parse(b"ping\r"), Ok(Request::Ping));
        assert_eq!(
            parse(b"join 7 42/3"),
            Ok(Request::Join(
                7,
                Mref {
                    meeting: 42,
                    order: Some(3)
                },
                None
            ))
        );
        assert_eq!(
            parse(br#"USER SET 1 name "Ada L" age 36 gender f email a@x"#),
            Ok(Request::UserSet {
                id: 1,
                name: "Ada L".into(),
                age: 36,
                gender: "f".into(),
                email: "a@x".into()
            })
        );
        assert_eq!(
            parse(b"messages 42 user 7 limit 50 after 1795341600000-3"),
            Ok(Request::Messages {
                mref: Mref {
                    meeting: 42,
                    order: None
                },
                user: Some(7),
                after: Some("1795341600000-3".into()),
                limit: Some(50)
            })
        );
        assert_eq!(
            parse(b"watch 42/3 after 1795341600000-3"),
            Ok(Request::Watch {
                mref: Mref {
                    meeting: 42,
                    order: Some(3)
                },
                after: Some("1795341600000-3".into()),
            })
        );
        assert_eq!(
            parse(b"report 42/3 after 7 limit 2"),
            Ok(Request::Report(ReportPage {
                mref: Mref {
                    meeting: 42,
                    order: Some(3)
                },
                after: Some(7),
                limit: Some(2),
            }))
        );
        assert_eq!(
            parse(b"REPORT 42"),
            Ok(Request::Report(ReportPage {
                mref: Mref {
                    meeting: 42,
                    order: None
                },
                after: None,
                limit: None,
            }))
        );
        assert_eq!(parse(b"UNWATCH"), Ok(Request::Unwatch));
        assert_eq!(
            parse(br#"POST 1 2/3 "say \"hi\"\n""#),
            Ok(Request::Post {
                user: 1,
                mref: Mref {
                    meeting: 2,
                    order: Some(3)
                },
                text: "say \"hi\"\n".into(),
                key: None,
            })
        );
        assert_eq!(
            parse(b"POST 1 2 hello id k-1:a.b"),
            Ok(Request::Post {
                user: 1,
                mref: Mref {
                    meeting: 2,
                    order: None
                },
                text: "hello".into(),
                key: Some("k-1:a.b".into()),
            })
        );
    }

    #[test]
    fn instance_times_are_utc_milliseconds() {
        let Ok(Request::InstanceSet { from, to, .. }) =
            parse(b"INSTANCE SET 1 2 from 2026-11-22T10:00:00Z to 2026-11-22T12:00:00+01:00")
        else {
            panic!("instance set parses")
        };
        assert_eq!(from, 1_795_341_600_000);
        assert_eq!(to, 1_795_341_600_000 + 3_600_000);
        assert_eq!(format_time(from), "2026-11-22T10:00:00.000Z");
    }

    #[test]
    fn malformed_lines_say_what_and_where() {
        let cases = [
            ("JOIN 0 1", "argument 1"),
            ("JOIN -1 1", "argument 1"),
            ("JOIN 18446744073709551616 1", "argument 1"),
            ("JOIN 9007199254740992 1", "2^53-1"),
            ("JOIN 1 3/x", "<mref> order"),
            ("JOIN 1 2 3", "unexpected \"3\" (argument 3); expected ID"),
            ("JOIN 1", "missing <mref> (argument 2)"),
            (
                "POST 1 2 \"unterminated",
                "unterminated string starting at byte 10",
            ),
            (
                "POST 1 2 \"bad \\q escape\"",
                "bad string starting at byte 10",
            ),
            ("POST 1 2 \"x\"y", "expected a space"),
            ("PING\u{0}", "control character 0x00 at byte 5"),
            (
                "USER SET 1 name A age 151 gender f email a@x",
                "age must be 0..150",
            ),
            (
                "USER SET 1 name A age 1 gender f email nope",
                "email must look like",
            ),
            ("USER SET 1 name A age 1 gender f", "missing email"),
            (
                "INSTANCE SET 1 1 from 2026-11-22T10:00:00Z to 2026-11-22T09:00:00Z",
                "to must be after from",
            ),
            (
                "INSTANCE SET 1 1 from tomorrow to 2026-11-22T09:00:00Z",
                "RFC 3339",
            ),
            ("MESSAGES 1 LIMIT 0", "LIMIT must be a positive integer"),
            ("MESSAGES 1 AFTER x", "AFTER must be an id"),
            ("WATCH 1 AFTER 1-x", "AFTER must be an id"),
            ("WATCH 1 LIMIT 5", "LIMIT"),
            ("REPORT 1 LIMIT 0", "LIMIT must be a positive integer"),
            ("REPORT 1 AFTER 1-0", "AFTER <user>"),
            ("REPORT 1 USER 3", "unexpected"),
            ("WATCH ACTIVE AFTER 1-0", "does not resume"),
            ("WATCH ACTIVE 1", "unexpected extra argument"),
            ("ACTIVE AFTER 0", "AFTER <meeting>"),
            ("ACTIVE 5", "unexpected"),
            ("ATTENDANCE AFTER 1/2", "the `next` of a page"),
            ("ATTENDANCE AFTER 1/2:3", "the `next` of a page"),
            ("ATTENDANCE AFTER 1/2:3@x", "the `next` of a page"),
            ("ATTENDANCE AFTER 1/2:3@0123", "the `next` of a page"),
            ("ATTENDANCE AFTER 1/0:3@5", "AFTER <order>"),
            ("PARTICIPANTS 1 AFTER 2@yesterday", "RFC 3339"),
            (
                "PARTICIPANTS 1 AFTER x@2026-11-22T10:00:00Z",
                "AFTER <user>",
            ),
            ("UNWATCH 1", "unexpected extra argument"),
            ("USER FROB 1", "expected SET or GET"),
            ("", "empty request"),
        ];
        for (line, needle) in cases {
            let err = bad(line);
            assert_eq!(err.code, Code::BadRequest, "{line:?}");
            assert!(
                err.message.contains(needle),
                "{line:?}: {:?} lacks {needle:?}",
                err.message
            );
        }
        let err = bad("FROB 1");
        assert_eq!(err.code, Code::UnknownCommand);
        let err = parse(b"PING \xff").expect_err("invalid UTF-8");
        assert_eq!(err.message, "the request is not valid UTF-8 (at byte 6)");
    }

    #[test]
    fn every_command_has_help_and_admin_flags_match_the_spec() {
        let admin: Vec<&str> = COMMANDS
            .iter()
            .filter(|c| c.admin)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            admin,
            [
                "USER SET",
                "MEETING SET",
                "AUDIENCE ADD",
                "AUDIENCE DEL",
                "INSTANCE SET",
                "END",
                "TICK"
            ]
        );
        assert!(Request::Tick.is_admin());
        assert!(!Request::Ping.is_admin());
    }

    #[test]
    fn replies_are_one_line() {
        let line = ok_line(br#""a\nb""#);
        assert_eq!(line, b"{\"ok\":true,\"result\":\"a\\nb\"}\n");
        let line = error_line(Code::NotFound, "no \"user\"\n");
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let back: Value = serde_json::from_slice(&line).expect("JSON");
        assert_eq!(back["error"]["code"], "not_found");
        let line = event_line(br#"{"id":"1-0","text":"x\ny"}"#);
        assert_eq!(line, b"{\"event\":{\"id\":\"1-0\",\"text\":\"x\\ny\"}}\n");
        let line = dropped_line(3, Some("1795341600000-2"));
        assert_eq!(line, b"{\"dropped\":3,\"resume\":\"1795341600000-2\"}\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn times_read_as_chrono_writes_them(ms in 0i64..253_402_300_800_000) {
            let chrono = chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            prop_assert_eq!(Some(format_time(ms)), chrono);
        }

        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn never_panics_on_command_like_lines(
            command in prop::sample::select(vec!["JOIN", "POST", "USER SET", "MESSAGES", "INSTANCE SET", "PARTICIPANTS", "AUDIENCE ADD", "EVENTS", "MEETINGS", "USERS"]),
            args in proptest::collection::vec("[ -~\\t]{0,12}", 0..8),
        ) {
            let line = format!("{command} {}", args.join(" "));
            let _ = parse(line.as_bytes());
        }

        #[test]
        fn quoting_round_trips(tokens in proptest::collection::vec(any::<String>(), 0..6)) {
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let line = request_line(&refs);
            prop_assert!(line.ends_with('\n'));
            let back = tokenize(line.trim_end_matches('\n').as_bytes()).expect("tokenizes");
            prop_assert_eq!(back, tokens);
        }

        #[test]
        fn bad_ids_are_bad_requests(id in "(-[0-9]{1,5}|0|[0-9]{17,25}|[a-z]{1,4}|[0-9]+x)") {
            let err = parse(format!("JOIN {id} 1").as_bytes()).expect_err("a bad id");
            prop_assert_eq!(err.code, Code::BadRequest);
            prop_assert!(err.message.contains("argument 1"), "{}", err.message);
        }

        #[test]
        fn broken_strings_are_bad_requests(text in "[a-z ]{0,10}", cut in 0usize..3) {
            let line = match cut {
                0 => format!("POST 1 1 \"{text}"),
                1 => format!("POST 1 1 \"{text}\\x\""),
                _ => format!("POST 1 1 \"{text}\"junk"),
            };
            let err = parse(line.as_bytes()).expect_err("a broken string");
            prop_assert_eq!(err.code, Code::BadRequest);
            prop_assert!(err.message.contains("byte"), "{}", err.message);
        }

        #[test]
        fn invalid_utf8_is_a_bad_request(prefix in "[A-Z ]{0,10}", bad in 0x80u8..0xc0) {
            let mut line = prefix.clone().into_bytes();
            line.push(bad);
            let err = parse(&line).expect_err("invalid UTF-8");
            prop_assert_eq!(err.code, Code::BadRequest);
            prop_assert_eq!(err.message, format!("the request is not valid UTF-8 (at byte {})", prefix.len() + 1));
        }
    }

    #[test]
    fn pages_of_what_runs_and_positions_parse() {
        assert_eq!(
            parse(b"active after 7 limit 3"),
            Ok(Request::Active {
                after: Some(7),
                limit: Some(3)
            })
        );
        assert_eq!(
            parse(b"ACTIVE"),
            Ok(Request::Active {
                after: None,
                limit: None
            })
        );
        let cursor = AttendanceCursor {
            meeting: 1,
            within: Some((2, 3, 1795341780000)),
        };
        assert_eq!(cursor.to_string(), "1/2:3@1795341780000");
        assert_eq!(
            parse(format!("ATTENDANCE AFTER {cursor} LIMIT 10").as_bytes()),
            Ok(Request::Attendance {
                after: Some(cursor),
                limit: Some(10)
            })
        );
        let whole = AttendanceCursor {
            meeting: 9,
            within: None,
        };
        assert_eq!(
            parse(format!("ATTENDANCE AFTER {whole}").as_bytes()),
            Ok(Request::Attendance {
                after: Some(whole),
                limit: None
            })
        );
        let Ok(Request::Participants { after, .. }) =
            parse(b"PARTICIPANTS 1/2 AFTER 3@2026-11-22T10:03:00.000Z")
        else {
            panic!("participants")
        };
        assert_eq!(
            after,
            Some(Position {
                user: 3,
                at: Some(1795341780000)
            })
        );
        let Ok(Request::Participants { after, .. }) = parse(b"PARTICIPANTS 1 AFTER 3") else {
            panic!("participants")
        };
        assert_eq!(after, Some(Position { user: 3, at: None }));
        assert_eq!(parse(b"watch active"), Ok(Request::WatchActive));
        assert_eq!(Request::WatchActive.name(), "WATCH");
    }
}
